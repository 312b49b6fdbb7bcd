#!/usr/bin/env python3
"""What a big queue to a dead destination costs `mta`.

Starts dnsmasq (`dead.test` MX on 127.0.0.9), a listener on 127.0.0.9 that accepts every
connection and closes it at once, counting them (a destination that refuses mail), and a
fresh `mta serve` (a temporary data dir, one user without sending limits, retries after
1 h). The queue is filled with N messages to `dead.test`: RATE of them by the user over
several submission sessions (STARTTLS, AUTH PLAIN) on an empty queue, the bulk by Postfix's
`smtp-source` (20 sessions, small messages; it speaks no AUTH, so on port 25 to an alias of
the dead address), in four parts with the server's RSS after each, and the last RATE by the
user again, then the script prints:

- the accept rate (msg/s) of submission on an empty queue and with N queued (RATE each);
- the bulk fill's rate, and the server's RSS as the queue grew and with N queued;
- connections to the dead MX while all N got their first attempt (one retry round);
- connections to it in the WINDOW seconds after a restart (due times are kept: 0 expected),
  and the restarted server's RSS then;
- the time to the first line, and to the end, of `mta queue list`.

    scripts/bench/bigqueue.py [--mta target/debug/mta] [--quick | -n N] [--window 30]

Needs dnsmasq and smtp-source (packages dnsmasq-base and postfix).
"""

import argparse
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

CONFIG = """hostname = "bench.test"
data_dir = "{data}"
local_domains = ["example.test"]
allow_root = true

[dns]
nameservers = ["127.0.0.1:{dns}"]

[outbound]
port = {mx}
mta_sts = false
tls_reports = false
dane = false
allow_internal = ["127.0.0.0/8"]

[queue]
retry_first = "1h"
retry_max = "1h"

[limits]
# The bulk fill's sessions all come from 127.0.0.1.
max_sessions_per_ip = 100
max_sessions_per_network = 100

[limits.sending]
messages_per_hour = 0
messages_per_day = 0
first_time_recipients_per_day = 0

[inbound]
checks = false

[listen]
smtp = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = []

[aliases]
"fill@example.test" = ["victim@dead.test"]
"""

