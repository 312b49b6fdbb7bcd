#!/usr/bin/env python3
"""Peak memory of `mta` under concurrent large messages.

Starts a fresh `mta serve` (a temporary data dir, one local user), reads its VmHWM, sends
SESSIONS messages of SIZE MiB at once over loopback (one thread and connection each,
streamed, so the client holds little), waits until every reply is in and the deliveries
are done, and prints the growth of the server's peak RSS with the replies counted.

    scripts/bench/memory.py [--mta target/release/mta] [--sessions 20] [--size 20]
                            [--budget BYTES]

`--budget` sets `[limits] message_memory` (default: mta's own default).
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
            results[i] = r
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
        f.write(CONFIG.format(data=data, budget=budget))
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
        results = [None] * a.sessions
        threads = [threading.Thread(target=send, args=(addr, a.size << 20, results, i))
                   for i in range(a.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        accepted = sum(1 for r in results if r and r.startswith("250"))
        maildir = os.path.join(data, "mail")
        for _ in range(600):
            n = sum(len(fs) for d, _, fs in os.walk(maildir) if d.endswith("/new"))
            if n >= accepted:
                break
            time.sleep(0.5)
        after = hwm_kib(srv.pid)
        codes = {}
        for r in results:
            k = (r or "none")[:9]
            codes[k] = codes.get(k, 0) + 1
        print(f"sessions={a.sessions} size_mib={a.size} hwm_before_kib={before} "
              f"hwm_after_kib={after} growth_mib={(after - before) / 1024:.1f} "
              f"replies={codes} load={os.getloadavg()[0]:.1f}")
    finally:
        srv.terminate()
        srv.wait(30)
        subprocess.run(["rm", "-rf", tmp], check=False)


if __name__ == "__main__":
    main()
