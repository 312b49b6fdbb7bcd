#!/usr/bin/env bash
# Crash-during-relay soak: the CI test
# `kill_9_while_relaying_loses_nothing_and_marks_nothing_falsely` with more kills.
# Usage: scripts/soak-relay-kill.sh [KILLS] (default 50). Prints one line per kill and the
# figures: messages, lost at the receiver (must be 0), duplicates. MTA_TEST_SEED=N repeats.
set -euo pipefail
cd "$(dirname "$0")/.."
kills="${1:-50}"
cargo build -q --bin mta
MTA_RELAY_KILLS="$kills" cargo test -q -p mta-tests --test it \
  durability_relay::kill_9_while_relaying_loses_nothing_and_marks_nothing_falsely \
  -- --exact --nocapture 2>&1 |
  awk -v keep='^(crash during relay|round [0-9]+:|test result)' '$0 ~ keep { print } /panicked at/ { n = 6 } n > 0 { print; n-- }'
