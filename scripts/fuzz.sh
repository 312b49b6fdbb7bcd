#!/usr/bin/env bash
# Fuzzes every input surface for a while: the SMTP command parser, the DATA reader under
# random chunking, addresses, AUTH responses, whole sessions, queue records, and the
# outbound client's reply parser (fuzz/src/lib.rs). A crash is saved under
# fuzz/corpus/<target>/crash-* (CI then replays it through `cargo test -p mta-fuzz`) and
# makes the script fail.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(command data address auth record session client_reply conn mta_sts_policy headers)
cargo build --release -p mta-fuzz >&2
status=0
for t in "${targets[@]}"; do
  target/release/mta-fuzz "$t" "$secs" || status=1
done
exit "$status"
