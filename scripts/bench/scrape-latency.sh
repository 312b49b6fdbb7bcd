#!/usr/bin/env bash
# What a /metrics scrape costs the SMTP listener: starts `mta serve` on loopback with a
# smarthost that refuses connections (so every message stays queued), queues N messages
# through submission (STARTTLS + AUTH), then measures the SMTP greeting latency while 8
# clients scrape /metrics without pause (scripts/bench/scrape_latency.py). Prints figures;
# asserts nothing but that the server started and the messages were queued.
#
#   scripts/bench/scrape-latency.sh [N] [MTA_BINARY]    defaults: 20000, target/debug/mta
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-20000}
mta=${2:-target/debug/mta}
[ -x "$mta" ] || cargo build --bin mta >&2
work=$(mktemp -d /tmp/mta-scrape.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# A port nobody listens on: the smarthost refuses, the queue keeps everything.
closed=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
metrics=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/mta.toml" <<TOML
hostname = "bench.test"
data_dir = "$work/data"
local_domains = ["example.test"]
allow_root = true

[listen]
smtp = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = []

[metrics]
listen = "127.0.0.1:$metrics"

[queue]
retry_first = "1h"

[outbound]
relay = "127.0.0.1:$closed"
mta_sts = false
tls_reports = false

[inbound]
checks = false
TOML
printf 'alice-password-1\n' | "$mta" user add alice@example.test --password-stdin --config "$work/mta.toml" >/dev/null
RUST_LOG=warn "$mta" serve --config "$work/mta.toml" >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 200); do grep -q '^mta ready' "$work/out" 2>/dev/null && break; sleep 0.1; done
grep -q '^mta ready' "$work/out" || { cat "$work/err" >&2; echo "scrape-latency: mta did not start" >&2; exit 1; }
smtp=$(grep -o 'smtp=[^ ]*' "$work/out" | head -n1 | cut -d: -f2)
sub=$(grep -o 'submission=[^ ]*' "$work/out" | head -n1 | cut -d: -f2)
python3 scripts/bench/scrape_latency.py fill "$sub" "$n"
queued=$("$mta" queue list --config "$work/mta.toml" 2>/dev/null | grep -c '^[0-9a-f]\{20\}' || true)
echo "scrape-latency: $queued messages queued (asked for $n)"
[ "$queued" -ge $((n / 8 * 8)) ] || { echo "scrape-latency: the queue holds fewer messages than were sent" >&2; exit 1; }
python3 scripts/bench/scrape_latency.py measure "$smtp" "$metrics"
