#!/usr/bin/env bash
# The benchmark: `mta` side by side with a private Postfix and with smtp-sink (Postfix's
# test server, which stores nothing: the ceiling), in one run, interleaved (mta, postfix,
# sink, mta, postfix, sink, ...), and a table of medians and ratios at the end.
#
#   scripts/bench.sh            full run (about 5-6 minutes on 2 cores, busy or not, and
#                               about 6 more for the backlog row's 100,000 messages)
#   scripts/bench.sh --quick    fewer messages, one round (about 2 minutes; backlog: 30 s)
#   scripts/bench.sh --smoke    a handful of messages per row, debug build, one round: checks
#                               that every server starts, every message is delivered and every
#                               row produces a number (CI runs it; its figures mean nothing)
#
# Load comes from Postfix's smtp-source (one message per connection, MTA-to-MTA style);
# dot-to-250 latency from scripts/bench/probe.py, which sends its own messages on one more
# connection while the load runs (one every BENCH_PROBE_INTERVAL seconds). Tests:
#   accept   20 sessions and 1 session of 5 KiB messages, 20 sessions of 100 KiB, to a local
#            Maildir recipient (u@local.test); msg/s and the probe's p50/p99. The 20 sessions
#            of 5 KiB twice: one `smtp-source -s 20` (accept-s20) and 20 `smtp-source -s 1`
#            processes (accept-p20: one stalled connection does not hold up the other 19).
#   relay    20 sessions to a remote domain (one smtp-source -s 20, and 20 smtp-source -s 1
#            processes: relay-p20); msg/s from the first submission to the last
#            message counted by an smtp-sink on 127.0.0.2 (mta finds it by MX through a
#            dnsmasq on loopback, Postfix through a transport map).
#   idle     RSS of a fresh mta with 0 and BENCH_IDLE sessions held open after EHLO (from 50
#            loopback source addresses); PSS per smtpd process for Postfix.
#   fsync    fsync+fdatasync per accepted message at 20 sessions (strace -f), mta and Postfix.
#   idle10k  BENCH_IDLE_MANY (10,000) sessions held open after EHLO on a fresh mta, from
#            one loopback address per 20 sessions (each in its own /24, spread over 200
#            /16s): RSS growth per session, and one more client's message sent meanwhile (its
#            reply and the time from connect to the 250). mta only.
#   big      peak RSS (VmHWM) of a fresh mta before and after one 25 MiB message.
#   big50    BENCH_BIG_SESSIONS (50) concurrent 25 MiB messages on a fresh mta
#            (scripts/bench/memory.py): peak RSS growth against limits.message_memory, the
#            replies (250 / 452 4.3.1), and every accepted message delivered. mta only.
#   tls25    STARTTLS on port 25: 20 sessions, one 5 KiB message each (EHLO, STARTTLS, EHLO,
#            MAIL, RCPT, DATA, QUIT), mta and Postfix, from mta-load (bench/): msg/s, TLS
#            handshakes/s, dot-to-250 p50/p99, server and client CPU per message.
#   submission  20 sessions of 10 messages each with STARTTLS + AUTH PLAIN (port 587 style),
#            and the same with TLS from the first byte (port 465 style), mta, Postfix (its
#            SASL through a private Dovecot's auth socket) and chasquid (its own users; unpacked
#            from its Debian package with OpenSMTPD's mail.maildir as its delivery agent).
#   backlog  BENCH_BACKLOG messages (100,000; --quick 5,000) queued for backlog.test while
#            its MX (127.0.0.2, the relay sink's port) refuses connections; then smtp-sink
#            listens there and the operator says "try now" (`mta queue flush`, `postqueue
#            -f`): msg/s from that moment to the N-th message at the sink. 4 connections at
#            once to the destination for both (mta's outbound.max_per_domain and per-address
#            cap, Postfix's backlog_destination_concurrency_limit).
# Knobs (environment): BENCH_ROUNDS, BENCH_MSGS (20 sessions, 5 KiB), BENCH_MSGS_1 (1
# session), BENCH_MSGS_BIG (100 KiB), BENCH_RELAY_MSGS, BENCH_FSYNC_MSGS, BENCH_IDLE,
# BENCH_PF_IDLE, BENCH_PROBE_INTERVAL, BENCH_TLS_MSGS (tls25), BENCH_SUB_MSGS and
# BENCH_SUB_PER_SESSION (submission), BENCH_IDLE_MANY (idle10k), BENCH_BIG_SESSIONS (big50),
# BENCH_BACKLOG (backlog), BENCH_TESTS (default "accept relay idle idle10k fsync big big50
# tls25 submission backlog"),
# BENCH_KEEP=1 keeps the work directory. Raw results: target/bench/results-TIME.tsv.
#
# Needs root (Postfix's daemons and smtp-sink drop privileges). Installs postfix (for
# smtp-source, smtp-sink and the Postfix under test; a system Postfix is left alone: the
# private one has its own config, queue and data directories and ports), dnsmasq-base,
# strace, openssl and dovecot-core (Postfix's SASL; only its auth service runs, privately)
# with apt-get when missing; for the submission rows, fetches the chasquid and opensmtpd
# packages with apt-get download into target/bench/debs and unpacks them there (not
# installed). Every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
quick=0
smoke=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --smoke) smoke=1 ;;
    -h|--help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
d_idle=1000 d_pf_idle=100
d_idle_many=10000 d_big_sessions=50
d_sub_per=10
d_backlog=100000
[ "$quick" = 1 ] && d_backlog=5000
[ "$smoke" = 1 ] && d_backlog=200
if [ "$smoke" = 1 ]; then d_rounds=1 d_msgs=40 d_msgs1=10 d_big=10 d_fsync=20 d_idle=20 d_pf_idle=5
  d_idle_many=200 d_big_sessions=4
  d_tls=40 d_sub=40 d_sub_per=2
