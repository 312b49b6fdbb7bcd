#!/usr/bin/env bash
# Relay throughput: messages per second from the first submission to an empty queue, with
# every message relayed through MX lookup (dnsmasq) to Postfix's smtp-sink on 127.0.0.2.
# Load comes from Postfix's smtp-source on the smtp listener, addressed to an alias that
# points at the remote domain (port 25 relays nothing else). Installs postfix and
# dnsmasq-base from Debian packages when missing; builds release.
#
#   scripts/bench-relay.sh [MESSAGES] [SESSIONS] [SIZE_BYTES]     (defaults 2000, 20, 5120)
set -euo pipefail
cd "$(dirname "$0")/.."
msgs=${1:-2000}
sessions=${2:-20}
size=${3:-5120}

need=()
command -v smtp-source >/dev/null 2>&1 || [ -x /usr/sbin/smtp-source ] || need+=(postfix)
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
if [ "${#need[@]}" -gt 0 ]; then
  echo "bench: installing ${need[*]}" >&2
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
src=$(command -v smtp-source || echo /usr/sbin/smtp-source)
sink=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)

free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"; }

cargo build --release --bin mta >&2
mta=$PWD/target/release/mta
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

dns_port=$(free_port 127.0.0.1)
sink_port=$(free_port 127.0.0.2)
/usr/sbin/dnsmasq --no-daemon --conf-file=/dev/null --pid-file= --port="$dns_port" \
  --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts --local=/test/ \
  --mx-host=relay.test,mx.relay.test,10 --host-record=mx.relay.test,127.0.0.2 2>/dev/null &
pids+=($!)
"$sink" -u "$(id -un)" 127.0.0.2:"$sink_port" 1000 &
pids+=($!)
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
[dns]
nameservers = ["127.0.0.1:$dns_port"]
[outbound]
port = $sink_port
[outbound.tls."relay.test"]
mode = "none"
[aliases]
"fwd@local.test" = ["u@relay.test"]
TOML
RUST_LOG=warn "$mta" serve --config "$dir/mta.toml" > "$dir/out" 2> "$dir/err" &
pids+=($!)
for _ in $(seq 100); do grep -q '^mta ready' "$dir/out" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o 'smtp=[^ ]*' "$dir/out" | head -1 | cut -d= -f2)
[ -n "$addr" ] || { cat "$dir/err" >&2; exit 1; }

queued() { "$mta" queue list --json --config "$dir/mta.toml" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["records"]))'; }

t0=$(date +%s.%N)
load=()
for i in $(seq 0 $((sessions - 1))); do
  n=$((msgs / sessions + (i < msgs % sessions ? 1 : 0)))
  "$src" -s 1 -m "$n" -l "$size" -f sender@remote.test -t fwd@local.test -M bench-client.test "$addr" & load+=($!)
done
for p in "${load[@]}"; do wait "$p"; done
t1=$(date +%s.%N)
for _ in $(seq 600); do [ "$(queued)" = 0 ] && break; sleep 0.2; done
t2=$(date +%s.%N)
left=$(queued)
awk -v n="$msgs" -v s="$sessions" -v z="$size" -v a="$t0" -v b="$t1" -v c="$t2" -v l="$left" 'BEGIN{
  printf "accepted: %d messages in %.2f s (%.0f msgs/s)\n", n, b-a, n/(b-a);
  printf "relayed:  %d messages, first submission to empty queue %.2f s (%.0f msgs/s), %d still queued\n", n, c-a, n/(c-a), l }'
