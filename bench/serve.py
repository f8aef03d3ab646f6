#!/usr/bin/env python3
"""The server against the offline CLI, in one run, on this machine's CPU backend.

    python3 bench/serve.py [--docs 1000] [--clients 1,8,64] [--overload-s 60] [--soak-s 600]
                           [--threads N] [--out bench/serve-latest.md]

1. Offline: `runtime-cli embed` on the documents (the median of three runs' tokens/s, model
   loading excluded: the CLI's own throughput line).
2. The same documents through `runtime-cli serve`'s /embed at 1, 8 and 64 concurrent clients
   (keep-alive connections, one document per request): documents/s, tokens/s (the server's
   `serve_tokens_total`, counted as the CLI counts: window tokens with [CLS] and [SEP]),
   p50/p95/p99 latency, and the server's RSS. With one client, each request's latency is also
   divided by its own compute time (the server's log line for that request id).
3. Overload: requests at 4× the measured 64-client rate for --overload-s seconds: only 200s and
   429s are acceptable; RSS against its steady value; then the time until the rate is back.
4. Soak: 8 clients for --soak-s seconds; RSS sampled every 10 s after a warm-up minute.

Documents: section notes of MTS-Dialog (data/mts-dialog, CC BY 4.0). No assertion: the table
is the result, with the goals of issue 19 beside it.
"""
import argparse
import csv
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "target", "release", "runtime-cli")


