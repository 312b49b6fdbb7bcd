#!/usr/bin/env bash
# Every script that produces a figure in docs/, in its short form: the same checks as the
# long runs (nothing that got 250 lost, every message delivered, no crash, every benchmark
# row has a number), fewer messages and cycles. scripts/test.sh runs this after the tests,
# so the soak and benchmark scripts cannot rot while the docs quote them. Each control run
# must see the loss it provokes: a harness that stopped testing fails here.
#
#   scripts/short-runs.sh [NAME...]    default: all of them (about 4 minutes on 2 cores)
#
# Prints one line per run, `short run NAME: ok` or `short run NAME: FAILED (exit N)`, with the
# run's own output above it (saved in target/short-runs/NAME.log). Exit 1 when any failed.
# Needs root (FUSE, tmpfs mounts, Postfix) and what scripts/test.sh installs.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=(powerloss powerloss-control diskfull diskfull-control soak-kill soak-relay-kill
  bench-dane bench-smoke memory stalled-mx bigqueue auth-memory scrape-latency fuzz)
[ "$#" -gt 0 ] && runs=("$@")

run_one() {
  case "$1" in
    powerloss) CYCLES=2 scripts/powerloss.sh ;;
    powerloss-control) CYCLES=2 CONTROL=1 scripts/powerloss.sh ;;
    diskfull) scripts/diskfull.sh 1 ;;
    diskfull-control) CONTROL=1 scripts/diskfull.sh 1 ;;
    soak-kill) scripts/soak-kill.sh 2 ;;
    soak-relay-kill) scripts/soak-relay-kill.sh 2 ;;
    bench-dane) BENCH_PROFILE=debug scripts/bench-dane.sh 5 1 ;;
    bench-smoke) scripts/bench.sh --smoke ;;
    memory) cargo build -q --bin mta && python3 scripts/bench/memory.py --mta target/debug/mta --sessions 3 --size 2 ;;
    stalled-mx) cargo build -q --bin mta && python3 scripts/bench/stalled_mx.py --mta target/debug/mta --domains 2 --size 2 --dkim ;;
    bigqueue) cargo build -q --bin mta && python3 scripts/bench/bigqueue.py --mta target/debug/mta -n 300 --window 5 ;;
    auth-memory) cargo build -q --bin mta && python3 scripts/auth_memory.py target/debug/mta 6 ;;
    scrape-latency) cargo build -q --bin mta && scripts/bench/scrape-latency.sh 200 ;;
    fuzz) FUZZ_ENGINE=stable FUZZ_PROFILE=debug scripts/fuzz.sh 3 ;;
    *) echo "short-runs: no run named $1 (known: ${runs[*]})"; return 2 ;;
  esac
}

mkdir -p target/short-runs
failed=0
for r in "${runs[@]}"; do
  started=$SECONDS
  run_one "$r" >"target/short-runs/$r.log" 2>&1
  rc=$?
  tail -n 6 "target/short-runs/$r.log" | sed "s/^/  $r | /"
  if [ "$rc" = 0 ]; then
    echo "short run $r: ok ($((SECONDS - started)) s)"
  else
    echo "short run $r: FAILED (exit $rc, $((SECONDS - started)) s; whole log in target/short-runs/$r.log)"
    failed=$((failed + 1))
  fi
done
[ "$failed" = 0 ]