USER = "alice@example.test"
PASSWORD = "bigqueue-bench-password-1"
DEAD = "victim@dead.test"
MX_IP = "127.0.0.9"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Trap:
    """Accepts and closes every connection on MX_IP, counting them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((MX_IP, 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.count += 1
            c.close()

    def connections(self):
        with self.lock:
            return self.count


def submit(port, n, tag):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=300) as s:
        s.starttls(context=ctx)
        s.login(USER, PASSWORD)
        for i in range(n):
            body = (f"From: Alice <{USER}>\r\nTo: <{DEAD}>\r\nSubject: big queue {tag} {i}\r\n"
                    f"Message-ID: <{tag}.{i}@example.test>\r\n\r\nqueued\r\n").encode()
            s.sendmail(USER, [DEAD], body)


def fill(port, n, sessions, tag):
    """Submits n messages over `sessions` sessions at once; returns msg/s."""
    per = [n // sessions + (1 if i < n % sessions else 0) for i in range(sessions)]
    errors = []

    def one(i):
        try:
            submit(port, per[i], f"{tag}{i}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(sessions) if per[i]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(f"submission failed: {errors[0]}")
    return n / (time.monotonic() - started)


def bulk(port, n, sessions):
    """Queues n small messages through smtp-source on port 25 (to the alias of the dead
    address); returns msg/s."""
    if n <= 0:
        return 0.0
    started = time.monotonic()
    subprocess.run([SMTP_SOURCE, "-s", str(sessions), "-m", str(n), "-l", "200",
                    "-f", "sender@remote.test", "-t", "fill@example.test",
                    "-M", "bulk.test", f"127.0.0.1:{port}"],
                   check=True, stdout=subprocess.DEVNULL, timeout=24 * 3600)
    return n / (time.monotonic() - started)


def serve(mta, conf, tmp):
    out = open(os.path.join(tmp, "out"), "w+")
    env = dict(os.environ, RUST_LOG="warn")
    srv = subprocess.Popen([mta, "serve", "--config", conf], stdout=out,
                           stderr=open(os.path.join(tmp, "err"), "a"), env=env)
    for _ in range(600):
        out.seek(0)
        text = out.read()
        if text.startswith("mta ready"):
            ports = {w.split("=", 1)[0]: int(w.rsplit(":", 1)[1])
                     for w in text.split() if re.match(r"(smtp|submission)=", w)}
            return srv, ports["submission"], ports["smtp"]
        if srv.poll() is not None:
            sys.exit("mta serve exited at start-up")
        time.sleep(0.1)
    sys.exit("mta serve did not get ready")


def untried(mta, conf):
    """Messages not attempted yet, from `mta queue list`."""
    out = subprocess.run([mta, "queue", "list", "--config", conf], check=True,
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if "  attempts 0  " in line)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mta", default="target/release/mta")
    p.add_argument("-n", type=int, default=100_000, help="messages to queue")
    p.add_argument("--quick", action="store_true", help="10,000 messages")
    p.add_argument("--rate", type=int, default=0, help="messages per rate sample")
    p.add_argument("--sessions", type=int, default=4, help="submission sessions")
    p.add_argument("--bulk-sessions", type=int, default=20, help="smtp-source sessions")
    p.add_argument("--window", type=int, default=30, help="seconds watched after the restart")
    a = p.parse_args()
    n = 10_000 if a.quick else a.n
    rate_n = a.rate or max(50, min(1000, n // 10))
    tmp = tempfile.mkdtemp(prefix="mta-bigqueue-")
    data = os.path.join(tmp, "data")
    conf = os.path.join(tmp, "mta.toml")
    trap = Trap()
    dns_port = free_port()
    dns = subprocess.Popen(
        ["/usr/sbin/dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--pid-file=",
         "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
         f"--port={dns_port}", "--mx-host=dead.test,mx.dead.test,10",
         f"--host-record=mx.dead.test,{MX_IP}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = None
    try:
        with open(conf, "w") as f:
            f.write(CONFIG.format(data=data, dns=dns_port, mx=trap.port))
        subprocess.run([a.mta, "user", "add", USER, "--password-stdin", "--config", conf],
                       input=(PASSWORD + "\n").encode(), check=True, stdout=subprocess.DEVNULL)
        srv, port, smtp = serve(a.mta, conf, tmp)
        empty_rate = fill(port, rate_n, a.sessions, "empty")
        bulk_n = max(0, n - 2 * rate_n)
        parts = [bulk_n // 4 + (1 if i < bulk_n % 4 else 0) for i in range(4)]
        growth = []
        bulk_secs = 0.0
        queued = rate_n
        for part in parts:
            started = time.monotonic()
            bulk(smtp, part, a.bulk_sessions)
            bulk_secs += time.monotonic() - started
            queued += part
            growth.append(f"{queued}: {status_kib(srv.pid, 'VmRSS') / 1024:.0f}")
        full_rate = fill(port, rate_n, a.sessions, "full")
        rss = status_kib(srv.pid, "VmRSS")
        # Listing a big queue takes a while: look less often, and wait longer, as N grows.
        pause = max(1, n // 50_000)
        deadline = time.monotonic() + max(1200, n // 200)
        while untried(a.mta, conf) != 0:
            if time.monotonic() > deadline:
                sys.exit("not every message was tried in time")
            time.sleep(pause)
        round_conns = trap.connections()

        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=120)
        srv, port, smtp = serve(a.mta, conf, tmp)
        before = trap.connections()
        time.sleep(a.window)
        restart_conns = trap.connections() - before
        # What a fresh process holds with the same queue: memory that only grows with N
        # (an index of every message) shows here too; a cache filled while accepting does not.
        restart_rss = status_kib(srv.pid, "VmRSS")

        started = time.monotonic()
        lister = subprocess.Popen([a.mta, "queue", "list", "--config", conf],
                                  stdout=subprocess.PIPE, text=True)
        first_line = lister.stdout.readline()
        first = time.monotonic() - started
        lines = 1 + sum(1 for _ in lister.stdout)
        total = time.monotonic() - started
        if lister.wait() != 0 or not first_line:
            sys.exit("mta queue list failed")

        rows = [
            ("messages queued", f"{n}"),
            ("accept rate, empty queue", f"{empty_rate:.0f} msg/s"),
            (f"accept rate, {n} queued", f"{full_rate:.0f} msg/s"),
            ("accept rate ratio, full / empty", f"{full_rate / empty_rate * 100:.0f} %"),
            (f"bulk fill ({a.bulk_sessions} sessions)",
             f"{bulk_n / bulk_secs:.0f} msg/s" if bulk_n else "-"),
            ("server RSS as it grew (queued: MiB)", ", ".join(growth)),
            (f"server RSS with {n} queued", f"{rss / 1024:.1f} MiB"),
            (f"server RSS {a.window} s after a restart", f"{restart_rss / 1024:.1f} MiB"),
            ("connections to the dead MX, one round", f"{round_conns}"),
            (f"connections in the {a.window} s after a restart", f"{restart_conns}"),
            ("mta queue list, first line", f"{first * 1000:.0f} ms"),
            (f"mta queue list, all {lines} lines", f"{total * 1000:.0f} ms"),
        ]
        for label, value in rows:
            print(f"{label + ':':<46} {value}")
    finally:
        if srv is not None and srv.poll() is None:
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(timeout=60)
            except subprocess.TimeoutExpired:
                srv.kill()
        dns.terminate()
        dns.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
