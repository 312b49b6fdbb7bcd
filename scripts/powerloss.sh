#!/usr/bin/env bash
# Power-loss soak. Prints figures; exit 0 only when nothing was lost.
#
# The data dir sits on scripts/lazyfs.py, a FUSE file system that keeps written data in
# memory until the file is fsync'ed and drops everything unsynced on command (the fault
# model of LazyFS). Each cycle: start `mta serve`, let SENDERS concurrent SMTP sessions send
# messages of 1 to 200 KiB (some over sled's 128 KiB blob threshold) with unique
# Message-IDs, then cut the power at a random moment: kill -9 the server and drop every
# unsynced write. The next cycle starts on what the "disk" kept. At the end the queue is
# drained and every message that got 250 must be in the Maildir; duplicates are counted,
# and no file in Maildir/new may be partial. If `mta serve` cannot start on what the disk
# kept, the script shows its error and checks that the failed start changed no file.
#
#   scripts/powerloss.sh            # 20 cycles, 8 senders
#   CYCLES=50 SENDERS=20 scripts/powerloss.sh
#   CYCLES=2 CONTROL=1 scripts/powerloss.sh
#
# CONTROL=1 is the run that proves the harness still sees a loss: the server (a debug build)
# runs with MTA_TEST_NO_SYNC=1, which makes the queue and the Maildir skip every fsync and
# fdatasync, and every cycle cuts after seconds of load. The control exits 0 only when
# something was lost, torn, or left unopenable; a control that loses nothing means the
# harness stopped testing, and it fails.
#
# Needs root, /dev/fuse and Debian's python3-fusepy (installed with apt-get if missing).
# Why a FUSE file system of our own: LazyFS must be built from its repository, which this
# machine cannot reach; dm-log-writes needs device-mapper, which this kernel lacks
# (`dmsetup targets`: "/dev/mapper/control: open failed: No such device").
set -euo pipefail
cd "$(dirname "$0")/.."

CYCLES=${CYCLES:-20}
SENDERS=${SENDERS:-8}
CONTROL=${CONTROL:-0}
serve_env=()
[ "$CONTROL" = 1 ] && serve_env=(MTA_TEST_NO_SYNC=1)
PY=/usr/bin/python3 # Debian's, which sees python3-fusepy

if [ "$(id -u)" != 0 ]; then echo "powerloss: needs root (FUSE mount)"; exit 2; fi
if [ ! -c /dev/fuse ]; then echo "powerloss: /dev/fuse is missing: no FUSE here"; exit 2; fi
if ! "$PY" -c 'import fusepy' 2>/dev/null || ! command -v fusermount >/dev/null; then
  echo "powerloss: installing python3-fusepy and fuse3"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-fusepy fuse3 >/dev/null
fi

cargo build --bin mta
MTA=$PWD/target/debug/mta
work=$(mktemp -d /tmp/mta-powerloss.XXXXXX)
backing=$work/backing
mnt=$work/mnt
mkdir -p "$backing" "$mnt"
fs_pid=""
mta_pid=""
send_pid=""
ok=0

