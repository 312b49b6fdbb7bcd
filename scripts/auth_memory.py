#!/usr/bin/env python3
"""Peak memory of `mta serve` under N concurrent AUTH attempts (docs/security.md).

Usage: scripts/auth_memory.py [MTA_BINARY] [N]   (default target/debug/mta, 60)

Starts the server on loopback in a temp dir (per-address limits raised so that every attempt
reaches the password check), opens N TLS sessions on the submissions port, says EHLO on each,
then sends all N `AUTH PLAIN` at once (unknown users: the same argon2 work as known ones).
Prints the replies by code, and the server's resident memory (VmRSS) at rest and with the
sessions open, and its peak (VmHWM) after the attempts, from /proc. A measurement, not a test: nothing here is asserted.
"""

import base64
import collections
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    raise KeyError(key)


def reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            return 0, "(closed)"
        lines.append(line.decode(errors="replace").rstrip())
        if line[3:4] != b"-":
            return int(line[:3]), " / ".join(lines)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/mta"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    tmp = tempfile.mkdtemp(prefix="mta-authmem-")
    config = os.path.join(tmp, "mta.toml")
    with open(config, "w") as f:
        f.write(
            f'hostname = "mx.example.test"\ndata_dir = "{tmp}/data"\n'
            'local_domains = ["example.test"]\nallow_root = true\n'
            f"[limits]\nmax_sessions_per_ip = {n + 10}\nmax_sessions_per_network = {n + 10}\nauth_failures = 100\n"
            "[inbound]\nchecks = false\n"
            '[listen]\nsmtp = ["127.0.0.1:0"]\nsubmission = ["127.0.0.1:0"]\n'
            'submissions = ["127.0.0.1:0"]\n'
        )
    server = subprocess.Popen(
        [binary, "serve", "--config", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = server.stdout.readline().decode()
        port = int(ready.split("submissions=")[1].split()[0].rsplit(":", 1)[1])
        before = status(server.pid, "VmRSS")
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        sessions_open = threading.Barrier(n + 1, timeout=120)
        go = threading.Barrier(n + 1, timeout=120)
        replies = []
        lock = threading.Lock()

        def attempt(i):
            raw = socket.create_connection(("127.0.0.1", port), timeout=60)
            s = tls.wrap_socket(raw)
            f = s.makefile("rb")
            reply(f)
            s.sendall(b"EHLO client.test\r\n")
            reply(f)
            token = base64.b64encode(f"\0u{i}@example.test\0wrong-password-1".encode())
            sessions_open.wait()
            go.wait()
            s.sendall(b"AUTH PLAIN " + token + b"\r\n")
            code, text = reply(f)
            with lock:
                replies.append((code, text))
            s.close()

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        sessions_open.wait()
        open_rss = status(server.pid, "VmRSS")
        open_peak = status(server.pid, "VmHWM")
        go.wait()
        for t in threads:
            t.join(120)
        peak = status(server.pid, "VmHWM")
        threads_now = status(server.pid, "Threads")
        by_code = collections.Counter(code for code, _ in replies)
        print(f"{binary}: {n} concurrent AUTH attempts")
        print(f"  replies: {dict(sorted(by_code.items()))}")
        print(
            f"  RSS at rest: {before / 1024:.1f} MiB; with the {n} sessions open: "
            f"{open_rss / 1024:.1f} MiB (peak so far {open_peak / 1024:.1f} MiB); "
            f"peak after the AUTH attempts (VmHWM): {peak / 1024:.1f} MiB"
        )
        print(f"  threads after: {threads_now}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