def documents(n):
    path = os.path.join(ROOT, "data", "mts-dialog", "MTS-Dialog-TrainingSet.csv")
    with open(path, newline="", encoding="utf-8") as f:
        texts = [row["section_text"] for row in csv.DictReader(f) if row["section_text"].strip()]
    out = []
    while len(out) < n:
        out.extend(texts)
    return out[:n]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def offline(docs, threads):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": str(i), "text": d}) + "\n")
        path = f.name
    rates = []
    for _ in range(3):
        cmd = [CLI, "embed", path, "--device", "cpu"]
        if threads:
            cmd += ["--threads", str(threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(out.stderr)
        m = re.search(r"(\d+) documents, (\d+) tokens in ([0-9.]+) s", out.stderr)
        rates.append((int(m.group(1)) / float(m.group(3)), int(m.group(2)) / float(m.group(3))))
    os.unlink(path)
    rates.sort(key=lambda r: r[1])
    return rates[1]


class Server:
    def __init__(self, threads):
        cmd = [CLI, "serve", "--device", "cpu", "--port", "0"]
        if threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.compute = {}
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                if line.startswith("listening on http://"):
                    self.host, self.port = line.strip().split("http://")[1].rsplit(":", 1)
                    ready.set()
                m = re.match(r"request id=(\d+) .* compute_ms=([0-9.]+)", line)
                if m:
                    self.compute[int(m.group(1))] = float(m.group(2))

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120):
            sys.exit("the server did not start")

    def connection(self):
        return http.client.HTTPConnection(self.host, int(self.port), timeout=120)

    def tokens(self):
        c = self.connection()
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        return sum(float(m.group(1)) for m in re.finditer(r'^serve_tokens_total\{model="clinical-small"\} ([0-9.e+]+)', text, re.M))

    def rss(self):
        return rss_mib(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def embed(conn, text):
    body = json.dumps({"inputs": text})
    t0 = time.perf_counter()
    conn.request("POST", "/embed", body, {"content-type": "application/json"})
    r = conn.getresponse()
    r.read()
    return r.status, time.perf_counter() - t0, int(r.getheader("x-request-id") or 0)


def closed_loop(server, docs, clients):
    """Every document once, `clients` connections each sending its next one as soon as it has an answer."""
    lock = threading.Lock()
    state = {"next": 0}
    lat, ids, codes = [], [], {}

    def worker():
        conn = server.connection()
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
            if i >= len(docs):
                return
            status, dt, rid = embed(conn, docs[i])
            with lock:
                lat.append(dt)
                ids.append((rid, dt))
                codes[status] = codes.get(status, 0) + 1

    tokens0 = server.tokens()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    peak = 0.0
    while any(t.is_alive() for t in threads):
        peak = max(peak, server.rss())
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    tokens = server.tokens() - tokens0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3
    return {
        "clients": clients,
        "docs_s": len(docs) / wall,
        "tokens_s": tokens / wall,
        "p50": q(0.50),
        "p95": q(0.95),
        "p99": q(0.99),
        "rss": peak,
        "codes": codes,
        "ids": ids,
    }


def open_loop(server, docs, rate, seconds, senders=256):
    """Requests at `rate` per second for `seconds`, whatever the answers: status counts and RSS."""
    lock = threading.Lock()
    codes, rss = {}, []
    start = time.perf_counter()
    total = int(rate * seconds)
    state = {"next": 0}

    def sender():
        conn = server.connection()
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
            if i >= total:
                return
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            try:
                status, _, _ = embed(conn, docs[i % len(docs)])
            except Exception:
                status = "error"
                conn = server.connection()
            with lock:
                codes[status] = codes.get(status, 0) + 1

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        rss.append(server.rss())
        time.sleep(0.5)
    return codes, rss, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--overload-s", type=int, default=60)
    ap.add_argument("--soak-s", type=int, default=600)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "serve-latest.md"))
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "runtime-cli"], cwd=ROOT, check=True)
    docs = documents(args.docs)

    off_docs, off_tokens = offline(docs, args.threads)
    print(f"offline: {off_docs:.0f} docs/s, {off_tokens:.0f} tokens/s", flush=True)

    server = Server(args.threads)
    closed_loop(server, docs[:100], 8)  # warm-up
    rows = []
    for c in [int(x) for x in args.clients.split(",")]:
        subset = docs[:200] if c == 1 else docs
        r = closed_loop(server, subset, c)
        if c == 1:
            ratios = sorted(dt * 1e3 / server.compute[rid] for rid, dt in r["ids"] if server.compute.get(rid, 0) > 0)
            r["alone"] = statistics.median(ratios) if ratios else float("nan")
        rows.append(r)
        print(f"{c} clients: {r['docs_s']:.0f} docs/s, {r['tokens_s']:.0f} tokens/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, RSS {r['rss']:.0f} MiB {r['codes']}", flush=True)

    capacity = max(r["docs_s"] for r in rows)
    steady = server.rss()
    codes, rss, took = open_loop(server, docs, 4 * capacity, args.overload_s)
    print(f"overload at {4 * capacity:.0f} req/s for {took:.0f} s: {codes}; RSS max {max(rss):.0f} MiB (steady {steady:.0f})", flush=True)
    # Recovery: how long until the 64-client rate is back (2-second windows).
    t0 = time.perf_counter()
    recovered = None
    while time.perf_counter() - t0 < 30:
        r = closed_loop(server, docs[:int(capacity * 2)], 64)
        if r["docs_s"] >= 0.9 * capacity:
            recovered = time.perf_counter() - t0
            break
    print(f"recovered to ≥ 0.9× in {recovered} s", flush=True)

    soak_rss, soak_n, soak_codes = [], 0, {}
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.soak_s:
        r = closed_loop(server, docs, 8)
        soak_n += len(docs)
        for k, v in r["codes"].items():
            soak_codes[k] = soak_codes.get(k, 0) + v
        if time.perf_counter() - t0 > min(60, args.soak_s / 4):
            soak_rss.append(server.rss())
    soak_t = time.perf_counter() - t0
    server.stop()
    flat = (max(soak_rss) - min(soak_rss)) / min(soak_rss) * 100 if soak_rss else float("nan")
    print(f"soak: {soak_n} requests in {soak_t:.0f} s {soak_codes}; RSS {min(soak_rss or [0]):.0f}–{max(soak_rss or [0]):.0f} MiB ({flat:.1f}%)", flush=True)

    lines = [
        "# runtime-cli serve against runtime-cli embed",
        "",
        f"`python3 bench/serve.py --docs {args.docs}` on {os.cpu_count()} CPUs ({os.uname().machine}), CPU backend, the bundled clinical-small; "
        f"{args.docs} MTS-Dialog section notes, one per request to /embed. Offline: `runtime-cli embed` on the same documents, "
        f"{off_docs:.0f} documents/s, {off_tokens:.0f} tokens/s.",
        "",
        "| clients | documents/s | tokens/s | × offline tokens/s | p50 ms | p95 ms | p99 ms | server RSS MiB | statuses |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['docs_s']:.0f} | {r['tokens_s']:.0f} | {r['tokens_s'] / off_tokens:.2f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['rss']:.0f} | {r['codes']} |"
        )
    one = next((r for r in rows if r["clients"] == 1), None)
    lines += [
        "",
        f"- 1 client: median latency / the request's own compute time = {one['alone']:.2f} (goal ≤ 1.2)." if one else "",
        f"- Overload at 4× the measured capacity ({4 * capacity:.0f} requests/s) for {args.overload_s} s: statuses {codes}; "
        f"RSS peak {max(rss):.0f} MiB against {steady:.0f} steady ({(max(rss) / steady - 1) * 100:+.1f}%, goal within 10%); "
        f"back to ≥ 0.9× the 64-client rate {('within %.1f s' % recovered) if recovered is not None else 'not within 30 s'} after the load dropped (goal 5 s).",
        f"- Soak: {soak_n} requests in {soak_t:.0f} s, statuses {soak_codes}; RSS after the first minute {min(soak_rss or [0]):.0f}–{max(soak_rss or [0]):.0f} MiB "
        f"({flat:.1f}% spread, goal within 5%).",
        "",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
