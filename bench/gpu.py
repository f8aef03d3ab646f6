#!/usr/bin/env python3
"""Side-by-side GPU benchmark: this project's GPU backend (wgpu, and CUDA when built with it)
against PyTorch + transformers on the same GPU, in one run, interleaved case by case.

    python3 bench/gpu.py [--cases 32x512,4x8192] [--config tests/data/modernbert-configs/ModernBERT-base.config.json]
                         [--ours wgpu-f16,cuda-f16] [--gemm auto] [--torch-dtype bf16] [--attn auto]
                         [--rounds 1] [--iters 5] [--out bench/gpu-latest.md] [--no-build] [--cli PATH]

For every case (batch × tokens per sequence, ModernBERT with random seeded weights, the encoder
alone like ModernBertModel) it runs, each in a fresh process:
  - PyTorch: `bench/torch_bench.py --device cuda --dtype bf16` under torch.inference_mode, with
    flash-attention 2 when `flash_attn` imports and sdpa otherwise (`--attn` to force one); its
    tokens/s, peak GPU memory (torch.cuda.max_memory_reserved), and its bf16 GEMM rate on an
    8192³ product (the GPU's bf16 matmul peak as PyTorch reaches it) and on the model's QKV shape;
  - ours: `runtime-cli bench --device gpu|cuda --dtype f16 --activations f16 --matmul-peak` (f16 end
    to end; `*-f32` entries run f32) for each --ours entry:
    tokens/s, the peak device memory our allocator reserved, the GEMM path that
    ran (cubek strategy; whether tensor cores were used or refused, and why), and our GEMM rate on
    the QKV shape.
and prints one table: tokens/s and the ratio ours/PyTorch, peak memory of both, and our GEMM rate
as a share of PyTorch's measured bf16 peak. Without CUDA (this project's CI machines), pass
--torch-device cpu to smoke-test the harness: the numbers then compare nothing.

The CUDA runtime needs `cargo build --release -p runtime-cli --features cuda`; this script builds it
when `cuda-*` is asked for (and `nvcc`/the driver are present). No assertion: the table is the
result.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_PATH = [os.path.join(ROOT, "target", "release", "runtime-cli")]
LAST = re.compile(r"tokens_per_s=([0-9.]+) peak_rss_mib=([0-9.]+)(?: device_reserved_mib=([0-9.]+))?")
NAN = float("nan")


def run(cmd, env=None):
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"failed ({time.time() - t0:.0f} s): {' '.join(cmd)}\n{out.stdout[-2000:]}{out.stderr[-4000:]}", file=sys.stderr)
        return None
    return out.stdout


def gemm_rows(b, s):
    """Rows of the QKV-shaped GEMM both sides time: the case's tokens, at most 16,384."""
    return min(b * s, 16384)


def ours(runtime, config, b, s, iters, gemm):
    device, dtype = runtime.split("-")
    out = run([CLI_PATH[0], "bench", "--config", config, "--batch", str(b), "--seq", str(s), "--device", {"wgpu": "gpu", "cuda": "cuda"}[device],
               "--dtype", dtype, "--activations", dtype, "--iters", str(iters), "--gemm", gemm, "--matmul-peak", "--matmul-rows", str(gemm_rows(b, s))])
    if out is None:
        return None
    m = LAST.search(out.strip().splitlines()[-1])
    path = re.search(r"^GEMM path: (.*)$", out, re.M)
    peak = re.search(r"matmul peak ([0-9.]+) GFLOP/s", out)
    return {"tps": float(m.group(1)), "mem": float(m.group(3)) if m.group(3) else NAN,
            "gemm": float(peak.group(1)) if peak else NAN, "path": path.group(1) if path else "?",
            "device": out.splitlines()[0].split(", batch")[0]}


def torch_case(config, b, s, iters, dtype, attn, device):
    out = run([sys.executable, os.path.join(ROOT, "bench", "torch_bench.py"), "--config", config, "--batch", str(b), "--seq", str(s),
               "--dtype", dtype, "--iters", str(iters), "--attn", attn, "--device", device, "--matmul-peak",
               "--matmul-rows", str(gemm_rows(b, s)),
               "--threads", str(os.cpu_count())])
    if out is None:
        return None
    m = LAST.search(out.strip().splitlines()[-1])
    mem = re.search(r"peak_gpu_mib=([0-9.]+)", out)
    square = re.search(r"matmul_square ([0-9.]+) GFLOP/s", out)
    qkv = re.search(r"matmul_qkv ([0-9.]+) GFLOP/s", out)
    dev = re.search(r"^device: (.*)$", out, re.M)
    return {"tps": float(m.group(1)), "mem": float(mem.group(1)) if mem else NAN, "peak": float(square.group(1)) if square else NAN,
            "qkv": float(qkv.group(1)) if qkv else NAN, "device": dev.group(1) if dev else device, "head": out.splitlines()[0]}


