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
3. Overload: long notes (eight sections each) at 4× the rate 64 clients reach with them, for
   --overload-s seconds: only 200s and 429s are acceptable; RSS against its value before; then
   the time until the 64-client rate on short notes, in one-second windows, is back to 0.9× what
   the same windows ran at before.
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
import socket
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
                m = re.match(r"request id=(\d+) .* compute_ms=([0-9.]+) total_ms=([0-9.]+)", line)
                if m:
                    self.compute[int(m.group(1))] = (float(m.group(2)), float(m.group(3)))

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120):
            sys.exit("the server did not start")

    def connection(self):
        return Conn(self.host, self.port)

    def tokens(self):
        c = http.client.HTTPConnection(self.host, int(self.port), timeout=120)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        return sum(float(m.group(1)) for m in re.finditer(r'^serve_tokens_total\{model="clinical-small"\} ([0-9.e+]+)', text, re.M))

    def rss(self):
        return rss_mib(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


class Conn:
    """A keep-alive HTTP/1.1 connection that sends prepared bytes and reads just the status, the
    headers it needs and the body: a lean client, since it shares the machine's cores with the
    server."""

    def __init__(self, host, port):
        self.addr = (host, int(port))
        self.sock = None
        self.buf = b""

    def open(self):
        self.sock = socket.create_connection(self.addr, timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def post(self, request):
        if self.sock is None:
            self.open()
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = dict(l.split(b": ", 1) for l in lines[1:] if b": " in l)
        length = int(headers.get(b"content-length", b"0"))
        while len(rest) < length:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            rest += chunk
        self.buf = rest[length:]
        return status, int(headers.get(b"x-request-id", b"0"))


def request_bytes(text):
    body = json.dumps({"inputs": text}).encode()
    return b"POST /embed HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def embed(conn, request):
    t0 = time.perf_counter()
    status, rid = conn.post(request)
    return status, time.perf_counter() - t0, rid


def closed_loop(server, docs, clients):
    """Every document once, `clients` connections each sending its next one as soon as it has an answer."""
    requests = [request_bytes(d) for d in docs]
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
            status, dt, rid = embed(conn, requests[i])
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
        # Answered documents only: a 429 is quick and would inflate the rate.
        "docs_s": codes.get(200, 0) / wall,
        "tokens_s": tokens / wall,
        "p50": q(0.50),
        "p95": q(0.95),
        "p99": q(0.99),
        "rss": peak,
        "codes": codes,
        "ids": ids,
    }


def open_loop(server, docs, rate, seconds):
    """Requests at `rate` per second for `seconds`, each on its own connection, whatever the
    answers (an open loop: a slow answer does not slow the sending): status counts and RSS."""
    import asyncio

    requests = [request_bytes(d).replace(b"Host: bench\r\n", b"Host: bench\r\nConnection: close\r\n") for d in docs]
    codes, rss = {}, []

    async def one(req):
        try:
            reader, writer = await asyncio.open_connection(server.host, int(server.port))
            writer.write(req)
            await writer.drain()
            line = await reader.readline()
            status = int(line.split()[1])
            await reader.read()
            writer.close()
        except Exception:
            status = "error"
        codes[status] = codes.get(status, 0) + 1

    async def run():
        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            if i % max(1, int(rate / 2)) == 0:
                rss.append(server.rss())
            tasks.append(asyncio.ensure_future(one(requests[i % len(requests)])))
        await asyncio.gather(*tasks)
        return time.perf_counter() - start

    took = asyncio.run(run())
    rss.append(server.rss())
    return codes, rss, took


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
            time.sleep(0.5)  # the last log lines
            known = [(dt, server.compute[rid]) for rid, dt in r["ids"] if rid in server.compute and server.compute[rid][0] > 0]
            r["alone"] = statistics.median(dt * 1e3 / c for dt, (c, _) in known) if known else float("nan")
            r["alone_server"] = statistics.median(t / c for _, (c, t) in known) if known else float("nan")
        rows.append(r)
        print(f"{c} clients: {r['docs_s']:.0f} docs/s, {r['tokens_s']:.0f} tokens/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, RSS {r['rss']:.0f} MiB {r['codes']}", flush=True)

    capacity = max(r["docs_s"] for r in rows)
    # Throughput in windows of about one second (64 clients, short notes), measured the same way
    # before the overload and after it.
    window = docs[:max(64, int(capacity))]
    baseline = statistics.median(closed_loop(server, window, 64)["docs_s"] for _ in range(5))
    # Overload with long notes (eight sections each): a Python client cannot send short ones at
    # four times this machine's capacity, and it shares the machine's cores with the server.
    longs = [" ".join(docs[i:i + 8]) for i in range(0, len(docs) - 7, 8)]
    long_capacity = closed_loop(server, longs, 64)["docs_s"]
    steady = server.rss()
    codes, rss, took = open_loop(server, longs, 4 * long_capacity, args.overload_s)
    print(f"overload at {4 * long_capacity:.1f} req/s of long notes for {took:.0f} s: {codes}; RSS max {max(rss):.0f} MiB (steady {steady:.0f})", flush=True)
    # Recovery: from the moment the load stops, windows until one runs at ≥ 0.9× the baseline.
    t0 = time.perf_counter()
    recovered = None
    while time.perf_counter() - t0 < 30:
        r = closed_loop(server, window, 64)
        if r["docs_s"] >= 0.9 * baseline:
            recovered = time.perf_counter() - t0
            break
    print(f"recovered to ≥ 0.9× of {baseline:.0f} docs/s in {recovered} s", flush=True)

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
        f"- 1 client: median of (latency seen by the client / the request's own compute time in the server) = {one['alone']:.2f} (goal ≤ 1.2); "
        f"inside the server (arrival to answer, without the client's own HTTP and JSON work) {one['alone_server']:.2f}." if one else "",
        f"- Overload at 4× the measured capacity for long notes (eight sections each, {long_capacity:.1f} per second with 64 clients), {4 * long_capacity:.0f} requests/s for {args.overload_s} s: statuses {codes}; "
        f"RSS peak {max(rss):.0f} MiB: {(max(rss) / steady - 1) * 100:+.1f}% against the {steady:.0f} MiB before it, "
        f"{(max(rss) / max(soak_rss or [steady]) - 1) * 100:+.1f}% against the {max(soak_rss or [steady]):.0f} MiB the server holds through the soak below (goal within 10% of the steady value); "
        f"back to ≥ 0.9× the 64-client rate ({baseline:.0f} documents/s in one-second windows before the overload) {('within %.1f s' % recovered) if recovered is not None else 'not within 30 s'} after the load dropped, the first window included (goal 5 s).",
        f"- Soak: {soak_n} requests in {soak_t:.0f} s, statuses {soak_codes}; RSS after the first minute {min(soak_rss or [0]):.0f}–{max(soak_rss or [0]):.0f} MiB "
        f"({flat:.1f}% spread, goal within 5%).",
        "",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