elif [ "$quick" = 1 ]; then d_rounds=1 d_msgs=3000 d_msgs1=1000 d_big=600 d_fsync=1000 d_tls=1000 d_sub=1000
else d_rounds=3 d_msgs=5000 d_msgs1=2000 d_big=2000 d_fsync=3000 d_tls=3000 d_sub=3000; fi
ROUNDS=${BENCH_ROUNDS:-$d_rounds}
MSGS=${BENCH_MSGS:-$d_msgs}
MSGS_1=${BENCH_MSGS_1:-$d_msgs1}
MSGS_BIG=${BENCH_MSGS_BIG:-$d_big}
RELAY_MSGS=${BENCH_RELAY_MSGS:-$MSGS}
FSYNC_MSGS=${BENCH_FSYNC_MSGS:-$d_fsync}
IDLE=${BENCH_IDLE:-$d_idle}
PF_IDLE=${BENCH_PF_IDLE:-$d_pf_idle}
IDLE_MANY=${BENCH_IDLE_MANY:-$d_idle_many}
BIG_SESSIONS=${BENCH_BIG_SESSIONS:-$d_big_sessions}
PROBE_INTERVAL=${BENCH_PROBE_INTERVAL:-0.01}
TLS_MSGS=${BENCH_TLS_MSGS:-$d_tls}
SUB_MSGS=${BENCH_SUB_MSGS:-$d_sub}
SUB_PER=${BENCH_SUB_PER_SESSION:-$d_sub_per}
BACKLOG=${BENCH_BACKLOG:-$d_backlog}
TESTS=" ${BENCH_TESTS:-accept relay idle idle10k fsync big big50 tls25 submission backlog} "

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "bench: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (Postfix and smtp-sink need it)"

need=()
command -v smtp-source >/dev/null 2>&1 || [ -x /usr/sbin/smtp-source ] || need+=(postfix)
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-core)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
src=$(command -v smtp-source || echo /usr/sbin/smtp-source)
sink=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
probe=$repo/scripts/bench/probe.py

if [ "$smoke" = 1 ]; then
  log "building (debug: the smoke run checks that everything works, not how fast)"
  cargo build --bin mta --bin mta-load >&2
  mta=$repo/target/debug/mta
  mta_load=$repo/target/debug/mta-load
else
  log "building release"
  cargo build --release --bin mta --bin mta-load >&2
  mta=$repo/target/release/mta
  mta_load=$repo/target/release/mta-load
fi

