#!/usr/bin/env bash
# What DANE costs on the relay path (tests/examples/bench_dane.rs): one mta relays to another
# over TLS, with DANE validated by mta itself, with DANE trusting a validating resolver on
# loopback, and without DANE; prints the first delivery's latency (cold DNSSEC caches) and
# msg/s for N more messages, per round.
#
#   scripts/bench-dane.sh [N] [ROUNDS]     defaults: 500 messages, 3 rounds (about a minute)
#   BENCH_PROFILE=debug scripts/bench-dane.sh 5 1   the short form CI runs (debug build: it
#                                          checks that every setup delivers, not the speed)
#
# Needs what scripts/test.sh installs (nsd, ldnsutils, dnsmasq-base, openssl).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-release}
case "$profile" in
  release) flag=(--release) dir=release ;;
  debug) flag=() dir=debug ;;
  *) echo "bench-dane: BENCH_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
cargo build "${flag[@]}" --bin mta >&2
cargo build "${flag[@]}" -p mta-tests --example bench_dane >&2
MTA_BIN="$PWD/target/$dir/mta" exec "target/$dir/examples/bench_dane" "$@"
