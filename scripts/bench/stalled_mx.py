#!/usr/bin/env python3
"""Peak memory of `mta` while remote servers take DATA and then stop reading.

Starts dnsmasq (MX records for d1.test … dN.test, on 127.0.0.1 … 127.0.0.N), a fake MX on
a free port of each of those addresses that answers every command, sends `354` to DATA and then reads nothing more,
and a fresh `mta serve` (a temporary data dir, one user, optionally a DKIM key for the
`From:` domain). The user submits one message of SIZE MiB to each domain, one after the
other (so the receive budget is never what limits them), over STARTTLS and AUTH PLAIN; once
every delivery is stuck in its data phase the growth of the server's peak RSS is printed.

    scripts/bench/stalled_mx.py [--mta target/debug/mta] [--domains 8] [--size 20] [--dkim]
"""

import argparse
import os
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

[limits]
max_message_size = 33554432

[inbound]
checks = false

{dkim}

[listen]
smtp = []
submission = ["127.0.0.1:0"]
submissions = []
"""

USER = "alice@example.test"
PASSWORD = "stalled-mx-bench-password-1"


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StalledMx:
    """Says yes to everything up to `354`, then holds the connection without reading."""

    def __init__(self, hosts):
        for _ in range(100):
            self.socks = []
            try:
                for i in range(1, hosts + 1):
                    s = socket.socket()
                    self.socks.append(s)
                    s.bind((f"127.0.0.{i}", self.socks[0].getsockname()[1] if i > 1 else 0))
                    s.listen(64)
                break
            except OSError:
                for s in self.socks:
                    s.close()
        else:
            sys.exit("no port free on every address")
        self.port = self.socks[0].getsockname()[1]
        self.stalled = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.conns = []
        for s in self.socks:
            threading.Thread(target=self.accept, args=(s,), daemon=True).start()

    def accept(self, sock):
        while not self.done.is_set():
            try:
                c, _ = sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(600)
        f = c.makefile("rb")
        c.sendall(b"220 mx.test ESMTP\r\n")
        while True:
            line = f.readline(1000)
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                c.sendall(b"250-mx.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                c.sendall(b"354 go ahead\r\n")
                with self.lock:
                    self.stalled += 1
                self.done.wait(600)
                return
            elif verb == b"QUIT":
                c.sendall(b"221 bye\r\n")
                return
            else:
                c.sendall(b"250 ok\r\n")

    def close(self):
        self.done.set()
        for s in self.socks:
            s.close()
        for c in self.conns:
            c.close()


def submit(port, to, size):
    line = b"x" * 998 + b"\r\n"
    head = (f"From: Alice <{USER}>\r\nTo: <{to}>\r\nSubject: stalled\r\n"
            f"Message-ID: <{to}@example.test>\r\n\r\n").encode()
    body = head + line * ((size << 20) // len(line))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=300) as s:
        s.starttls(context=ctx)
        s.login(USER, PASSWORD)
        s.sendmail(USER, [to], body)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mta", default="target/release/mta")
    p.add_argument("--domains", type=int, default=8)
    p.add_argument("--size", type=int, default=20, help="MiB per message")
    p.add_argument("--dkim", action="store_true", help="a DKIM key for example.test")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="mta-stalled-")
    data = os.path.join(tmp, "data")
    conf = os.path.join(tmp, "mta.toml")
    mx = StalledMx(a.domains)
    dns_port = free_port()
    # One MX address per domain: a domain's connections are limited per address.
    records = [r for i in range(1, a.domains + 1)
               for r in (f"--mx-host=d{i}.test,mx{i}.test,10",
                         f"--host-record=mx{i}.test,127.0.0.{i}")]
    dns = subprocess.Popen(
        ["/usr/sbin/dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--pid-file=",
         "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
         f"--port={dns_port}", *records],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = None
    try:
        dkim = ""
        if a.dkim:
            keygen = os.path.join(tmp, "keygen.toml")
            with open(keygen, "w") as f:
                f.write(f'data_dir = "{data}"\n')
            subprocess.run([a.mta, "dkim", "keygen", "--domain", "example.test", "--selector",
                            "s1", "--algorithm", "ed25519", "--config", keygen],
                           check=True, stdout=subprocess.DEVNULL)
            key = os.path.join(data, "dkim", "example.test.s1.key")
            dkim = (f'[[dkim."example.test"]]\nselector = "s1"\nkey = "{key}"\n'
                    'algorithm = "ed25519"\n')
        with open(conf, "w") as f:
            f.write(CONFIG.format(data=data, dns=dns_port, mx=mx.port, dkim=dkim))
        subprocess.run([a.mta, "user", "add", USER, "--password-stdin", "--config", conf],
                       input=(PASSWORD + "\n").encode(), check=True,
                       stdout=subprocess.DEVNULL)
        out = open(os.path.join(tmp, "out"), "w+")
        env = dict(os.environ, RUST_LOG="warn")
        srv = subprocess.Popen([a.mta, "serve", "--config", conf], stdout=out,
                               stderr=open(os.path.join(tmp, "err"), "w"), env=env)
        port = None
        for _ in range(200):
            out.seek(0)
            text = out.read()
            if text.startswith("mta ready"):
                word = next(w for w in text.split() if w.startswith("submission="))
                port = int(word.rsplit(":", 1)[1])
                break
            time.sleep(0.1)
        if port is None:
            sys.exit("mta did not start")
        before = hwm_kib(srv.pid)
        for i in range(1, a.domains + 1):
            submit(port, f"bob@d{i}.test", a.size)
        for _ in range(120):
            if mx.stalled >= a.domains:
                break
            time.sleep(0.5)
        # Every client is now writing into a full socket: give the writes time to stall.
        time.sleep(5)
        after = hwm_kib(srv.pid)
        signed = "signed" if a.dkim else "unsigned"
        print(f"domains={a.domains} size_mib={a.size} {signed} stalled={mx.stalled} "
              f"hwm_before_kib={before} hwm_after_kib={after} "
              f"growth_mib={(after - before) / 1024:.1f} load={os.getloadavg()[0]:.1f}")
        if mx.stalled < a.domains:
            sys.exit(f"only {mx.stalled} of {a.domains} deliveries reached DATA")
    finally:
        if srv is not None:
            srv.terminate()
            srv.wait(30)
        mx.close()
        dns.terminate()
        dns.wait(30)
        if os.environ.get("KEEP") is None:
            subprocess.run(["rm", "-rf", tmp], check=False)
        else:
            print(tmp)


if __name__ == "__main__":
    main()