# On the real disk, not a tmpfs /tmp: fsync must cost what it costs.
dir=$(mktemp -d /var/tmp/mta-bench.XXXXXX)
chmod 755 "$dir"   # Postfix's daemons run as postfix and mail
mkdir -p "$repo/target/bench"
out=$repo/target/bench/results-$(date +%Y%m%d-%H%M%S).tsv
printf 'test\tserver\tround\tvalue\tunit\tload1\textra\n' >"$out"
pids=()
pf_started=0
dv_started=0
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$dv_started" = 1 ]; then
    dovecot -c "$dir/postfix/dovecot/dovecot.conf" stop >/dev/null 2>&1 || true
  fi
  if [ "$pf_started" = 1 ]; then
    postfix -c "$dir/postfix/etc" stop >/dev/null 2>&1 || postfix -c "$dir/postfix/etc" abort >/dev/null 2>&1 || true
    local i
    for i in $(seq 1 40); do [ -s "$dir/postfix/queue/pid/master.pid" ] || break
      kill -0 "$(tr -dc 0-9 <"$dir/postfix/queue/pid/master.pid")" 2>/dev/null || break; sleep 0.25; done
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$out"; }
count_new() { find "$1" -path '*/new/*' -type f 2>/dev/null | wc -l; }
# Moves each Maildir's new/ aside (a fresh new/ takes its place) instead of deleting the
# messages: on ext4 without a journal, creating a file skips the inodes freed in the last
# few seconds, one inode-table lookup each, so deleting thousands of messages between runs
# would slow the next run's file creations (seen in perf as recently_deleted/find_inode_bit).
set_aside() { # set_aside MAILDIR_ROOT
  local n keep
  while read -r n; do
    keep=$n.$(date +%s%N)
    mv "$n" "$keep"; mkdir "$n"
    chown --reference="$keep" "$n"; chmod --reference="$keep" "$n"
  done < <(find "$1" -type d -name new)
}
wait_port() { # wait_port IP PORT: bounded wait until something listens
  local i
  for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

# --- the test certificate: a CA made for this run and a certificate for bench.test signed
# by it, served by mta and Postfix; mta-load verifies it against that CA (--ca).
tls=$dir/tls
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj /CN=bench-ca \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench.test \
  -keyout "$tls/key.pem" -out "$tls/req.pem" >/dev/null 2>&1
printf 'subjectAltName=DNS:bench.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$tls/ext"
openssl x509 -req -in "$tls/req.pem" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
  -days 7 -extfile "$tls/ext" -out "$tls/cert.pem" >/dev/null 2>&1 || die "could not make the test certificate"
chmod 644 "$tls"/*.pem
TLS_CA=$tls/ca.pem

# --- loopback DNS: MX relay.test and backlog.test -> 127.0.0.2 (for mta; Postfix uses a
# transport map)
SINK_IP=127.0.0.2
dns_port=$(free_port 127.0.0.1)
relay_port=$(free_port $SINK_IP)
/usr/sbin/dnsmasq --no-daemon --conf-file=/dev/null --pid-file= --port="$dns_port" \
  --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts --local=/test/ \
  --mx-host=relay.test,mx.relay.test,10 --mx-host=backlog.test,mx.relay.test,10 \
  --host-record=mx.relay.test,$SINK_IP 2>/dev/null &
pids+=($!)

# --- mta: one instance for throughput; fresh ones for the memory tests
start_mta() { # start_mta NAME: sets mta_pid and mta_addr
  local d=$dir/$1
  mkdir -p "$d"
  sed -e "s|@DATA@|$d/data|" -e "s|@DNS_PORT@|$dns_port|" -e "s|@RELAY_PORT@|$relay_port|" \
    -e "s|@MAX_SESSIONS@|${max_sessions:-2000}|" \
    -e "s|@TLS_CERT@|$tls/cert.pem|" -e "s|@TLS_KEY@|$tls/key.pem|" \
    "$repo/scripts/bench/mta.toml.in" >"$d/mta.toml"
  echo 'bench-password-1' | "$mta" user add u@local.test --password-stdin --config "$d/mta.toml" >/dev/null
  RUST_LOG=warn "$mta" serve --config "$d/mta.toml" >"$d/out" 2>"$d/err" &
  mta_pid=$!
  pids+=("$mta_pid")
  local i
  for i in $(seq 1 100); do grep -q '^mta ready' "$d/out" 2>/dev/null && break; sleep 0.1; done
  mta_addr=$(grep -o ' smtp=[^ ]*' "$d/out" | head -n1 | cut -d= -f2 || true)
  mta_sub=$(grep -o ' submission=[^ ]*' "$d/out" | head -n1 | cut -d= -f2 || true)
  mta_subs=$(grep -o ' submissions=[^ ]*' "$d/out" | head -n1 | cut -d= -f2 || true)
  [ -n "$mta_addr" ] || { cat "$d/err" >&2; die "mta $1 did not start"; }
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# Descriptors: mta raises its own soft limit to the hard one, probe.py too; the hard limit
# must leave room for the idle10k row's sessions (one descriptor each, on both sides).
hard_nofile=$(ulimit -H -n)
if [ "$hard_nofile" != unlimited ] && [ "$hard_nofile" -lt $((IDLE_MANY + 4096)) ]; then
  # Root may raise it, unless a container keeps CAP_SYS_RESOURCE from it.
  ulimit -H -n $((IDLE_MANY + 4096)) 2>/dev/null ||
    log "WARN: hard limit on open files $hard_nofile: too low for $IDLE_MANY idle sessions (idle10k)"
fi
[ "$(ulimit -H -n)" = unlimited ] || [ "$(ulimit -H -n)" -ge 8192 ] && ulimit -S -n 8192
start_mta mta
MTA_PID=$mta_pid MTA_ADDR=$mta_addr MTA_SUB=$mta_sub MTA_SUBS=$mta_subs
MTA_MAILDIR=$dir/mta/data/mail
log "mta on $MTA_ADDR (pid $MTA_PID)"

# --- private Postfix
pf=$dir/postfix
PF_PORT=$(free_port 127.0.0.1)
PF_SUB_PORT=$(free_port 127.0.0.1)
PF_SUBS_PORT=$(free_port 127.0.0.1)
mkdir -p "$pf/etc" "$pf/queue" "$pf/data" "$pf/mail/Maildir/"{cur,new,tmp}
chown -R mail:mail "$pf/mail"; chown postfix "$pf/data"
# Postfix's SASL: a private Dovecot with only its auth service and mta's user, with the very
# hash of mta's users file (Dovecot's ARGON2ID verifies a PHC string with the parameters it
# names: the same work per login for both).
dv=$pf/dovecot
mkdir -p "$dv/run" "$dv/state"
sed -e "s|@DIR@|$pf|g" "$repo/scripts/bench/postfix/dovecot.conf.in" >"$dv/dovecot.conf"
awk '$1 == "u@local.test" {print $1 ":{ARGON2ID}" $2}' "$dir/mta/data/users" >"$dv/passwd"
[ -s "$dv/passwd" ] || die "no hash for u@local.test in $dir/mta/data/users"
chmod 644 "$dv/passwd"
dv_started=1
dovecot -c "$dv/dovecot.conf" 2>"$dv/start.err" || { cat "$dv/start.err" >&2; die "dovecot did not start"; }
for i in $(seq 1 40); do [ -S "$dv/auth-postfix" ] && [ -s "$dv/run/master.pid" ] && break; sleep 0.25; done
[ -S "$dv/auth-postfix" ] && [ -s "$dv/run/master.pid" ] || die "dovecot made no auth socket ($dv/auth-postfix)"
DV_MASTER=$(tr -dc 0-9 <"$dv/run/master.pid")
for f in main.cf master.cf; do
  sed -e "s|@DIR@|$pf|g" -e "s|@IP@|127.0.0.1|g" -e "s|@PORT@|$PF_PORT|g" \
    -e "s|@SUB_PORT@|$PF_SUB_PORT|g" -e "s|@SUBS_PORT@|$PF_SUBS_PORT|g" \
    -e "s|@TLS_CERT@|$tls/cert.pem|g" -e "s|@TLS_KEY@|$tls/key.pem|g" \
    -e "s|@SINK_IP@|$SINK_IP|g" -e "s|@SINK_PORT@|$relay_port|g" \
    -e "s|@MAILUID@|$(id -u mail)|g" -e "s|@MAILGID@|$(id -g mail)|g" \
    "$repo/scripts/bench/postfix/$f.in" >"$pf/etc/$f"
done
pf_started=1
postfix -c "$pf/etc" start >&2 2>"$pf/start.err" || { cat "$pf/start.err" >&2; die "postfix did not start"; }
for i in $(seq 1 40); do [ -s "$pf/queue/pid/master.pid" ] && break; sleep 0.25; done
PF_MASTER=$(tr -dc 0-9 <"$pf/queue/pid/master.pid")
wait_port 127.0.0.1 "$PF_PORT" || die "postfix does not answer on 127.0.0.1:$PF_PORT"
PF_ADDR=127.0.0.1:$PF_PORT
PF_SUB=127.0.0.1:$PF_SUB_PORT PF_SUBS=127.0.0.1:$PF_SUBS_PORT
PF_MAILDIR=$pf/mail
log "postfix on $PF_ADDR (master pid $PF_MASTER)"

# --- smtp-sink as the no-storage ceiling
SINK_PORT=$(free_port 127.0.0.1)
"$sink" -u nobody "127.0.0.1:$SINK_PORT" 1024 >/dev/null 2>&1 &
SINK_PID=$!
pids+=("$SINK_PID")
wait_port 127.0.0.1 "$SINK_PORT" || die "smtp-sink does not answer"
SINK_ADDR=127.0.0.1:$SINK_PORT

# --- chasquid, for the submission rows: unpacked from the Debian packages (not installed),
# its own user database (scrypt), the bench certificate, and OpenSMTPD's mail.maildir as the
# delivery agent it runs for each message (tmp/ then new/, as a Maildir wants).
if [[ $TESTS == *" submission "* ]]; then
  debs=$repo/target/bench/debs
  cqroot=$debs/root
  if [ ! -x "$cqroot/usr/bin/chasquid" ] || [ ! -x "$cqroot/usr/libexec/opensmtpd/mail.maildir" ]; then
    mkdir -p "$debs" "$cqroot"
    log "fetching chasquid and opensmtpd (apt-get download; unpacked, not installed)"
    (cd "$debs" && { apt-get download chasquid opensmtpd || { apt-get update -qq && apt-get download chasquid opensmtpd; }; }) >/dev/null 2>&1 \
      || die "apt-get download chasquid opensmtpd failed"
    for deb in "$debs"/chasquid_*.deb "$debs"/opensmtpd_*.deb; do dpkg -x "$deb" "$cqroot"; done
  fi
  cq=$dir/chasquid
  CQ_SUB_PORT=$(free_port 127.0.0.1) CQ_SUBS_PORT=$(free_port 127.0.0.1) CQ_SMTP_PORT=$(free_port 127.0.0.1)
  mkdir -p "$cq/etc/domains/local.test" "$cq/etc/certs/bench.test" "$cq/data" "$cq/mail/Maildir/"{cur,new,tmp}
  cp "$tls/cert.pem" "$cq/etc/certs/bench.test/fullchain.pem"
  cp "$tls/key.pem" "$cq/etc/certs/bench.test/privkey.pem"
  cat >"$cq/etc/chasquid.conf" <<EOF
hostname: "bench.test"
max_data_size_mb: 50
smtp_address: "127.0.0.1:$CQ_SMTP_PORT"
submission_address: "127.0.0.1:$CQ_SUB_PORT"
submission_over_tls_address: "127.0.0.1:$CQ_SUBS_PORT"
mail_delivery_agent_bin: "$cqroot/usr/libexec/opensmtpd/mail.maildir"
mail_delivery_agent_args: "$cq/mail/Maildir"
data_dir: "$cq/data"
mail_log_path: "$cq/mail.log"
EOF
  "$cqroot/usr/bin/chasquid-util" --configdir="$cq/etc" user-add u@local.test --password=bench-password-1 >/dev/null
  # As user mail, as the package runs it (the delivery agent refuses to run as root).
  chown -R mail:mail "$cq"
  setpriv --reuid=mail --regid=mail --init-groups "$cqroot/usr/bin/chasquid" --config_dir="$cq/etc" \
    --logfile="$cq/chasquid.log" >/dev/null 2>&1 &
  CQ_PID=$!
  pids+=("$CQ_PID")
  wait_port 127.0.0.1 "$CQ_SUBS_PORT" || die "chasquid does not answer on 127.0.0.1:$CQ_SUBS_PORT"
  CQ_SUB=127.0.0.1:$CQ_SUB_PORT CQ_SUBS=127.0.0.1:$CQ_SUBS_PORT
  CQ_MAILDIR=$cq/mail
  log "chasquid on $CQ_SUB and $CQ_SUBS (pid $CQ_PID)"
fi

addr_of() { case "$1" in mta) echo "$MTA_ADDR" ;; postfix) echo "$PF_ADDR" ;; sink) echo "$SINK_ADDR" ;; esac; }
maildir_of() { case "$1" in mta) echo "$MTA_MAILDIR" ;; postfix) echo "$PF_MAILDIR" ;; chasquid) echo "$CQ_MAILDIR" ;; *) echo "" ;; esac; }
# CPU time (clock ticks) a server has used so far, all its processes: mta and smtp-sink are
# one process each; for Postfix, the master with its reaped children plus every live child,
# and the same for the private Dovecot (Postfix's SASL).
# On a shared machine CPU per message is steadier than messages per second.
cpu_ticks() {
  case "$1" in
    mta) awk '{print $14 + $15}' "/proc/$MTA_PID/stat" ;;
    sink) awk '{print $14 + $15}' "/proc/$SINK_PID/stat" ;;
    # chasquid and the delivery agent it runs per message (reaped: cutime, cstime).
    chasquid) awk '{print $14 + $15 + $16 + $17}' "/proc/$CQ_PID/stat" ;;
    postfix)
      # With the private Dovecot's (master and auth process), which checks Postfix's AUTH.
      { for m in "$PF_MASTER" "$DV_MASTER"; do
          awk '{print $14 + $15 + $16 + $17}' "/proc/$m/stat"
          for p in $(ps -o pid= --ppid "$m"); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done
        done
      } | awk '{t += $1} END {print t}' ;;
  esac
}
TICK=$(getconf CLK_TCK)
secs_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.3f", b-a}'; }

wait_delivered() { # wait_delivered MAILDIR N: until N files sit in new/ (at most 600 s)
  local i got=0
  for i in $(seq 1 2400); do got=$(count_new "$1"); [ "$got" -ge "$2" ] && return 0; sleep 0.25; done
  [ "$smoke" = 0 ] || die "only $got of $2 messages delivered to $1"
  log "WARN: only $got of $2 messages delivered to $1"
}

# One load run: smtp-source with SESSIONS sessions, N messages of SIZE bytes to RCPT, plus
# the latency probe. With PROCS > 1, PROCS smtp-source processes of SESSIONS sessions each
# share the N messages. Sets run_secs, run_probe.
load() { # load ADDR RCPT SESSIONS N SIZE [PROCS]
  local addr=$1 rcpt=$2 s=$3 n=$4 size=$5 procs=${6:-1} t0 rc=0 ppid k sp=() share
  rm -f "$dir/probe.stop" "$dir/probe.ready"
  python3 "$probe" latency "$addr" "$rcpt" "$size" --count 100000 --interval "$PROBE_INTERVAL" \
    --stop-file "$dir/probe.stop" --ready "$dir/probe.ready" >"$dir/probe.out" 2>&1 & ppid=$!
  local i
  for i in $(seq 1 100); do [ -e "$dir/probe.ready" ] && break; kill -0 "$ppid" 2>/dev/null || break; sleep 0.1; done
  t0=$(date +%s.%N)
  if [ "$procs" = 1 ]; then
    timeout 900 "$src" -s "$s" -m "$n" -l "$size" -f sender@remote.test -t "$rcpt" \
      -M bench-client.test "$addr" >"$dir/source.out" 2>&1 || rc=$?
  else
    for k in $(seq 1 "$procs"); do
      # N split as evenly as it goes: the first N % PROCS processes send one more.
      share=$((n / procs + (k <= n % procs ? 1 : 0)))
      [ "$share" -gt 0 ] || continue
      timeout 900 "$src" -s "$s" -m "$share" -l "$size" -f sender@remote.test -t "$rcpt" \
        -M bench-client.test "$addr" >"$dir/source.out.$k" 2>&1 & sp+=($!)
    done
    for k in "${sp[@]}"; do wait "$k" || rc=$?; done
    cat "$dir"/source.out.* >"$dir/source.out" 2>/dev/null || true
    rm -f "$dir"/source.out.*
  fi
  run_secs=$(secs_since "$t0")
  touch "$dir/probe.stop"
  wait "$ppid" || true
  run_probe=$(tail -n1 "$dir/probe.out")
  [ "$rc" = 0 ] || { cat "$dir/source.out" >&2; die "smtp-source against $addr failed (rc=$rc)"; }
}

accept_run() { # accept_run TEST SERVER ROUND SESSIONS N SIZE [PROCS]
  local test=$1 srv=$2 round=$3 s=$4 n=$5 size=$6 procs=${7:-1} md l rate pn=0 c0 cpu
  md=$(maildir_of "$srv")
  l=$(load1)
  c0=$(cpu_ticks "$srv")
  load "$(addr_of "$srv")" u@local.test "$s" "$n" "$size" "$procs"
  rate=$(awk -v n="$n" -v t="$run_secs" 'BEGIN{printf "%.0f", n/t}')
  pn=$(sed -n 's/^n=\([0-9]*\).*/\1/p' <<<"$run_probe"); pn=${pn:-0}
  # Deliveries included: CPU is read once everything sits in the Maildir.
  if [ -n "$md" ]; then wait_delivered "$md" $((n + pn)); fi
  cpu=$(awk -v a="$c0" -v b="$(cpu_ticks "$srv")" -v n=$((n + pn)) -v t="$TICK" 'BEGIN{printf "%.3f", (b-a)/t*1000/n}')
  record "$test" "$srv" "$round" "$rate" msg/s "$l" "secs=$run_secs cpu_ms_per_msg=$cpu $run_probe"
  log "$test $srv r$round: $rate msg/s ($run_secs s, load $l, $cpu ms CPU per message) probe: $run_probe"
  if [ -n "$md" ]; then set_aside "$md"; fi
}

