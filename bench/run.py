#!/usr/bin/env python3
"""Side-by-side CPU benchmark: this project's CPU backend against PyTorch + transformers on the
same machine, in one run, the implementations interleaved case by case (the VM's speed drifts
from minute to minute, so only ratios measured together mean anything).

    python3 bench/run.py [--cases 8x128,4x512,1x2048,1x8192] [--threads 1,2] [--rounds 1]
                         [--train-cases 4x512] [--config tests/data/modernbert-configs/ModernBERT-base.config.json]
                         [--torch-bf16] [--out bench/latest.md]

The training rows time a step of the masked-LM (forward, backward, AdamW; 30% of the tokens
labelled) with `trainer bench` against the same step in PyTorch (`torch_bench.py --train`).

Needs `cargo` (builds target/release/runtime-cli) and, for the baseline, a Python with torch and
transformers (`pip install torch transformers`); without them only our numbers are printed.
Every measurement runs in a fresh process: median tokens/s over a few passes after a warm-up,
and the process's peak RSS. No assertion: the table is the result.
"""
import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "target", "release", "runtime-cli")
TRAINER = os.path.join(ROOT, "target", "release", "trainer")
LINE = re.compile(r"tokens_per_s=([0-9.]+) peak_rss_mib=([0-9.]+)")


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    m = LINE.search(out.stdout.strip().splitlines()[-1])
    return float(m.group(1)), float(m.group(2)), out.stdout


def ours(config, b, s, threads, dtype, iters):
    tps, rss, out = run([CLI, "bench", "--config", config, "--batch", str(b), "--seq", str(s),
                         "--threads", str(threads), "--dtype", dtype, "--iters", str(iters), "--matmul-peak"])
    gflops = float(re.search(r"([0-9.]+) GFLOP/s useful", out).group(1))
    peak = float(re.search(r"matmul peak ([0-9.]+) GFLOP/s", out).group(1))
    return tps, rss, gflops, peak


def ours_training(config, b, s, threads, iters):
    tps, rss, _ = run([TRAINER, "bench", "--config", config, "--batch", str(b), "--seq", str(s),
                       "--threads", str(threads), "--iters", str(iters)])
    return tps, rss


def torch_case(config, b, s, threads, dtype, iters, train=False):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    tps, rss, _ = run([sys.executable, os.path.join(ROOT, "bench", "torch_bench.py"), "--config", config,
                       "--batch", str(b), "--seq", str(s), "--threads", str(threads), "--dtype", dtype,
                       "--iters", str(iters)] + (["--train"] if train else []), env)
    return tps, rss


def torch_matmul_peak(threads, dtype):
    code = f"""
import torch, time
torch.set_num_threads({threads})
dt = torch.bfloat16 if "{dtype}" == "bf16" else torch.float32
a = torch.randn(1024, 768, dtype=dt); w = torch.randn(2304, 768, dtype=dt)
best = 0
for _ in range(5):
    t0 = time.perf_counter()
    for _ in range(5): a @ w.T
    best = max(best, 5 * 2 * 1024 * 768 * 2304 / (time.perf_counter() - t0) / 1e9)
print(f"{{best:.1f}}")
"""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return float(out.stdout.strip()) if out.returncode == 0 else float("nan")


