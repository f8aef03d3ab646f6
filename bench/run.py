#!/usr/bin/env python3
"""Side-by-side CPU benchmark: this project's CPU backend (f32, bf16, int8) against PyTorch +
transformers and ONNX Runtime (f32, and int8 by its dynamic quantisation) on the same machine, in
one run, the implementations interleaved case by case (the VM's speed drifts from minute to
minute, so only ratios measured together mean anything).

    python3 bench/run.py [--cases 8x128,4x512,1x2048,1x8192] [--threads 1,2] [--rounds 1]
                         [--train-cases 4x512] [--config tests/data/modernbert-configs/ModernBERT-base.config.json]
                         [--torch-bf16] [--no-ort] [--ort-dir target/bench-ort] [--out bench/latest.md]

ONNX Runtime runs the base config's ModernBERT exported with torch.onnx (`bench/ort_bench.py
prepare`, checked against PyTorch, made once into --ort-dir); the accuracy of both int8 paths is
measured on real notes with the same weights (`ort_bench.py accuracy`: cosine to f32).

The training rows time a step of the masked-LM (forward, backward, AdamW; 30% of the tokens
labelled) with `trainer bench` against the same step in PyTorch (`torch_bench.py --train`).

Needs `cargo` (builds target/release/runtime-cli) and, for the baseline, a Python with torch and
transformers (`pip install torch transformers`); without them only our numbers are printed.
Every measurement runs in a fresh process: median tokens/s over a few passes after a warm-up,
and the process's peak RSS. No assertion: the table is the result.
"""
import argparse
import json
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


def have_ort():
    return subprocess.run([sys.executable, "-c", "import onnxruntime, onnx, torch, transformers"], capture_output=True).returncode == 0


ORT = os.path.join(ROOT, "bench", "ort_bench.py")