relay_run() { # relay_run SERVER ROUND N [PROCS]: first submission to the N-th message at the sink
  local srv=$1 round=$2 n=$3 procs=${4:-1} rcpt sp wp t0 l i tend secs rate accept test=relay-s20-5KiB
  local k share cp=() rc=0
  [ "$procs" = 1 ] || test=relay-p$procs-5KiB
  case "$srv" in mta) rcpt=fwd@local.test ;; *) rcpt=u@relay.test ;; esac
  rm -f "$dir/sink.mark" "$dir/sink.mark.final" "$dir/sink.fifo"; mkfifo "$dir/sink.fifo"
  python3 "$probe" sinkcount "$n" "$dir/sink.mark" <"$dir/sink.fifo" & wp=$!
  "$sink" -c -u nobody "$SINK_IP:$relay_port" 1024 >"$dir/sink.fifo" 2>/dev/null & sp=$!
  pids+=("$sp")
  wait_port "$SINK_IP" "$relay_port" || die "relay sink does not answer"
  sleep 0.5
  l=$(load1)
  t0=$(date +%s.%N)
  rm -f "$dir/probe.stop"
  if [ "$procs" = 1 ]; then
    timeout 900 "$src" -s 20 -m "$n" -l 5120 -f sender@remote.test -t "$rcpt" \
      -M bench-client.test "$(addr_of "$srv")" >"$dir/source.out" 2>&1 || rc=$?
  else
    # PROCS processes of one session each share the N messages, as in accept-p20.
    for k in $(seq 1 "$procs"); do
      share=$((n / procs + (k <= n % procs ? 1 : 0)))
      [ "$share" -gt 0 ] || continue
      timeout 900 "$src" -s 1 -m "$share" -l 5120 -f sender@remote.test -t "$rcpt" \
        -M bench-client.test "$(addr_of "$srv")" >"$dir/source.out.$k" 2>&1 & cp+=($!)
    done
    for k in "${cp[@]}"; do wait "$k" || rc=$?; done
    cat "$dir"/source.out.* >"$dir/source.out" 2>/dev/null || true
    rm -f "$dir"/source.out.*
  fi
  [ "$rc" = 0 ] || { cat "$dir/source.out" >&2; die "smtp-source failed (rc=$rc)"; }
  accept=$(awk -v n="$n" -v t="$(secs_since "$t0")" 'BEGIN{printf "%.0f", n/t}')
  for i in $(seq 1 2400); do [ -s "$dir/sink.mark" ] && break; sleep 0.25; done
  stop_pid "$sp"; wait "$wp" 2>/dev/null || true
  if [ -s "$dir/sink.mark" ]; then
    tend=$(cat "$dir/sink.mark")
    secs=$(awk -v a="$t0" -v b="$tend" 'BEGIN{printf "%.3f", b-a}')
    rate=$(awk -v n="$n" -v t="$secs" 'BEGIN{printf "%.0f", n/t}')
  else
    secs=NaN rate=NaN
  fi
  record "$test" "$srv" "$round" "$rate" msg/s "$l" "secs=$secs accept_msg_per_s=$accept sink_got=$(cat "$dir/sink.mark.final" 2>/dev/null)"
  log "$test $srv r$round: $rate msg/s end to end ($secs s; accepted at $accept msg/s; load $l; sink got $(cat "$dir/sink.mark.final" 2>/dev/null))"
  # Let the server record its deliveries before the next run.
  sleep 2
}

