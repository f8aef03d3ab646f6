#!/usr/bin/env python3
"""PyTorch + transformers baseline for `runtime-cli bench`: the same model (ModernBERT from a
config.json, random seeded weights), the same batch, the same output line.

    python3 bench/torch_bench.py --config CONFIG --batch B --seq S [--threads N] [--dtype f32|bf16]
        [--iters K] [--attn sdpa|eager|flash_attention_2] [--device cpu|cuda] [--matmul-peak]

Prints the median tokens/s over K timed forward passes after a warm-up, and the peak RSS of this
process, as its last line: tokens_per_s=<value> peak_rss_mib=<value>; on CUDA also
peak_gpu_mib=<torch.cuda.max_memory_reserved> peak_gpu_alloc_mib=<max_memory_allocated>, and with
--matmul-peak the device's bf16 GEMM rate (8192³, the machine's peak as PyTorch reaches it, and the
model's QKV projection on these tokens) before it.
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
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--matmul-peak", action="store_true")
    p.add_argument("--matmul-rows", type=int, default=None, help="rows of the QKV-shaped GEMM (default: batch × seq)")
    p.add_argument("--train", action="store_true", help="time training steps: MLM loss on 30%% of the tokens, backward, AdamW")
    a = p.parse_args()
    if a.train and a.device != "cpu":
        p.error("--train times CPU training steps (the GPU comparison is inference only)")

    import torch
    from transformers import ModernBertConfig, ModernBertForMaskedLM, ModernBertModel

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    config = ModernBertConfig.from_json_file(a.config)
    config._attn_implementation = a.attn
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    ids = torch.randint(0, min(config.vocab_size, 50000), (a.batch, a.seq))
    mask = torch.ones_like(ids)
    if a.train:
        model = ModernBertForMaskedLM(config).to(dtype).train()
        labels = torch.full_like(ids, -100)
        pos = (torch.arange(a.batch * a.seq) % 10 < 3).view(a.batch, a.seq)
        labels[pos] = ids[pos]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-5)

        def step():
            opt.zero_grad(set_to_none=True)
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            opt.step()

        step()
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        tps = a.batch * a.seq / statistics.median(times)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"torch {torch.__version__} transformers, {a.attn}, {a.dtype}, training, {a.threads} thread(s), batch {a.batch} x {a.seq}")
        print(f"tokens_per_s={tps:.1f} peak_rss_mib={rss:.0f}")
        return
    dev = torch.device(a.device)
    cuda = a.device == "cuda"
    ids, mask = ids.to(dev), mask.to(dev)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    model = ModernBertModel(config).to(dtype).to(dev).eval()
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)  # warm-up
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu()
            sync()
            times.append(time.perf_counter() - t0)
    tps = a.batch * a.seq / statistics.median(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__} transformers, {model.config._attn_implementation}, {a.dtype}, {a.device}, "
          f"{a.threads} thread(s), batch {a.batch} x {a.seq}")
    extra = ""
    if cuda:
        extra = (f" peak_gpu_mib={torch.cuda.max_memory_reserved() / 2**20:.0f}"
                 f" peak_gpu_alloc_mib={torch.cuda.max_memory_allocated() / 2**20:.0f}")
        print(f"device: {torch.cuda.get_device_name()}")
    if a.matmul_peak:
        del model
        h = config.hidden_size
        sq = 8192 if cuda else 1024
        for (n, k, m, what) in [(sq, sq, sq, "square"), (a.matmul_rows or a.batch * a.seq, h, 3 * h, "qkv")]:
            x = torch.randn(n, k, dtype=dtype, device=dev)
            w = torch.randn(m, k, dtype=dtype, device=dev)
            best = 0.0
            for _ in range(6):
                sync()
                t0 = time.perf_counter()
                for _ in range(5):
                    x @ w.T
                sync()
                best = max(best, 5 * 2 * n * k * m / (time.perf_counter() - t0) / 1e9)
            print(f"matmul_{what} {best:.1f} GFLOP/s ({n} x {k} x {m}, {a.dtype})")
    print(f"tokens_per_s={tps:.1f} peak_rss_mib={rss:.0f}{extra}")


if __name__ == "__main__":
    main()
