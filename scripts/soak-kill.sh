#!/usr/bin/env bash
# kill -9 soak: the CI test `kill_9_under_load_loses_nothing_that_got_250`
# with more cycles. Usage: scripts/soak-kill.sh [CYCLES] (default 50). Prints one line per
# cycle and the figures: messages that got 250, lost (must be 0), duplicates and their bound.
# MTA_TEST_SEED=N repeats a run.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-50}"
cargo build -q --bin mta
MTA_KILL_CYCLES="$cycles" cargo test -q -p mta-tests --test it \
  durability_kill::kill_9_under_load_loses_nothing_that_got_250 -- --exact --nocapture 2>&1 |
  awk -v keep='^(kill -9|cycle [0-9]+:|test result)' '$0 ~ keep { print } /panicked at/ { n = 6 } n > 0 { print; n-- }'
