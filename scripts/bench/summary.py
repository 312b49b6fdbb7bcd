#!/usr/bin/env python3
"""Prints the table of scripts/bench.sh from its raw results (TSV): medians over rounds and
ratios, as Markdown.

  summary.py RESULTS.tsv
"""
import csv
import statistics
import sys


def main():
    rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
    by = {}
    for r in rows:
        by.setdefault((r["test"], r["server"]), []).append(r)
    loads = [float(r["load1"]) for r in rows if r["load1"]]

    def med(test, server):
        vals = [float(r["value"]) for r in by.get((test, server), []) if r["value"] not in ("NaN", "")]
        return statistics.median(vals) if vals else None

    def probe(test, server, key):
        vals = []
        for r in by.get((test, server), []):
            for kv in r["extra"].split():
                k, _, v = kv.partition("=")
                if k == key and v != "nan":
                    vals.append(float(v))
        return statistics.median(vals) if vals else None

    def fmt(v, digits=0):
        return "—" if v is None else f"{v:.{digits}f}"

    def ratio(a, b):
        return "—" if a is None or not b else f"{a / b:.2f}×"

    print("| test | mta | Postfix | smtp-sink | mta / Postfix | mta / smtp-sink |")
    print("|---|---|---|---|---|---|")
    for test, name in (("accept-s20-5KiB", "accept, 20 sessions, 5 KiB (msg/s)"),
                       ("accept-p20-5KiB", "accept, 20 processes of 1 session, 5 KiB (msg/s)"),
                       ("accept-s1-5KiB", "accept, 1 session, 5 KiB (msg/s)"),
                       ("accept-s20-100KiB", "accept, 20 sessions, 100 KiB (msg/s)")):
        if not any(k[0] == test for k in by):
            continue
        m, p, s = med(test, "mta"), med(test, "postfix"), med(test, "sink")
        print(f"| {name} | {fmt(m)} | {fmt(p)} | {fmt(s)} | {ratio(m, p)} | {ratio(m, s)} |")
        cells = []
        for srv in ("mta", "postfix", "sink"):
            a, b = probe(test, srv, "p50_ms"), probe(test, srv, "p99_ms")
            cells.append(f"{fmt(a, 1)} / {fmt(b, 1)}")
        print(f"| … dot → 250, p50 / p99 (ms) | {cells[0]} | {cells[1]} | {cells[2]} | | |")
        c = [probe(test, srv, "cpu_ms_per_msg") for srv in ("mta", "postfix", "sink")]
        print(f"| … CPU per message, deliveries included (ms) | {fmt(c[0], 2)} | {fmt(c[1], 2)} | {fmt(c[2], 2)} "
              f"| {ratio(c[1], c[0]) if c[0] else '—'} less | |")
    for test, name in (("relay-s20-5KiB", "relay, 20 sessions, 5 KiB, to the sink (msg/s)"),
                       ("relay-p20-5KiB", "relay, 20 processes of 1 session, 5 KiB, to the sink (msg/s)")):
        if any(k[0] == test for k in by):
            m, p = med(test, "mta"), med(test, "postfix")
            print(f"| {name} | {fmt(m)} | {fmt(p)} | — | {ratio(m, p)} | |")
    if any(k[0] == "backlog-drain" for k in by):
        m, p = med("backlog-drain", "mta"), med("backlog-drain", "postfix")
        print(f"| backlog drain after the destination came back, 1 KiB (msg/s) | {fmt(m)} | {fmt(p)} | — | {ratio(m, p)} | |")
    tls_tests = sorted({k[0] for k in by if k[0].startswith(("tls25-", "submission-", "submissions-"))},
                       key=lambda t: ("tls25-", "submission-", "submissions-").index(t.split("-")[0] + "-"))
    for test in tls_tests:
        kind, shape = test.split("-")[0], test.split("-")[1]
        name = {"tls25": "STARTTLS on port 25, 20 sessions, 1 message each, 5 KiB (msg/s)",
                "submission": f"submission, STARTTLS + AUTH, 20 sessions × {shape.split('x')[-1]} messages, 5 KiB (msg/s)",
                "submissions": f"submission, implicit TLS + AUTH, 20 sessions × {shape.split('x')[-1]} messages, 5 KiB (msg/s)"}[kind]
        m, p = med(test, "mta"), med(test, "postfix")
        print(f"| {name} | {fmt(m)} | {fmt(p)} | — | {ratio(m, p)} | |")
        q = med(test, "chasquid")
        if q is not None:
            cq = probe(test, "chasquid", "cpu_ms_per_msg")
            print(f"| … chasquid: msg/s, and mta / chasquid; its CPU per message (ms) {fmt(cq, 2)} "
                  f"| {fmt(q)} | | | {ratio(m, q)} | |")
        cells = [f"{fmt(probe(test, srv, 'p50_ms'), 1)} / {fmt(probe(test, srv, 'p99_ms'), 1)}" for srv in ("mta", "postfix")]
        print(f"| … dot → 250, p50 / p99 (ms) | {cells[0]} | {cells[1]} | | | |")
        h = [probe(test, srv, "handshakes_per_s") for srv in ("mta", "postfix")]
        print(f"| … TLS handshakes/s | {fmt(h[0])} | {fmt(h[1])} | | {ratio(h[0], h[1])} | |")
        c = [probe(test, srv, "cpu_ms_per_msg") for srv in ("mta", "postfix")]
        print(f"| … server CPU per message, deliveries included (ms) | {fmt(c[0], 2)} | {fmt(c[1], 2)} | "
              f"| {ratio(c[1], c[0]) if c[0] else '—'} less | |")
        k = [probe(test, srv, "client_cpu_ms_per_msg") for srv in ("mta", "postfix")]
        print(f"| … client (mta-load) CPU per message (ms) | {fmt(k[0], 2)} | {fmt(k[1], 2)} | | | |")
        errs = []
        for srv in ("mta", "postfix"):
            kinds = [kv.partition("=")[2] for r in by.get((test, srv), []) for kv in r["extra"].split()
                     if kv.startswith("error_kinds=") and kv != "error_kinds=none"]
            errs.append(", ".join(kinds) or "none")
        if errs != ["none", "none"]:
            print(f"| … errors, all rounds (sessions sent again after a 4xx) | {errs[0]} | {errs[1]} | | | |")
    if any(k[0] == "fsync-s20" for k in by):
        m, p = med("fsync-s20", "mta"), med("fsync-s20", "postfix")
        mq, pq = probe("fsync-s20", "mta", "queue_per_msg"), probe("fsync-s20", "postfix", "queue_per_msg")
        print(f"| fsync + fdatasync per message, 20 sessions (all) | {fmt(m, 2)} | {fmt(p, 2)} | 0 | | |")
        print(f"| … of which the queue (not the Maildir) | {fmt(mq, 2)} | {fmt(pq, 2)} | 0 | | |")
    if any(k[0] == "idle-rss" for k in by):
        m, p = med("idle-rss", "mta"), med("idle-rss", "postfix")
        n = probe("idle-rss", "mta", "sessions")
        print(f"| memory per idle session (KiB; mta: RSS growth over {fmt(n)}; Postfix: PSS of an smtpd process each) "
              f"| {fmt(m, 1)} | {fmt(p, 1)} | — | | |")
    if any(k[0] == "big-25MiB" for k in by):
        h0, h1, h2 = (probe("big-25MiB", "mta", k) for k in
                      ("hwm_before_kib", "hwm_after_250_kib", "hwm_after_delivery_kib"))
        print(f"| one 25 MiB message: peak RSS before → after 250 → after delivery (MiB) "
              f"| {fmt(h0 / 1024 if h0 else None, 1)} → {fmt(h1 / 1024 if h1 else None, 1)} → "
              f"{fmt(h2 / 1024 if h2 else None, 1)} | | | | |")
    if any(k[0] == "idle10k" for k in by):
        m = med("idle10k", "mta")
        n = probe("idle10k", "mta", "sessions")
        ms = probe("idle10k", "mta", "one_connect_to_reply_ms")
        reply = next((kv.partition("=")[2] for r in by[("idle10k", "mta")] for kv in r["extra"].split()
                      if kv.startswith("one_reply=")), "none")
        print(f"| memory per idle session, {fmt(n)} held (KiB, RSS growth / sessions) | {fmt(m, 1)} | | | | |")
        print(f"| … one more message meanwhile: reply, connect → reply (ms) | {reply}, {fmt(ms, 1)} | | | | |")
    if any(k[0] == "big50-25MiB" for k in by):
        r = by[("big50-25MiB", "mta")][0]
        kv = dict(x.partition("=")[::2] for x in r["extra"].split())
        print(f"| {kv.get('sessions', '?')} × {kv.get('size_mib', '?')} MiB at once: peak RSS growth (MiB), "
              f"budget {kv.get('budget_mib', '?')} MiB | {r['value']} (replies {kv.get('replies', '?')}; "
              f"delivered {kv.get('delivered', '?')} of {kv.get('accepted', '?')} accepted) | | | | |")
    if loads:
        print(f"\nload average (1 min) at the start of the runs: {min(loads):.2f}–{max(loads):.2f}; "
              f"raw results: {sys.argv[1]}")


if __name__ == "__main__":
    main()
