#!/usr/bin/env bash
# Acceptance throughput: how many messages per second `mta` takes in durably on its smtp
# listener, driven by Postfix's smtp-source (an independent load generator; installed from
# Debian's postfix package if missing). Builds release, starts `mta serve` in a temp dir with
# a local user, and prints one line per run.
#
#   scripts/bench-accept.sh [MESSAGES] [SIZE_BYTES]      (defaults 2000 and 5120)
#
# Each row: sessions, messages, seconds, msgs_per_s. Every message is delivered to a Maildir
# while the load runs, as in production.
set -euo pipefail
cd "$(dirname "$0")/.."
msgs=${1:-2000}
size=${2:-5120}

if ! command -v smtp-source >/dev/null 2>&1 && [ ! -x /usr/sbin/smtp-source ]; then
  echo "bench: installing postfix (for smtp-source)" >&2
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
src=$(command -v smtp-source || echo /usr/sbin/smtp-source)

cargo build --release --bin mta >&2
mta=$PWD/target/release/mta
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
cat > "$dir/mta.toml" <<TOML
hostname = "bench.test"
data_dir = "$dir/data"
local_domains = ["local.test"]
# The bench runs as whoever starts it, root included.
allow_root = true
[listen]
smtp = ["127.0.0.1:0"]
submission = []
submissions = []
[limits]
max_sessions = 2000
max_sessions_per_ip = 1000
TOML
echo 'bench-password-1' | "$mta" user add u@local.test --password-stdin --config "$dir/mta.toml" >/dev/null
RUST_LOG=warn "$mta" serve --config "$dir/mta.toml" > "$dir/out" 2> "$dir/err" &
pid=$!
for _ in $(seq 100); do grep -q '^mta ready' "$dir/out" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o 'smtp=[^ ]*' "$dir/out" | head -1 | cut -d= -f2)
[ -n "$addr" ] || { cat "$dir/err" >&2; exit 1; }

run() { # sessions
  local sessions=$1 t0 t1 pids=() rc=0
  t0=$(date +%s.%N)
  for i in $(seq 0 $((sessions - 1))); do
    n=$((msgs / sessions + (i < msgs % sessions ? 1 : 0)))
    "$src" -s 1 -m "$n" -l "$size" -f sender@remote.test -t u@local.test -M bench-client.test "$addr" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  t1=$(date +%s.%N)
  [ "$rc" = 0 ] || { echo "smtp-source failed (rc=$rc)" >&2; exit 1; }
  awk -v s="$sessions" -v n="$msgs" -v a="$t0" -v b="$t1" -v z="$size" \
    'BEGIN{printf "sessions=%d messages=%d size=%d secs=%.2f msgs_per_s=%.0f\n", s, n, z, b-a, n/(b-a)}'
}
run 20
run 1
echo "maildir files: $(find "$dir/data/mail" -type f -path '*/new/*' | wc -l) (deliveries may still be running)"