def ort_case(onnx, b, s, threads, iters):
    """tokens/s and peak RSS of ONNX Runtime, or NaN where it fails (out of memory at 8,192 tokens)."""
    out = subprocess.run([sys.executable, ORT, "run", "--onnx", onnx, "--batch", str(b), "--seq", str(s),
                          "--threads", str(threads), "--iters", str(iters)], capture_output=True, text=True)
    m = LINE.search(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else None
    if not m:
        print(f"onnxruntime {os.path.basename(onnx)} {b}x{s} failed (exit {out.returncode}): {out.stderr.strip()[-300:]}", file=sys.stderr)
        return float("nan"), float("nan")
    return float(m.group(1)), float(m.group(2))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cases", default="8x128,4x512,1x2048,1x8192")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--train-cases", default="4x512", help="training-step cases ('' for none)")
    p.add_argument("--config", default=os.path.join(ROOT, "tests/data/modernbert-configs/ModernBERT-base.config.json"))
    p.add_argument("--torch-bf16", action="store_true", help="also time PyTorch in bf16")
    p.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    p.add_argument("--no-ort", action="store_true", help="leave ONNX Runtime out")
    p.add_argument("--ort-dir", default=os.path.join(ROOT, "target", "bench-ort"), help="the exported models (made if missing)")
    a = p.parse_args()

    subprocess.run(["cargo", "build", "--release", "-p", "runtime-cli", "--bin", "runtime-cli", "-p", "trainer", "--bin", "trainer"],
                   cwd=ROOT, check=True)
    torch_ok = have_torch()
    if not torch_ok:
        print("note: torch/transformers not importable: printing this project's numbers only", file=sys.stderr)
    ort_ok = not a.no_ort and have_ort()
    if not a.no_ort and not ort_ok:
        print("note: onnxruntime/onnx not importable: no ONNX Runtime columns", file=sys.stderr)
    onnx32, onnx8 = os.path.join(a.ort_dir, "model.onnx"), os.path.join(a.ort_dir, "model-int8.onnx")
    if ort_ok and not os.path.exists(onnx8):
        subprocess.run([sys.executable, ORT, "prepare", "--config", a.config, "--out", a.ort_dir], check=True)
    cases = [tuple(int(x) for x in c.split("x")) for c in a.cases.split(",") if c]
    threads = [int(t) for t in a.threads.split(",")]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    flags = open("/proc/cpuinfo").read()
    isa = " + ".join(n for f, n in [("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("avx512_vnni", "AVX512-VNNI"),
                                     ("avx_vnni", "AVX-VNNI")] if f" {f}" in flags) or "no AVX-512"
    started = time.strftime("%Y-%m-%d %H:%M")

    rows = []
    for t in (threads if cases else []):
        peak = torch_matmul_peak(t, "f32") if torch_ok else float("nan")
        peak_bf16 = torch_matmul_peak(t, "bf16") if torch_ok else float("nan")
        for (b, s) in cases:
            iters = 1 if b * s >= 8192 else 3
            res = {k: [] for k in ["torch", "torch_rss", "torch_bf16", "ort32", "ort32_rss", "ort8", "ort8_rss"]
                   + [f"{d}{x}" for d in ("f32", "bf16", "int8") for x in ("", "_rss", "_gf", "_peak")]}
            for _ in range(a.rounds):
                # Interleaved: torch, ORT f32, ORT int8, ours f32, bf16, int8 (, torch bf16).
                if torch_ok:
                    tps, rss = torch_case(a.config, b, s, t, "f32", iters)
                    res["torch"].append(tps); res["torch_rss"].append(rss)
                if ort_ok:
                    for key, path in (("ort32", onnx32), ("ort8", onnx8)):
                        tps, rss = ort_case(path, b, s, t, iters)
                        res[key].append(tps); res[f"{key}_rss"].append(rss)
                for d in ("f32", "bf16", "int8"):
                    tps, rss, gf, pk = ours(a.config, b, s, t, d, iters)
                    res[d].append(tps); res[f"{d}_rss"].append(rss); res[f"{d}_gf"].append(gf); res[f"{d}_peak"].append(pk)
                if torch_ok and a.torch_bf16:
                    res["torch_bf16"].append(torch_case(a.config, b, s, t, "bf16", iters)[0])
            med = {k: (statistics.median(v) if v else float("nan")) for k, v in res.items()}
            rows.append((t, b, s, med, peak, peak_bf16))
            print(f"[{time.strftime('%H:%M:%S')}] {t} thread(s) {b}x{s}: torch {med['torch']:.1f}, ORT f32 {med['ort32']:.1f}, "
                  f"ORT int8 {med['ort8']:.1f}, ours f32 {med['f32']:.1f}, bf16 {med['bf16']:.1f}, int8 {med['int8']:.1f} tokens/s",
                  file=sys.stderr, flush=True)

    lines = [f"Machine: {cpu} ({isa}), {os.cpu_count()} cores; run started {started}; model: "
             f"{os.path.relpath(a.config, ROOT)} with random weights; {a.rounds} round(s), medians. ORT: ONNX Runtime "
             f"(int8: `quantize_dynamic`); ×: the ratio of the two tokens/s named; a blank ORT cell: it failed (out of memory).", ""]
    head = ("| threads | batch × seq | PyTorch f32 tok/s | ORT f32 tok/s | ORT int8 tok/s | ours f32 tok/s | ours bf16 tok/s |"
            " ours int8 tok/s | f32 / PyTorch | f32 / ORT f32 | bf16 / PyTorch | int8 / ORT int8 | int8 / our bf16 |"
            " ours f32 / bf16 / int8 GFLOP/s | matmul peak ours f32 / bf16 / int8 | PyTorch matmul peak f32 / bf16 |"
            " peak RSS MiB PyTorch / ORT f32 / ORT int8 / f32 / bf16 / int8 |")
    if a.torch_bf16:
        head += " PyTorch bf16 tok/s |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)] if rows else []

    def ratio(x, y):
        return f"{x / y:.2f}×" if x == x and y == y else ""

    def num(x, fmt=".1f"):
        return format(x, fmt) if x == x else ""

    for (t, b, s, m, peak, peak_bf16) in rows:
        line = (f"| {t} | {b} × {s} | {num(m['torch'])} | {num(m['ort32'])} | {num(m['ort8'])} | {m['f32']:.1f} | {m['bf16']:.1f} |"
                f" {m['int8']:.1f} | {ratio(m['f32'], m['torch'])} | {ratio(m['f32'], m['ort32'])} | {ratio(m['bf16'], m['torch'])} |"
                f" {ratio(m['int8'], m['ort8'])} | {ratio(m['int8'], m['bf16'])} |"
                f" {m['f32_gf']:.0f} / {m['bf16_gf']:.0f} / {m['int8_gf']:.0f} | {m['f32_peak']:.0f} / {m['bf16_peak']:.0f} / {m['int8_peak']:.0f} |"
                f" {num(peak, '.0f')} / {num(peak_bf16, '.0f')} |"
                f" {num(m['torch_rss'], '.0f')} / {num(m['ort32_rss'], '.0f')} / {num(m['ort8_rss'], '.0f')} / {m['f32_rss']:.0f} / {m['bf16_rss']:.0f} / {m['int8_rss']:.0f} |")
        if a.torch_bf16:
            line += f" {m['torch_bf16']:.1f} |"
        lines.append(line)
    if ort_ok and rows:
        lines += ["", "Accuracy of int8: cosine of the mean-pooled embeddings of 20 ACI-BENCH notes (cut to one 510-token window) to the "
                      "same runtime's f32, on the same weights (ours load the exported folder's safetensors); centred: each embedding "
                      "minus the f32 embeddings' mean over the notes (what tells the notes apart; a random model's embeddings share "
                      "one large component):", "",
                  "| model | ORT int8 min / mean / centred min | ours int8 min / mean / centred min | ours f32 vs ORT f32 (centred min) |",
                  "|---|---|---|---|"]
        cs_dir = a.ort_dir + "-clinical-small"
        if not os.path.exists(os.path.join(cs_dir, "model-int8.onnx")):
            subprocess.run([sys.executable, ORT, "prepare", "--model", os.path.join(ROOT, "models", "clinical-small"), "--out", cs_dir], check=True)
        for d, name in ((a.ort_dir, "random-weight base (this table's model)"), (cs_dir, "models/clinical-small (trained)")):
            out = subprocess.run([sys.executable, ORT, "accuracy", "--dir", d], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"accuracy failed: {out.stderr[-500:]}", file=sys.stderr)
                continue
            acc = json.loads(out.stdout.strip().splitlines()[-1])
            f = lambda r: f"{r['min']:.6f} / {r['mean']:.6f} / {r['centred_min']:.6f}"
            lines.append(f"| {name} | {f(acc['ort_int8'])} | {f(acc['ours_int8'])} | {acc['ours_f32_vs_ort_f32']['centred_min']:.7f} |")
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