# --- accept and relay, interleaved
if [[ $TESTS == *" accept "* ]]; then
  for r in $(seq 1 "$ROUNDS"); do
    for srv in mta postfix sink; do accept_run accept-s20-5KiB "$srv" "$r" 20 "$MSGS" 5120; done
    for srv in mta postfix sink; do accept_run accept-p20-5KiB "$srv" "$r" 1 "$MSGS" 5120 20; done
    for srv in mta postfix sink; do accept_run accept-s1-5KiB "$srv" "$r" 1 "$MSGS_1" 5120; done
    for srv in mta postfix sink; do accept_run accept-s20-100KiB "$srv" "$r" 20 "$MSGS_BIG" 102400; done
  done
fi
if [[ $TESTS == *" relay "* ]]; then
  for r in $(seq 1 "$ROUNDS"); do
    for srv in mta postfix; do relay_run "$srv" "$r" "$RELAY_MSGS"; done
    for srv in mta postfix; do relay_run "$srv" "$r" "$RELAY_MSGS" 20; done
  done
fi

# --- a backlog draining: N messages queued while the destination refuses connections, then
# it comes back and the operator says "try now". Each server on its own (the other idle),
# the same sink; the clock starts when the flush command is given.
backlog_settled() { # backlog_settled SERVER N: every one of N messages tried and deferred
  case "$1" in
    mta)
      "$mta" queue list --config "$dir/mta/mta.toml" 2>/dev/null | awk -v n="$2" '
        / attempts 0 / { untried++ }
        /^[0-9]+ message\(s\) queued$/ { queued = $1 }
        END { exit !(queued >= n && untried == 0) }' ;;
    postfix)
      [ "$(find "$pf/queue/incoming" "$pf/queue/active" "$pf/queue/maildrop" -type f | wc -l)" = 0 ] &&
        [ "$(find "$pf/queue/deferred" -type f | wc -l)" -ge "$2" ] ;;
  esac
}
backlog_run() { # backlog_run SERVER N
  local srv=$1 n=$2 rcpt sp wp t0 l i secs rate fill_secs
  case "$srv" in mta) rcpt=backlog@local.test ;; *) rcpt=u@backlog.test ;; esac
  ! (exec 3<>"/dev/tcp/$SINK_IP/$relay_port") 2>/dev/null || die "something listens on $SINK_IP:$relay_port"
  t0=$(date +%s.%N)
  timeout 1800 "$src" -s 20 -m "$n" -l 1024 -f sender@remote.test -t "$rcpt" \
    -M bench-client.test "$(addr_of "$srv")" >"$dir/source.out" 2>&1 || { cat "$dir/source.out" >&2; die "smtp-source failed"; }
  fill_secs=$(secs_since "$t0")
  for i in $(seq 1 600); do backlog_settled "$srv" "$n" && break; sleep 1; done
  backlog_settled "$srv" "$n" || die "backlog $srv: the $n messages were not all tried and deferred within 600 s"
  rm -f "$dir/sink.mark" "$dir/sink.mark.final" "$dir/sink.fifo"; mkfifo "$dir/sink.fifo"
  python3 "$probe" sinkcount "$n" "$dir/sink.mark" <"$dir/sink.fifo" & wp=$!
  "$sink" -c -u nobody "$SINK_IP:$relay_port" 1024 >"$dir/sink.fifo" 2>/dev/null & sp=$!
  pids+=("$sp")
  wait_port "$SINK_IP" "$relay_port" || die "backlog sink does not answer"
  l=$(load1)
  t0=$(date +%s.%N)
  case "$srv" in
    mta) "$mta" queue flush --config "$dir/mta/mta.toml" >"$dir/flush.out" ;;
    postfix) postqueue -c "$pf/etc" -f ;;
  esac
  for i in $(seq 1 7200); do [ -s "$dir/sink.mark" ] && break; sleep 0.25; done
  stop_pid "$sp"; wait "$wp" 2>/dev/null || true
  if [ -s "$dir/sink.mark" ]; then
    secs=$(awk -v a="$t0" -v b="$(cat "$dir/sink.mark")" 'BEGIN{printf "%.3f", b-a}')
    rate=$(awk -v n="$n" -v t="$secs" 'BEGIN{printf "%.0f", n/t}')
  else
    secs=NaN rate=NaN
  fi
  record backlog-drain "$srv" 1 "$rate" msg/s "$l" "messages=$n secs=$secs fill_secs=$fill_secs sink_got=$(cat "$dir/sink.mark.final" 2>/dev/null) $(cat "$dir/flush.out" 2>/dev/null | tr '\n' ' ')"
  log "backlog $srv: $n messages drained in $secs s, $rate msg/s (filled in $fill_secs s; load $l; sink got $(cat "$dir/sink.mark.final" 2>/dev/null))"
  rm -f "$dir/flush.out"
  # Let the server record its deliveries before the next run.
  sleep 2
}
if [[ $TESTS == *" backlog "* ]]; then
  for srv in mta postfix; do backlog_run "$srv" "$BACKLOG"; done
  m=$(awk -F'\t' '$1 == "backlog-drain" && $2 == "mta" {print $4}' "$out")
  p=$(awk -F'\t' '$1 == "backlog-drain" && $2 == "postfix" {print $4}' "$out")
  log "backlog: mta $m msg/s, postfix $p msg/s, ratio $(awk -v m="$m" -v p="$p" 'BEGIN{ if (p + 0 > 0) printf "%.2f", m / p; else print "NaN" }') (target >= 2)"
