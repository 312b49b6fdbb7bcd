#!/usr/bin/env python3
"""Small SMTP clients for scripts/bench.sh. Standard library only.

  probe.py latency HOST:PORT RCPT SIZE [--count N] [--interval S] [--stop-file F]
                   [--ready F] [--max-s S]
      Sends messages one after another on one connection (MAIL, RCPT, DATA, body, dot; no
      RSET needed) and times each from the final dot to the 250, pausing S seconds
      (--interval) between messages. Writes the --ready file once past EHLO. Stops after N
      messages, once the stop file exists, or after --max-s seconds.
      Prints: n=K p50_ms=A p99_ms=B max_ms=C
  probe.py hold HOST:PORT N [--sources K] [--spread] [--ready F] [--stop-file F] [--max-s S]
      Opens N sessions from K loopback source addresses (127.0.1.1 ...), reads each
      greeting, sends EHLO, writes F (--ready) with the count once all answered, and holds
      them idle until the stop file exists (at most S seconds; opening them takes at most S
      seconds too, the sessions not open by then count as failed). Prints: established=K
      failed=F
      With --spread, each source address is in a /24 of its own and they are spread over
      200 /16s (127.1.0.1, 127.2.0.1, ..., 127.200.0.1, 127.1.1.1, ...), as many clients
      from many networks are: the server's caps per network and per block then count each
      address's own sessions only.
  probe.py send1 HOST:PORT RCPT SIZE
      Connects and sends one message (EHLO, MAIL, RCPT, DATA, body, dot). Prints the reply
      to the dot and the time from the start of the connect to that reply:
      reply=250 connect_to_reply_ms=T text="250 2.0.0 ..."
  probe.py sinkcount N OUT
      Reads `smtp-sink -c` counters on stdin; when mesg= reaches N, writes the epoch time to
      OUT; keeps reading to EOF, then writes the last count to OUT.final.

Every wait is bounded; a server that does not answer as expected ends the probe with exit 1.
Each mode first raises its soft limit on open files to the hard one (`hold` needs one per
session).
"""
import argparse
import asyncio
import os
import re
import resource
import socket
import sys
import time


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


class Smtp:
    """A blocking SMTP client with a deadline on every read."""

    def __init__(self, host, port, timeout=60):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def reply(self):
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed by the server")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            if line[3:4] != b"-":
                return line

    def cmd(self, data, want):
        if data:
            self.sock.sendall(data)
        line = self.reply()
        if not line.startswith(want):
            raise RuntimeError(f"sent {data[:40]!r}, got {line!r}")
        return line


def body_of(size):
    head = b"From: probe@bench.test\r\nTo: rcpt@bench.test\r\nSubject: latency probe\r\n\r\n"
    line = b"x" * 78 + b"\r\n"
    lines = max(0, (size - len(head)) // len(line))
    return head + line * lines


def percentile(sorted_ms, p):
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms) - 1, int(round(p / 100 * (len(sorted_ms) - 1))))
    return sorted_ms[i]


def latency(a):
    host, port = split_addr(a.addr)
    body = body_of(a.size)
    s = Smtp(host, port)
    s.cmd(b"", b"220")
    s.cmd(b"EHLO probe.bench.test\r\n", b"250")
    if a.ready:
        with open(a.ready, "w") as f:
            f.write("ready\n")
    times = []
    end = time.monotonic() + a.max_s
    while len(times) < a.count and time.monotonic() < end:
        if a.stop_file and os.path.exists(a.stop_file):
            break
        s.cmd(b"MAIL FROM:<probe@bench.test>\r\n", b"250")
        s.cmd(f"RCPT TO:<{a.rcpt}>\r\n".encode(), b"250")
        s.cmd(b"DATA\r\n", b"354")
        s.sock.sendall(body)
        t0 = time.perf_counter()
        s.cmd(b".\r\n", b"250")
        times.append((time.perf_counter() - t0) * 1000)
        if a.interval > 0:
            time.sleep(a.interval)
    try:
        s.cmd(b"QUIT\r\n", b"221")
    except (OSError, RuntimeError):
        pass
    times.sort()
    print(f"n={len(times)} p50_ms={percentile(times, 50):.2f} "
          f"p99_ms={percentile(times, 99):.2f} max_ms={(times[-1] if times else float('nan')):.2f}")


async def hold_one(host, port, source, timeout):
    r, w = await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(source, 0)), timeout)

    async def line():
        got = await asyncio.wait_for(r.readline(), timeout)
        while got[3:4] == b"-":
            got = await asyncio.wait_for(r.readline(), timeout)
        return got

    if not (await line()).startswith(b"220"):
        raise RuntimeError("no greeting")
    w.write(b"EHLO idle.bench.test\r\n")
    await w.drain()
    if not (await line()).startswith(b"250"):
        raise RuntimeError("EHLO refused")
    return r, w