def have_torch():
    return subprocess.run([sys.executable, "-c", "import torch, transformers"], capture_output=True).returncode == 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cases", default="8x128,4x512,1x2048,1x8192")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--train-cases", default="4x512", help="training-step cases ('' for none)")
    p.add_argument("--config", default=os.path.join(ROOT, "tests/data/modernbert-configs/ModernBERT-base.config.json"))
    p.add_argument("--torch-bf16", action="store_true", help="also time PyTorch in bf16")
    p.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    a = p.parse_args()

    subprocess.run(["cargo", "build", "--release", "-p", "runtime-cli", "--bin", "runtime-cli", "-p", "trainer", "--bin", "trainer"],
                   cwd=ROOT, check=True)
    torch_ok = have_torch()
    if not torch_ok:
        print("note: torch/transformers not importable: printing this project's numbers only", file=sys.stderr)
    cases = [tuple(int(x) for x in c.split("x")) for c in a.cases.split(",") if c]
    threads = [int(t) for t in a.threads.split(",")]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    flags = open("/proc/cpuinfo").read()
    isa = "AVX-512 + AVX512-BF16" if "avx512_bf16" in flags else ("AVX-512" if "avx512f" in flags else "no AVX-512")
    started = time.strftime("%Y-%m-%d %H:%M")

    rows = []
    for t in (threads if cases else []):
        peak = torch_matmul_peak(t, "f32") if torch_ok else float("nan")
        peak_bf16 = torch_matmul_peak(t, "bf16") if torch_ok else float("nan")
        for (b, s) in cases:
            iters = 1 if b * s >= 8192 else 3
            res = {"torch": [], "torch_rss": [], "f32": [], "f32_rss": [], "f32_gf": [], "bf16": [], "bf16_rss": [],
                   "bf16_gf": [], "torch_bf16": [], "f32_peak": [], "bf16_peak": []}
            for _ in range(a.rounds):
                # Interleaved: torch, ours f32, ours bf16 (, torch bf16).
                if torch_ok:
                    tps, rss = torch_case(a.config, b, s, t, "f32", iters)
                    res["torch"].append(tps); res["torch_rss"].append(rss)
                tps, rss, gf, pk = ours(a.config, b, s, t, "f32", iters)
                res["f32"].append(tps); res["f32_rss"].append(rss); res["f32_gf"].append(gf); res["f32_peak"].append(pk)
                tps, rss, gf, pk = ours(a.config, b, s, t, "bf16", iters)
                res["bf16"].append(tps); res["bf16_rss"].append(rss); res["bf16_gf"].append(gf); res["bf16_peak"].append(pk)
                if torch_ok and a.torch_bf16:
                    res["torch_bf16"].append(torch_case(a.config, b, s, t, "bf16", iters)[0])
            med = {k: (statistics.median(v) if v else float("nan")) for k, v in res.items()}
            rows.append((t, b, s, med, peak, peak_bf16))
            print(f"[{time.strftime('%H:%M:%S')}] {t} thread(s) {b}x{s}: torch {med['torch']:.1f}, "
                  f"ours f32 {med['f32']:.1f}, bf16 {med['bf16']:.1f} tokens/s", file=sys.stderr, flush=True)

    lines = [f"Machine: {cpu} ({isa}), {os.cpu_count()} cores; run started {started}; model: "
             f"{os.path.relpath(a.config, ROOT)} with random weights; {a.rounds} round(s), medians.", ""]
    head = "| threads | batch × seq | PyTorch f32 tok/s | ours f32 tok/s | f32 ratio | ours bf16 tok/s | bf16 ratio |"
    head += (" ours f32 / bf16 GFLOP/s | matmul peak ours f32 / bf16 GFLOP/s | PyTorch matmul peak f32 / bf16 |"
             " peak RSS MiB PyTorch / f32 / bf16 |")
    if a.torch_bf16:
        head += " PyTorch bf16 tok/s |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)] if rows else []
    for (t, b, s, m, peak, peak_bf16) in rows:
        r32 = m["f32"] / m["torch"] if m["torch"] == m["torch"] else float("nan")
        r16 = m["bf16"] / m["torch"] if m["torch"] == m["torch"] else float("nan")
        line = (f"| {t} | {b} × {s} | {m['torch']:.1f} | {m['f32']:.1f} | {r32:.2f}× | {m['bf16']:.1f} | {r16:.2f}× |"
                f" {m['f32_gf']:.0f} / {m['bf16_gf']:.0f} | {m['f32_peak']:.0f} / {m['bf16_peak']:.0f} |"
                f" {peak:.0f} / {peak_bf16:.0f} | {m['torch_rss']:.0f} / {m['f32_rss']:.0f} / {m['bf16_rss']:.0f} |")
        if a.torch_bf16:
            line += f" {m['torch_bf16']:.1f} |"
        lines.append(line)
    train_cases = [tuple(int(x) for x in c.split("x")) for c in a.train_cases.split(",") if c]
    if train_cases:
        lines += ["", "Training step (forward, backward, AdamW; 30% of the tokens labelled), float32:", "",
                  "| threads | batch × seq | PyTorch tok/s | ours tok/s | ratio | peak RSS MiB PyTorch / ours |",
                  "|---|---|---|---|---|---|"]
        for t in threads:
            for (b, s_) in train_cases:
                res = {"torch": [], "torch_rss": [], "ours": [], "ours_rss": []}
                for _ in range(a.rounds):
                    if torch_ok:
                        tps, rss = torch_case(a.config, b, s_, t, "f32", 2, train=True)
                        res["torch"].append(tps); res["torch_rss"].append(rss)
                    tps, rss = ours_training(a.config, b, s_, t, 2)
                    res["ours"].append(tps); res["ours_rss"].append(rss)
                m = {k: (statistics.median(v) if v else float("nan")) for k, v in res.items()}
                print(f"[{time.strftime('%H:%M:%S')}] training {t} thread(s) {b}x{s_}: torch {m['torch']:.1f}, ours {m['ours']:.1f}",
                      file=sys.stderr, flush=True)
                ratio = m["ours"] / m["torch"] if m["torch"] == m["torch"] else float("nan")
                lines.append(f"| {t} | {b} × {s_} | {m['torch']:.1f} | {m['ours']:.1f} | {ratio:.2f}× | {m['torch_rss']:.0f} / {m['ours_rss']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