fi

# --- over TLS: mta-load (bench/) instead of smtp-source, which speaks no TLS. Its own
# dot-to-250 percentiles replace the probe's; its CPU is reported apart from the server's.
# A session refused with a 4xx (mta answers `454 4.7.0` to logins beyond the password checks
# it runs and queues) is sent again, as a client would; its errors are in the results.
tls_run() { # tls_run TEST SERVER ROUND N ADDR MTA-LOAD-ARGS...
  local test=$1 srv=$2 round=$3 n=$4 addr=$5 md l c0 cpu rc=0 res rate
  shift 5
  md=$(maildir_of "$srv")
  l=$(load1)
  c0=$(cpu_ticks "$srv")
  timeout 900 "$mta_load" "$addr" --messages "$n" --sessions 20 --size 5120 \
    --ca "$TLS_CA" --server-name bench.test --to u@local.test --retry-temporary "$@" >"$dir/load.out" 2>&1 || rc=$?
  res=$(tail -n1 "$dir/load.out")
  [ "$rc" = 0 ] || { cat "$dir/load.out" >&2; die "mta-load $test against $srv failed (rc=$rc)"; }
  rate=$(sed -n 's/.* msg_per_s=\([0-9]*\).*/\1/p' <<<"$res")
  wait_delivered "$md" "$n"
  cpu=$(awk -v a="$c0" -v b="$(cpu_ticks "$srv")" -v n="$n" -v t="$TICK" 'BEGIN{printf "%.3f", (b-a)/t*1000/n}')
  record "$test" "$srv" "$round" "${rate:-NaN}" msg/s "$l" "cpu_ms_per_msg=$cpu $res"
  log "$test $srv r$round: ${rate:-NaN} msg/s (load $l, $cpu ms server CPU per message) $res"
  set_aside "$md"
}
sub_of() { case "$1" in mta) echo "$MTA_SUB" ;; postfix) echo "$PF_SUB" ;; chasquid) echo "$CQ_SUB" ;; esac; }
subs_of() { case "$1" in mta) echo "$MTA_SUBS" ;; postfix) echo "$PF_SUBS" ;; chasquid) echo "$CQ_SUBS" ;; esac; }
if [[ $TESTS == *" tls25 "* ]]; then
  for r in $(seq 1 "$ROUNDS"); do
    for srv in mta postfix; do
      tls_run tls25-s20-5KiB "$srv" "$r" "$TLS_MSGS" "$(addr_of "$srv")" --mode starttls25 \
        --from sender@remote.test
    done
  done
