#!/usr/bin/env python3
"""PyTorch + transformers baseline for `runtime-cli bench`: the same model (ModernBERT from a
config.json, random seeded weights), the same batch, the same output line.

    python3 bench/torch_bench.py --config CONFIG --batch B --seq S [--threads N] [--dtype f32|bf16]
        [--iters K] [--attn sdpa|eager]

Prints the median tokens/s over K timed forward passes after a warm-up, and the peak RSS of this
process, as its last line: tokens_per_s=<value> peak_rss_mib=<value>
"""
import argparse
import resource
import statistics
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--attn", default="sdpa")
    a = p.parse_args()

    import torch
    from transformers import ModernBertConfig, ModernBertModel

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    config = ModernBertConfig.from_json_file(a.config)
    config._attn_implementation = a.attn
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    model = ModernBertModel(config).to(dtype).eval()
    ids = torch.randint(0, 50000, (a.batch, a.seq))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)  # warm-up
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            times.append(time.perf_counter() - t0)
    tps = a.batch * a.seq / statistics.median(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__} transformers, {a.attn}, {a.dtype}, {a.threads} thread(s), batch {a.batch} x {a.seq}")
    print(f"tokens_per_s={tps:.1f} peak_rss_mib={rss:.0f}")


if __name__ == "__main__":
    main()
