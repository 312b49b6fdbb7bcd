#!/usr/bin/env python3
"""Greeting latency of the SMTP listener while 8 clients scrape /metrics without pause.
Usage: scrape_latency.py fill SUBMISSION_PORT N  |  scrape_latency.py measure SMTP_PORT METRICS_PORT"""
import smtplib, ssl, socket, sys, threading, time, statistics, urllib.request

def fill(port, n, threads=8):
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    def work(k):
        s = smtplib.SMTP("127.0.0.1", port, timeout=60); s.starttls(context=ctx)
        for attempt in range(100):
            # Logins from one address in parallel may get 454 while others are checked.
            try:
                s.login("alice@example.test", "alice-password-1"); break
            except smtplib.SMTPAuthenticationError as e:
                if e.smtp_code != 454 or attempt == 99: raise
                time.sleep(0.1)
        for i in range(k):
            s.sendmail("alice@example.test", ["x@remote.test"], b"From: alice@example.test\r\nSubject: q\r\n\r\nqueued\r\n")
        s.quit()
    ts = [threading.Thread(target=work, args=(n // threads,)) for _ in range(threads)]
    [t.start() for t in ts]; [t.join() for t in ts]

def greeting(port):
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        c.recv(512)
    return (time.perf_counter() - t) * 1000

def measure(smtp, metrics, samples=200):
    stop = False; scrapes = [0]
    def scraper():
        while not stop:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=30).read(); scrapes[0] += 1
            except Exception:
                pass
    idle = [greeting(smtp) for _ in range(50)]
    ts = [threading.Thread(target=scraper) for _ in range(8)]
    [t.start() for t in ts]; time.sleep(1)
    t0 = time.time(); busy = [greeting(smtp) for _ in range(samples)]; el = time.time() - t0
    stop = True; [t.join() for t in ts]
    q = lambda v, p: sorted(v)[int(len(v) * p)]
    print(f"idle median {statistics.median(idle):.2f} ms; under 8 scrapers median {statistics.median(busy):.2f} ms p90 {q(busy,.9):.2f} ms max {max(busy):.2f} ms; {scrapes[0]/el:.0f} scrapes/s")

if sys.argv[1] == "fill": fill(int(sys.argv[2]), int(sys.argv[3]))
else: measure(int(sys.argv[2]), int(sys.argv[3]))
