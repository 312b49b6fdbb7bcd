#!/usr/bin/env python3
"""Peak memory of `mta` under concurrent large messages.

Starts a fresh `mta serve` (a temporary data dir, one local user), reads its VmHWM, sends
SESSIONS messages of SIZE MiB at once over loopback (one thread and connection each,
streamed, so the client holds little), waits until every reply is in and the deliveries
are done, and prints the growth of the server's peak RSS with the replies counted, the
memory budget in force, and how many accepted messages were delivered whole:

    sessions=50 size_mib=25 budget_mib=64 hwm_before_kib=.. hwm_after_kib=.. growth_mib=..
    replies=250_2.0.0:2,452_4.3.1:3,at_DATA:452_4.3.1:45 accepted=2 delivered=2 lost=0 secs=.. load=..

    scripts/bench/memory.py [--mta target/release/mta] [--sessions 20] [--size 20]
                            [--budget BYTES]

`--budget` sets `[limits] message_memory` (default: mta's own default, 64 MiB or
`max_message_size` if larger: 64 MiB here). Every session comes from 127.0.0.1, so the
caps per client address and network are raised to the sessions. The exit status is 1 when
an accepted message was not delivered whole (`lost` > 0).
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

CONFIG = """hostname = "bench.test"
data_dir = "{data}"
local_domains = ["local.test"]
allow_root = true

[listen]
smtp = ["127.0.0.1:0"]
submission = []
submissions = []

[limits]
max_message_size = 33554432
max_sessions_per_ip = {sessions}
max_sessions_per_network = {sessions}
{budget}

[outbound]
mta_sts = false
tls_reports = false

[inbound]
checks = false
"""


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def reply(f):
    """The last line of one (possibly multi-line) SMTP reply."""
    while True:
        line = f.readline()
        if not line:
            raise EOFError("connection closed")
        if line[3:4] != b"-":
            return line.decode().strip()


def send(addr, size, results, i):
    try:
        s = socket.create_connection(addr, timeout=300)
        f = s.makefile("rb")
        reply(f)
        for cmd in (b"EHLO client.test", b"MAIL FROM:<a@client.test>", b"RCPT TO:<u@local.test>", b"DATA"):
            s.sendall(cmd + b"\r\n")
            r = reply(f)
        if not r.startswith("354"):
            results[i] = "at_DATA:" + r
            return
        line = b"x" * 998 + b"\r\n"
        chunk = b"Subject: memory\r\n\r\n" + line * 64
        sent = 0
        while sent < size:
            s.sendall(chunk)
            sent += len(chunk)
        s.sendall(b".\r\n")
        results[i] = reply(f)
        s.sendall(b"QUIT\r\n")
        s.close()
    except Exception as e:  # noqa: BLE001 - reported with the results
        results[i] = f"error: {e}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mta", default="target/release/mta")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--size", type=int, default=20, help="MiB per message")
    p.add_argument("--budget", type=int)
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="mta-memory-")
    data = os.path.join(tmp, "data")
    conf = os.path.join(tmp, "mta.toml")
    budget = f"message_memory = {a.budget}" if a.budget is not None else ""
    with open(conf, "w") as f:
        f.write(CONFIG.format(data=data, budget=budget, sessions=max(a.sessions, 20)))
    subprocess.run(
        [a.mta, "user", "add", "u@local.test", "--password-stdin", "--config", conf],
        input=b"memory-bench-password-1\n", check=True, stdout=subprocess.DEVNULL)
    out = open(os.path.join(tmp, "out"), "w+")
    env = dict(os.environ, RUST_LOG="warn")
    srv = subprocess.Popen([a.mta, "serve", "--config", conf], stdout=out,
                           stderr=open(os.path.join(tmp, "err"), "w"), env=env)
    try:
        addr = None
        for _ in range(200):
            out.seek(0)
            text = out.read()
            if text.startswith("mta ready"):
                word = next(w for w in text.split() if w.startswith("smtp="))
                host, port = word[5:].rsplit(":", 1)
                addr = (host, int(port))
                break
            time.sleep(0.1)
        if addr is None:
            sys.exit("mta did not start")
        before = hwm_kib(srv.pid)
        t0 = time.monotonic()
        results = [None] * a.sessions
        threads = [threading.Thread(target=send, args=(addr, a.size << 20, results, i))
                   for i in range(a.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        accepted = sum(1 for r in results if r and r.startswith("250"))
        maildir = os.path.join(data, "mail")

        def delivered():
            """Messages in the Maildir, and how many of them hold the whole body."""
            files = [os.path.join(d, f) for d, _, fs in os.walk(maildir) if d.endswith("/new") for f in fs]
            return len(files), sum(1 for f in files if os.path.getsize(f) >= a.size << 20)

        for _ in range(600):
            n, whole = delivered()
            if n >= accepted:
                break
            time.sleep(0.5)
        secs = time.monotonic() - t0
        after = hwm_kib(srv.pid)
        budget_mib = (a.budget if a.budget is not None else max(64 << 20, 33554432)) / (1 << 20)
        codes = {}
        for r in results:
            # The reply's code and enhanced code; "at_DATA:" when it came instead of 354.
            _, sep, text = (r or "none").rpartition("at_DATA:")
            k = ("at_DATA:" if sep else "") + text[:9].replace(" ", "_")
            codes[k] = codes.get(k, 0) + 1
        codes = ",".join(f"{k}:{v}" for k, v in sorted(codes.items()))
        print(f"sessions={a.sessions} size_mib={a.size} hwm_before_kib={before} "
              f"hwm_after_kib={after} growth_mib={(after - before) / 1024:.1f} "
              f"budget_mib={budget_mib:g} replies={codes} accepted={accepted} delivered={whole} "
              f"lost={accepted - min(whole, accepted)} secs={secs:.1f} load={os.getloadavg()[0]:.1f}")
        if whole < accepted:
            sys.exit(1)
    finally:
        srv.terminate()
        srv.wait(30)
        subprocess.run(["rm", "-rf", tmp], check=False)


if __name__ == "__main__":
    main()
