#!/usr/bin/env bash
# What DANE costs on the relay path (tests/examples/bench_dane.rs): one mta relays to another
# over TLS, with DANE validated by mta itself, with DANE trusting a validating resolver on
# loopback, and without DANE; prints the first delivery's latency (cold DNSSEC caches) and
# msg/s for N more messages, per round.
#
#   scripts/bench-dane.sh [N] [ROUNDS]     defaults: 500 messages, 3 rounds (about a minute)
#
# Needs what scripts/test.sh installs (nsd, ldnsutils, dnsmasq-base, openssl).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin mta >&2
cargo build --release -p mta-tests --example bench_dane >&2
MTA_BIN="$PWD/target/release/mta" exec target/release/examples/bench_dane "$@"