cleanup() {
  [ -n "$send_pid" ] && kill -9 "$send_pid" 2>/dev/null || true
  [ -n "$mta_pid" ] && kill -9 "$mta_pid" 2>/dev/null || true
  if mountpoint -q "$mnt"; then fusermount -u "$mnt" 2>/dev/null || fusermount -uz "$mnt" || true; fi
  [ -n "$fs_pid" ] && wait "$fs_pid" 2>/dev/null || true
  if [ "$ok" = 1 ] && [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "powerloss: keeping $work"; fi
}
trap cleanup EXIT

cat >"$work/mta.toml" <<EOF
hostname = "mx.example.test"
data_dir = "$mnt/data"
local_domains = ["example.test"]
# The harness runs as root (FUSE); serving as root must be said explicitly.
allow_root = true

[queue]
retry_first = "1s"
retry_max = "2s"

[listen]
smtp = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
EOF

mount_fs() {
  "$PY" scripts/lazyfs.py "$backing" "$mnt" 2>>"$work/lazyfs.log" &
  fs_pid=$!
  for _ in $(seq 100); do mountpoint -q "$mnt" && return 0; sleep 0.1; done
  echo "powerloss: lazyfs did not mount"; exit 1
}

# Fingerprint of the queue store on the backing disk (to show a failed start changed nothing).
fingerprint() { (cd "$backing/data/queue" 2>/dev/null && find . -type f -exec md5sum {} + | sort) || true; }

# Starts mta serve; sets $port. Returns 1 when it exits before it is ready.
start_mta() {
  local n=$1
  env "${serve_env[@]}" "$MTA" serve --config "$work/mta.toml" >"$work/serve.$n.out" 2>"$work/serve.$n.err" &
  mta_pid=$!
  for _ in $(seq 600); do
    if grep -q '^mta ready ' "$work/serve.$n.out" 2>/dev/null; then
      port=$(sed -n 's/^mta ready smtp=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/serve.$n.out")
      return 0
    fi
    if ! kill -0 "$mta_pid" 2>/dev/null; then
      wait "$mta_pid" || true
      mta_pid=""
      return 1
    fi
    sleep 0.05
  done
  echo "powerloss: mta serve printed no ready line in 30 s"; exit 1
}

cat >"$work/send.py" <<'EOF'
# Sends until killed; appends the Message-ID tag of every message that got 250 to a file
# on the real disk, after the 250.
import os, smtplib, sys, threading, time
port, prefix, senders, accepted = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
sizes = [1_000, 20_000, 100_000, 140_000, 200_000, 5_000]
lock = threading.Lock()
out = open(accepted, "a")
refused = open(accepted + ".refused", "a")
def body(tag, size):
    head = ("From: s@remote.test\r\nTo: bob@example.test\r\nSubject: %s\r\n"
            "Message-ID: <%s@test>\r\n\r\n" % (tag, tag))
    line = "0123456789abcdefghijklmnopqrstuvwxyz" * 2 + "\r\n"
    return head + line * (size // len(line) + 1)
def run(s):
    n = 0
    while True:
        try:
            c = smtplib.SMTP("127.0.0.1", port, timeout=20)
            c.ehlo("sender.test")
            while True:
                tag = "%s-%d-%d" % (prefix, s, n)
                size = sizes[n % len(sizes)]
                n += 1
                try:
                    c.sendmail("s@remote.test", ["bob@example.test"], body(tag, size))
                except smtplib.SMTPResponseException as e:
                    with lock:
                        refused.write("%s %d\n" % (tag, e.smtp_code)); refused.flush()
                    continue
                with lock:
                    out.write(tag + "\n"); out.flush()
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)
for s in range(senders):
    threading.Thread(target=run, args=(s,), daemon=True).start()
while True:
    time.sleep(1)
EOF

echo "powerloss: $CYCLES cycles, $SENDERS senders, data dir on lazyfs at $mnt (work dir $work)$([ "$CONTROL" = 1 ] && echo ", CONTROL: syncs disabled")"
started=$SECONDS
mount_fs
# Set-up, then a clean stop and unmount: the user and the certificate are on the disk.
printf 'bob-password-1\n' | "$MTA" user add bob@example.test --password-stdin --config "$work/mta.toml" >/dev/null
start_mta 0 || { cat "$work/serve.0.err"; exit 1; }
kill -TERM "$mta_pid"; wait "$mta_pid" || true; mta_pid=""
fusermount -u "$mnt"; wait "$fs_pid" || true; fs_pid=""
mount_fs

cut_failed_start=""
for c in $(seq 1 "$CYCLES"); do
  before=$(fingerprint)
  if ! start_mta "$c"; then
    after=$(fingerprint)
    echo "powerloss: cycle $c: mta serve did not start on what the disk kept:"
    tail -3 "$work/serve.$c.err"
    if [ "$before" = "$after" ]; then echo "powerloss: the failed start changed no file of the store"
    else echo "powerloss: THE FAILED START CHANGED THE STORE"; fi
    cut_failed_start=$c
    break
  fi
  "$PY" "$work/send.py" "$port" "c$c" "$SENDERS" "$work/accepted" 2>/dev/null &
  send_pid=$!
  # Odd cycles cut early (0.2 to 1 s), while the restarted server is still retrying what
  # the last cut left; even cycles after 2 to 5 s of load.
  if [ $((c % 2)) = 1 ] && [ "$CONTROL" != 1 ]; then sleep "0.$((RANDOM % 9 + 2))"; else sleep "$((RANDOM % 4 + 2)).$((RANDOM % 10))"; fi
  kill -9 "$mta_pid"; wait "$mta_pid" 2>/dev/null || true; mta_pid=""
  stat "$mnt/.lazyfs-powercut-$c" >/dev/null 2>&1 || true
  kill -9 "$send_pid"; wait "$send_pid" 2>/dev/null || true; send_pid=""
  printf 'cycle %2d: %6d accepted so far\n' "$c" "$(cat "$work/accepted" 2>/dev/null | wc -l)"
done

# Drain: start once more without load until every accepted message is in the Maildir.
maildir=$backing/data/mail/example.test/bob/Maildir
if [ -z "$cut_failed_start" ]; then
  if ! start_mta final; then
    echo "powerloss: mta serve did not start for the drain:"; tail -3 "$work/serve.final.err"
    if [ "$CONTROL" = 1 ]; then echo "powerloss: control: the harness saw the loss without syncs, as it must"; ok=1; exit 0; fi
    exit 1
  fi
  # Every accepted message shows up within a minute; the control loses some, so it waits less.
  drain_rounds=240
  [ "$CONTROL" = 1 ] && drain_rounds=30
  for _ in $(seq "$drain_rounds"); do
    if "$PY" - "$work/accepted" "$mnt/data/mail/example.test/bob/Maildir/new" <<'EOF'
import os, sys
want = set(open(sys.argv[1]).read().split())
have = set()
for f in os.listdir(sys.argv[2]):
    with open(os.path.join(sys.argv[2], f), "rb") as h:
        head = h.read(4096).decode("latin-1")
    i = head.find("Message-ID: <")
    if i >= 0: have.add(head[i + 13:head.find("@test>", i)])
sys.exit(0 if want <= have else 1)
EOF
    then break; fi
    sleep 0.5
  done
  kill -TERM "$mta_pid"; wait "$mta_pid" || true; mta_pid=""
fi
fusermount -u "$mnt"; wait "$fs_pid" || true; fs_pid=""
echo "powerloss: $((SECONDS - started)) s"

status=0
"$PY" - "$work/accepted" "$maildir" "$CYCLES" "$work/lazyfs.log" <<'EOF' || status=$?
import collections, os, re, sys
accepted = open(sys.argv[1]).read().split() if os.path.exists(sys.argv[1]) else []
refused = open(sys.argv[1] + ".refused").read().split("\n") if os.path.exists(sys.argv[1] + ".refused") else []
maildir, cycles = sys.argv[2], sys.argv[3]
seen = collections.Counter()
partial = 0
files = 0
for sub in ("new", "cur"):
    d = os.path.join(maildir, sub)
    for f in os.listdir(d) if os.path.isdir(d) else []:
        files += 1
        path = os.path.join(d, f)
        data = open(path, "rb").read()
        m = re.search(r",S=(\d+)", f)
        if m and int(m.group(1)) != len(data):
            partial += 1
        head = data[:4096].decode("latin-1")
        i = head.find("Message-ID: <")
        if i >= 0:
            seen[head[i + 13:head.find("@test>", i)]] += 1
want = set(accepted)
lost = sorted(t for t in want if seen[t] == 0)
dups = sum(n - 1 for t, n in seen.items() if n > 1)
big = sum(1 for t in want if int(t.rsplit("-", 1)[1]) % 6 in (3, 4))
cuts = [l for l in open(sys.argv[4]).read().splitlines() if l.startswith("lazyfs:")]
print("powerloss: cycles %s, accepted (250) %d (of which over 128 KiB: %d), refused 4xx %d"
      % (cycles, len(want), big, len([r for r in refused if r])))
print("powerloss: Maildir files %d, distinct messages %d, lost %d, duplicates %d, partial files %d"
      % (files, len(seen), len(lost), dups, partial))
for l in cuts:
    print("powerloss: " + l)
if lost:
    print("powerloss: LOST: " + " ".join(lost[:20]))
sys.exit(1 if lost or partial else 0)
EOF
if [ "$CONTROL" = 1 ]; then
  # The control must have lost or broken something: status 1 from the count above, or a
  # start that failed on what the disk kept.
  if [ -n "$cut_failed_start" ] || [ "$status" != 0 ]; then
    echo "powerloss: control: the harness saw the loss without syncs, as it must"
    ok=1
    exit 0
  fi
  echo "powerloss: CONTROL LOST NOTHING: with every sync disabled a power cut must lose something; the harness no longer tests"
  exit 1
fi
if [ -n "$cut_failed_start" ]; then exit 1; fi
[ "$status" = 0 ] && ok=1
exit "$status"