fi
if [[ $TESTS == *" submission "* ]]; then
  for r in $(seq 1 "$ROUNDS"); do
    for srv in mta postfix chasquid; do
      tls_run "submission-s20x$SUB_PER-5KiB" "$srv" "$r" "$SUB_MSGS" "$(sub_of "$srv")" --mode submission \
        --per-session "$SUB_PER" --from u@local.test --user u@local.test --password bench-password-1
    done
    for srv in mta postfix chasquid; do
      tls_run "submissions-s20x$SUB_PER-5KiB" "$srv" "$r" "$SUB_MSGS" "$(subs_of "$srv")" --mode submission \
        --implicit --per-session "$SUB_PER" --from u@local.test --user u@local.test --password bench-password-1
    done
  done
fi

# --- fsyncs per accepted message, 20 sessions, deliveries included
fsync_run() { # fsync_run SERVER
  local srv=$1 md targets=() sp l n=$FSYNC_MSGS total queue mail pn
  md=$(maildir_of "$srv")
  if [ "$srv" = mta ]; then targets=(-p "$MTA_PID")
  else
    # The master and every process it has now; strace -f follows the ones it forks later.
    targets=(-p "$PF_MASTER")
    for p in $(ps -o pid= --ppid "$PF_MASTER"); do targets+=(-p "$p"); done
  fi
  strace -f -qq -y -e trace=fsync,fdatasync -o "$dir/strace.$srv" "${targets[@]}" 2>/dev/null & sp=$!
  sleep 1
  l=$(load1)
  load "$(addr_of "$srv")" u@local.test 20 "$n" 5120
  pn=$(sed -n 's/^n=\([0-9]*\).*/\1/p' <<<"$run_probe"); pn=${pn:-0}
  wait_delivered "$md" $((n + pn))
  sleep 1
  kill "$sp" 2>/dev/null; wait "$sp" 2>/dev/null || true
  set_aside "$md"
  total=$(grep -cE '(fsync|fdatasync)\(' "$dir/strace.$srv" || true)
  mail=$(grep -E '(fsync|fdatasync)\(' "$dir/strace.$srv" | grep -c "<$md" || true)
  queue=$((total - mail))
  record fsync-s20 "$srv" 1 "$(awk -v a="$total" -v n=$((n + pn)) 'BEGIN{printf "%.2f", a/n}')" per_msg "$l" \
    "messages=$((n + pn)) total=$total queue=$queue maildir=$mail queue_per_msg=$(awk -v a="$queue" -v n=$((n + pn)) 'BEGIN{printf "%.2f", a/n}')"
  log "fsync $srv: $total syncs for $((n + pn)) messages (queue $queue, maildir $mail; load $l)"
}
if [[ $TESTS == *" fsync "* ]]; then
  fsync_run mta
  fsync_run postfix
fi

# --- idle sessions
hold_run() { # hold_run ADDR N [PROBE-ARGS...]: hold N sessions; runs $on_ready while they are held
  rm -f "$dir/hold.ready" "$dir/hold.stop"
  python3 "$probe" hold "$1" "$2" --sources 50 --ready "$dir/hold.ready" --stop-file "$dir/hold.stop" \
    --max-s 300 "${@:3}" >"$dir/hold.out" 2>&1 & local hp=$! i
  for i in $(seq 1 1200); do [ -s "$dir/hold.ready" ] && break; kill -0 "$hp" 2>/dev/null || break; sleep 0.25; done
  sleep 2
  "$on_ready"
  touch "$dir/hold.stop"; wait "$hp" || true
  hold_result=$(cat "$dir/hold.out")
}
if [[ $TESTS == *" idle "* ]]; then
  start_mta mem
  sleep 2
  l=$(load1)
  rss0=$(kib "$mta_pid" VmRSS)
  mta_rss() { rss1=$(kib "$mta_pid" VmRSS); }
  on_ready=mta_rss hold_run "$mta_addr" "$IDLE"
  per=$(awk -v a="$rss0" -v b="$rss1" -v n="$IDLE" 'BEGIN{printf "%.1f", (b-a)/n}')
  record idle-rss mta 1 "$per" KiB/session "$l" "rss_idle_kib=$rss0 rss_held_kib=$rss1 sessions=$IDLE $hold_result"
  log "idle mta: $rss0 KiB idle, $rss1 KiB with $IDLE sessions: $per KiB each ($hold_result; load $l)"
  stop_pid "$mta_pid"
  pf_pss() { # PSS of the smtpd processes the master has while the sessions are held
    local p n=0 sum=0 v
    for p in $(ps -o pid=,comm= --ppid "$PF_MASTER" | awk '$2 == "smtpd" {print $1}'); do
      v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
      n=$((n + 1)); sum=$((sum + v))
    done
    pf_n=$n pf_sum=$sum
  }
  l=$(load1)
  on_ready=pf_pss hold_run "$PF_ADDR" "$PF_IDLE"
  per=$(awk -v a="$pf_sum" -v n="$pf_n" 'BEGIN{printf "%.1f", n ? a/n : 0}')
  record idle-rss postfix 1 "$per" KiB/session "$l" "smtpd_processes=$pf_n pss_sum_kib=$pf_sum sessions=$PF_IDLE $hold_result"
  log "idle postfix: $pf_n smtpd processes for $PF_IDLE sessions, $per KiB PSS each ($hold_result; load $l)"
fi