def source_addr(i, sources, spread):
    """The loopback address the i-th session connects from."""
    k = i % sources
    if spread:
        return f"127.{1 + k % 200}.{k // 200 % 256}.1"
    return f"127.0.1.{1 + k}"


async def hold(a):
    host, port = split_addr(a.addr)
    sem = asyncio.Semaphore(50)
    # Opening them all takes at most --max-s too: a server that stops answering (out of
    # descriptors, its backlog full) fails the rest quickly instead of 30 s each.
    deadline = time.monotonic() + a.max_s

    async def one(i):
        async with sem:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("not connected within --max-s")
            return await hold_one(host, port, source_addr(i, a.sources, a.spread), min(30, left))

    res = await asyncio.gather(*(one(i) for i in range(a.n)), return_exceptions=True)
    ok = [x for x in res if not isinstance(x, BaseException)]
    errs = [x for x in res if isinstance(x, BaseException)]
    if a.ready:
        with open(a.ready, "w") as f:
            f.write(f"{len(ok)}\n")
    end = time.monotonic() + a.max_s
    while time.monotonic() < end and not (a.stop_file and os.path.exists(a.stop_file)):
        await asyncio.sleep(0.1)
    for _, w in ok:
        try:
            w.write(b"QUIT\r\n")
            w.close()
        except OSError:
            pass
    print(f"established={len(ok)} failed={len(errs)}"
          + (f" first_error={errs[0]!r}" if errs else ""))


def send1(a):
    host, port = split_addr(a.addr)
    t0 = time.perf_counter()
    s = Smtp(host, port)
    s.cmd(b"", b"220")
    s.cmd(b"EHLO one.bench.test\r\n", b"250")
    s.cmd(b"MAIL FROM:<probe@bench.test>\r\n", b"250")
    s.cmd(f"RCPT TO:<{a.rcpt}>\r\n".encode(), b"250")
    s.cmd(b"DATA\r\n", b"354")
    s.sock.sendall(body_of(a.size))
    s.sock.sendall(b".\r\n")
    line = s.reply()
    ms = (time.perf_counter() - t0) * 1000
    try:
        s.cmd(b"QUIT\r\n", b"221")
    except (OSError, RuntimeError):
        pass
    text = line.decode("utf-8", "replace").replace('"', "'")
    print(f'reply={text[:3]} connect_to_reply_ms={ms:.1f} text="{text}"')
    if not line.startswith(b"250"):
        sys.exit(1)


def raise_nofile():
    """Soft limit on open files up to the hard one (the kernel's usual ceiling if unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def sinkcount(a):
    done = False
    last = 0
    buf = b""
    stream = sys.stdin.buffer.raw
    while True:
        chunk = stream.read(4096)
        if not chunk:
            break
        buf += chunk
        *parts, buf = re.split(rb"[\r\n]", buf)
        for p in parts:
            m = re.search(rb"mesg=(\d+)", p)
            if m:
                last = int(m.group(1))
        if not done and last >= a.n:
            with open(a.out, "w") as f:
                f.write(f"{time.time():.6f}\n")
            done = True
    with open(a.out + ".final", "w") as f:
        f.write(f"{last}\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("addr")
    lat.add_argument("rcpt")
    lat.add_argument("size", type=int)
    lat.add_argument("--count", type=int, default=1000)
    lat.add_argument("--interval", type=float, default=0.0)
    lat.add_argument("--stop-file")
    lat.add_argument("--ready")
    lat.add_argument("--max-s", type=float, default=600)
    h = sub.add_parser("hold")
    h.add_argument("addr")
    h.add_argument("n", type=int)
    h.add_argument("--sources", type=int, default=50)
    h.add_argument("--spread", action="store_true")
    h.add_argument("--ready")
    h.add_argument("--stop-file")
    h.add_argument("--max-s", type=float, default=120)
    o = sub.add_parser("send1")
    o.add_argument("addr")
    o.add_argument("rcpt")
    o.add_argument("size", type=int)
    c = sub.add_parser("sinkcount")
    c.add_argument("n", type=int)
    c.add_argument("out")
    a = p.parse_args()
    try:
        raise_nofile()
        if a.mode == "latency":
            latency(a)
        elif a.mode == "hold":
            asyncio.run(hold(a))
        elif a.mode == "send1":
            send1(a)
        else:
            sinkcount(a)
    except (OSError, RuntimeError) as e:
        print(f"probe: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