def med(vals, key):
    v = [x[key] for x in vals if x is not None and x[key] == x[key]]
    return statistics.median(v) if v else NAN


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cases", default="32x512,4x8192")
    p.add_argument("--config", default=os.path.join(ROOT, "tests/data/modernbert-configs/ModernBERT-base.config.json"))
    p.add_argument("--ours", default="wgpu-f16,cuda-f16", help="runtimes to time: wgpu-f16, wgpu-f32, cuda-f16, cuda-f32")
    p.add_argument("--gemm", default="auto", help="our GEMM path: auto, unit, cmma, double-cmma")
    p.add_argument("--torch-dtype", default="bf16", choices=["bf16", "f32"])
    p.add_argument("--torch-device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--attn", default="auto", help="PyTorch attention: auto (flash_attention_2 if installed, else sdpa), sdpa, eager")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--out", default=None)
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--cli", default=CLI_PATH[0], help="the runtime-cli to time (default: target/release/runtime-cli, built first)")
    a = p.parse_args()

    CLI_PATH[0] = a.cli
    runtimes = [r for r in a.ours.split(",") if r]
    if not a.no_build:
        features = ["--features", "cuda"] if any(r.startswith("cuda") for r in runtimes) else []
        subprocess.run(["cargo", "build", "--release", "-p", "runtime-cli", "--bin", "runtime-cli"] + features, cwd=ROOT, check=True)
    attn = a.attn
    if attn == "auto":
        fa = subprocess.run([sys.executable, "-c", "import flash_attn"], capture_output=True).returncode == 0
        attn = "flash_attention_2" if fa and a.torch_device == "cuda" else "sdpa"
    cases = [tuple(int(x) for x in c.split("x")) for c in a.cases.split(",") if c]
    started = time.strftime("%Y-%m-%d %H:%M")

    rows = []
    for (b, s) in cases:
        res = {"torch": []}
        res.update({r: [] for r in runtimes})
        for _ in range(a.rounds):
            res["torch"].append(torch_case(a.config, b, s, a.iters, a.torch_dtype, attn, a.torch_device))
            for r in runtimes:
                res[r].append(ours(r, a.config, b, s, a.iters, a.gemm))
        rows.append((b, s, res))
        print(f"[{time.strftime('%H:%M:%S')}] {b}x{s}: torch {med(res['torch'], 'tps'):.0f} tok/s; "
              + ", ".join(f"{r} {med(res[r], 'tps'):.0f}" for r in runtimes), file=sys.stderr, flush=True)

    torch_info = next((x for _, _, res in rows for x in res["torch"] if x), None)
    our_info = {r: next((x for _, _, res in rows for x in res[r] if x), None) for r in runtimes}
    lines = [f"Run started {started}; model {os.path.relpath(a.config, ROOT)} with random seeded weights; "
             f"{a.rounds} round(s), medians of {a.iters} passes after a warm-up.",
             f"PyTorch: {torch_info['head'] if torch_info else 'failed'}" + (f" on {torch_info['device']}" if torch_info else "") + ".",
             ""]
    for r in runtimes:
        i = our_info[r]
        lines.append(f"Ours {r}: {i['device'] if i else 'failed'}; GEMM path: {i['path'] if i else '?'}")
    lines.append("")
    head = "| batch × seq | PyTorch tok/s |" + "".join(f" {r} tok/s | ratio |" for r in runtimes)
    head += " peak GPU MiB PyTorch / " + " / ".join(runtimes) + " |"
    head += " GEMM GFLOP/s (QKV shape, min(tokens, 16384) rows) PyTorch / " + " / ".join(runtimes) + " | PyTorch GEMM peak (8192³) | " + " / ".join(runtimes) + " share of peak |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for (b, s, res) in rows:
        t = med(res["torch"], "tps")
        line = f"| {b} × {s} | {t:.0f} |"
        for r in runtimes:
            o = med(res[r], "tps")
            line += f" {o:.0f} | {o / t:.2f}× |"
        line += f" {med(res['torch'], 'mem'):.0f} / " + " / ".join(f"{med(res[r], 'mem'):.0f}" for r in runtimes) + " |"
        peak = med(res["torch"], "peak")
        line += f" {med(res['torch'], 'qkv'):.0f} / " + " / ".join(f"{med(res[r], 'gemm'):.0f}" for r in runtimes) + f" | {peak:.0f} |"
        line += " " + " / ".join(f"{100 * med(res[r], 'gemm') / peak:.1f}%" for r in runtimes) + " |"
        lines.append(line)
    table = "\n".join(lines)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