# --- many idle sessions at once, and one more client's message meanwhile
if [[ $TESTS == *" idle10k "* ]]; then
  # The sessions plus the one more client, and room to spare; the caps per client stay
  # those of the config: 20 sessions per source address, each address in its own /24.
  max_sessions=$((IDLE_MANY + 100)) start_mta idle10k
  sleep 2
  l=$(load1)
  rss0=$(kib "$mta_pid" VmRSS)
  many_ready() { # with the sessions held: the server's RSS and descriptors, then one message
    rss1=$(kib "$mta_pid" VmRSS)
    fds=$(find "/proc/$mta_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
    one=$(timeout 120 python3 "$probe" send1 "$mta_addr" u@local.test 5120 2>&1 | tail -n1) || true
  }
  t0=$(date +%s.%N)
  on_ready=many_ready hold_run "$mta_addr" "$IDLE_MANY" --spread --sources $(((IDLE_MANY + 19) / 20)) --max-s 120
  secs=$(secs_since "$t0")
  per=$(awk -v a="$rss0" -v b="$rss1" -v n="$IDLE_MANY" 'BEGIN{printf "%.1f", (b-a)/n}')
  reply=$(sed -n 's/^reply=\([0-9]*\).*/\1/p' <<<"$one")
  ms=$(sed -n 's/.* connect_to_reply_ms=\([0-9.]*\).*/\1/p' <<<"$one")
  [ "$reply" = 250 ] && wait_delivered "$dir/idle10k/data/mail" 1
  established=$(sed -n 's/^established=\([0-9]*\).*/\1/p' <<<"$hold_result")
  [ "${established:-0}" = "$IDLE_MANY" ] || log "WARN: idle10k: $hold_result"
  [ "$smoke" = 0 ] || { [ "${established:-0}" = "$IDLE_MANY" ] && [ "$reply" = 250 ]; } ||
    die "idle10k: not every session held, or the message sent meanwhile refused: $hold_result; ${one:-no answer}"
  record idle10k mta 1 "$per" KiB/session "$l" "sessions=$IDLE_MANY rss_idle_kib=$rss0 rss_held_kib=$rss1 fds=$fds \
one_reply=${reply:-none} one_connect_to_reply_ms=${ms:-NaN} row_secs=$secs $hold_result"
  log "idle10k mta: $rss0 KiB idle, $rss1 KiB with $IDLE_MANY sessions: $per KiB each; $fds descriptors;" \
    "one more message meanwhile: ${one:-no answer} ($hold_result; $secs s; load $l)"
  stop_pid "$mta_pid"
fi

# --- one 25 MiB message: peak RSS before and after
if [[ $TESTS == *" big "* ]]; then
  start_mta big
  sleep 1
  l=$(load1)
  h0=$(kib "$mta_pid" VmHWM)
  big=$(python3 "$probe" latency "$mta_addr" u@local.test 26214400 --count 1 2>&1 | tail -n1) ||
    die "the 25 MiB message was not accepted: $big"
  h1=$(kib "$mta_pid" VmHWM)
  wait_delivered "$dir/big/data/mail" 1
  sleep 1
  h2=$(kib "$mta_pid" VmHWM)
  record big-25MiB mta 1 "$(awk -v a="$h0" -v b="$h2" 'BEGIN{printf "%.2f", (b-a)/25600}')" x_message "$l" \
    "hwm_before_kib=$h0 hwm_after_250_kib=$h1 hwm_after_delivery_kib=$h2 $big"
  log "25 MiB: VmHWM $h0 KiB before, $h1 KiB after the 250, $h2 KiB after delivery ($big; load $l)"
  stop_pid "$mta_pid"
fi

# --- many 25 MiB messages at once: peak RSS against the memory budget
if [[ $TESTS == *" big50 "* ]]; then
  l=$(load1)
  b50=$(nice python3 "$repo/scripts/bench/memory.py" --mta "$mta" --sessions "$BIG_SESSIONS" --size 25 2>&1 | tail -n1) ||
    die "memory.py failed: $b50"
  growth=$(sed -n 's/.* growth_mib=\([0-9.]*\).*/\1/p' <<<"$b50")
  record "big50-25MiB" mta 1 "${growth:-NaN}" MiB "$l" "$b50"
  log "$BIG_SESSIONS x 25 MiB at once: $b50 (load $l)"
  grep -q ' lost=0 ' <<<"$b50 " || die "big50: an accepted message was not delivered: $b50"
fi

log "raw results: $out"
python3 "$repo/scripts/bench/summary.py" "$out"

# The smoke run's verdict: every row of every test asked for has a number.
if [ "$smoke" = 1 ]; then
  want=()
  [[ $TESTS == *" accept "* ]] && for t in accept-s20-5KiB accept-p20-5KiB accept-s1-5KiB accept-s20-100KiB; do
    for srv in mta postfix sink; do want+=("$t:$srv"); done; done
  [[ $TESTS == *" relay "* ]] && want+=(relay-s20-5KiB:mta relay-s20-5KiB:postfix relay-p20-5KiB:mta relay-p20-5KiB:postfix)
  [[ $TESTS == *" backlog "* ]] && want+=(backlog-drain:mta backlog-drain:postfix)
  [[ $TESTS == *" fsync "* ]] && want+=(fsync-s20:mta fsync-s20:postfix)
  [[ $TESTS == *" idle "* ]] && want+=(idle-rss:mta idle-rss:postfix)
  [[ $TESTS == *" big "* ]] && want+=(big-25MiB:mta)
  [[ $TESTS == *" idle10k "* ]] && want+=(idle10k:mta)
  [[ $TESTS == *" big50 "* ]] && want+=(big50-25MiB:mta)
  [[ $TESTS == *" tls25 "* ]] && want+=(tls25-s20-5KiB:mta tls25-s20-5KiB:postfix)
  [[ $TESTS == *" submission "* ]] && for t in submission submissions; do
    for srv in mta postfix chasquid; do want+=("$t-s20x$SUB_PER-5KiB:$srv"); done; done
  missing=0
  for w in "${want[@]}"; do
    if ! awk -F'\t' -v t="${w%%:*}" -v s="${w#*:}" \
      '$1 == t && $2 == s && $4 ~ /^[0-9]+(\.[0-9]+)?$/ { found = 1 } END { exit !found }' "$out"; then
      log "bench smoke: no figure for ${w%%:*} on ${w#*:}"
      missing=$((missing + 1))
    fi
  done
  [ "$missing" = 0 ] || die "smoke run: $missing of ${#want[@]} rows have no figure"
  log "bench smoke: all ${#want[@]} rows have a figure"
fi
