#!/usr/bin/env bash
# Fuzzes every input surface for a while (the targets are in fuzz/src/lib.rs).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#
# Every target runs under libFuzzer, coverage-guided, from the crate in fuzz/libfuzzer/ (its
# own workspace, built with `cargo +nightly fuzz`; cargo-fuzz is installed if missing). The
# line, data and client_reply targets compare the real readers with reference models
# (fuzz/src/model.rs). Targets with structured input get a dictionary of their syntax from
# fuzz/libfuzzer/dict/ (SMTP verbs and parameters for command, session and auth). Without a
# nightly toolchain every target runs in the seeded mutation loop of fuzz/src/main.rs on
# stable, with a warning.
#
# Each libFuzzer target starts from the committed corpus fuzz/corpus/<target>/ and keeps what
# it finds in fuzz/libfuzzer/corpus/<target>/ (not committed; minimise with
# `cargo +nightly fuzz cmin --fuzz-dir fuzz/libfuzzer <target>` before copying any into
# fuzz/corpus/). A crash is saved as fuzz/corpus/<target>/crash-* (so that
# `cargo test -p mta-fuzz` replays it in CI) and makes the script fail. The last libFuzzer
# statistics of each target (executions, cov, ft, corpus) are printed at the end.
#
# FUZZ_ENGINE=stable runs every target in the stable loop (no nightly build, no cargo-fuzz);
# FUZZ_PROFILE=debug builds that loop without optimisation. The CI short form
# (scripts/short-runs.sh) uses both, a few seconds per target: it proves that every target
# and its harness still run, not that a long search finds nothing.
#
# Runs at the lowest CPU priority: it shares the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
libfuzzer_targets=(line data bdat client_reply conn command address auth record session mta_sts_policy headers milter_reply dmarc_report)
[ "${#targets[@]}" -gt 0 ] || targets=("${libfuzzer_targets[@]}")

# Longest input per libFuzzer target: past every line limit (12288 for AUTH) for the readers;
# a dialogue of many lines for session; several fields for headers and record.
max_len() {
  case "$1" in
    line | data | bdat | conn) echo 20000 ;;
    client_reply | session | headers | record) echo 4096 ;;
    *) echo 2048 ;;
  esac
}

# The dictionary of a target's syntax, if it has one (libFuzzer's -dict=).
dict() {
  case "$1" in
    command | session | auth) echo "-dict=$PWD/fuzz/libfuzzer/dict/smtp.dict" ;;
    address | headers | record | mta_sts_policy | dmarc_report) echo "-dict=$PWD/fuzz/libfuzzer/dict/$1.dict" ;;
  esac
}

nightly=false
engine=${FUZZ_ENGINE:-auto}
profile=${FUZZ_PROFILE:-release}
case "$engine" in auto | stable) ;; *) echo "fuzz.sh: FUZZ_ENGINE is auto or stable, not $engine" >&2; exit 2 ;; esac
case "$profile" in release | debug) ;; *) echo "fuzz.sh: FUZZ_PROFILE is release or debug, not $profile" >&2; exit 2 ;; esac
if [ "$engine" = stable ]; then
  :
elif cargo +nightly --version >/dev/null 2>&1; then
  nightly=true
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    nice -n 19 cargo install --locked cargo-fuzz >&2
  fi
else
  echo "fuzz.sh: WARNING: no nightly toolchain; every target runs in the stable mutation loop" >&2
fi

is_libfuzzer() {
  local t
  for t in "${libfuzzer_targets[@]}"; do [ "$t" = "$1" ] && return 0; done
  return 1
}

fuzz_flags=(--fuzz-dir fuzz/libfuzzer --sanitizer none --debug-assertions)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
built_stable=false
for t in "${targets[@]}"; do
  if $nightly && is_libfuzzer "$t"; then
    mkdir -p "fuzz/libfuzzer/corpus/$t"
    dict_args=()
    [ -z "$(dict "$t")" ] || dict_args=("$(dict "$t")")
    echo "fuzz.sh: $t: libFuzzer for ${secs} s" >&2
    if ! nice -n 19 cargo +nightly fuzz run "${fuzz_flags[@]}" "$t" \
      "$PWD/fuzz/libfuzzer/corpus/$t" "$PWD/fuzz/corpus/$t" -- \
      -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 \
      -print_final_stats=1 -artifact_prefix="$PWD/fuzz/corpus/$t/" "${dict_args[@]}" 2>"$logs/$t"; then
      tail -n 40 "$logs/$t" >&2
      echo "fuzz.sh: $t: CRASH (saved under fuzz/corpus/$t/)" >&2
      status=1
      continue
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$logs/$t" | tail -n 1)
    corpus=$(find "fuzz/libfuzzer/corpus/$t" -type f | wc -l)
    echo "$t: libFuzzer ${secs} s, ${runs:-?} executions, no crash; last: ${last}; corpus ${corpus} files"
  else
    if ! $built_stable; then
      if [ "$profile" = release ]; then
        nice -n 19 cargo build --release -p mta-fuzz >&2
      else
        nice -n 19 cargo build -p mta-fuzz >&2
      fi
      built_stable=true
    fi
    nice -n 19 "target/$profile/mta-fuzz" "$t" "$secs" || status=1
  fi
done
exit "$status"
