#!/usr/bin/env python3
"""ONNX Runtime baseline for `bench/run.py`: the base config's ModernBERT with seeded random
weights (PyTorch's own initialisation) exported with `torch.onnx`, in float32 and in int8 through
ONNX Runtime's dynamic quantisation (`quantize_dynamic`: int8 weights, activations quantised at run
time, the path optimum and sentence-transformers' ONNX int8 backend take), timed like
`runtime-cli bench`, and the accuracy of each int8 path on real clinical notes.

    python3 bench/ort_bench.py prepare --config CONFIG --out DIR     (random weights)
    python3 bench/ort_bench.py prepare --model FOLDER --out DIR      (a trained model, e.g. models/clinical-small)
        DIR/model: the Hugging Face folder (safetensors; `runtime-cli --model DIR/model` loads it),
        DIR/model.onnx (checked against PyTorch), DIR/model-int8.onnx
    python3 bench/ort_bench.py run --onnx DIR/model.onnx --batch B --seq S [--threads N] [--iters K]
        last line: tokens_per_s=<value> peak_rss_mib=<value>
    python3 bench/ort_bench.py accuracy --dir DIR [--notes N]
        cosine of mean-pooled embeddings to float32 for every note, ONNX Runtime int8 against
        ONNX Runtime f32 and ours int8 against ours f32 (runtime-cli embed), min and mean

Needs torch, transformers, onnx, onnxruntime (pip install torch transformers onnx onnxruntime).
Nothing is downloaded: the tokenizer is tests/data/modernbert-tokenizer.
"""
import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = REPO / "tests/data/modernbert-tokenizer"
NOTES = REPO / "tests/data/aci-bench/valid.csv"
CLI = REPO / "target/release/runtime-cli"


def prepare(a):
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import ModernBertConfig, ModernBertModel

    out = Path(a.out)
    (out / "model").mkdir(parents=True, exist_ok=True)
    if a.model:
        # The encoder of a trained folder (any head dropped), in float32.
        model = ModernBertModel.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager").eval()
    else:
        config = ModernBertConfig.from_json_file(a.config)
        config._attn_implementation = "eager"  # exportable with the TorchScript exporter
        torch.manual_seed(0)
        model = ModernBertModel(config).eval()
    model.save_pretrained(out / "model", safe_serialization=True)
    cfg = json.loads((out / "model/config.json").read_text())
    cfg.pop("_attn_implementation", None)
    cfg["dtype"] = "float32"
    (out / "model/config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = Path(a.model) / f if a.model else TOKENIZER_DIR / f
        if src.exists():
            shutil.copy(src, out / "model" / f)

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    vocab = model.config.vocab_size
    ids = torch.randint(5, min(vocab, 50000), (2, 64))
    onnx_path = out / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(
            Wrap(model), (ids, torch.ones_like(ids)), str(onnx_path),
            input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "last_hidden_state": {0: "batch", 1: "seq"}},
            opset_version=17, dynamo=False, do_constant_folding=True,
        )
    onnx.checker.check_model(str(onnx_path))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for (b, s) in [(1, 37), (3, 200)]:
        ids = torch.randint(5, min(vocab, 50000), (b, s))
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.numpy()
        got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy())})[0]
        err = float(np.abs(got - want).max())
        print(f"onnx check {b}x{s}: max |onnxruntime - torch| = {err:.2e}")
        assert err < 1e-3, err
    quantize_dynamic(str(onnx_path), str(out / "model-int8.onnx"), weight_type=QuantType.QInt8)
    print(f"{out}: model/, model.onnx ({onnx_path.stat().st_size / 2**20:.0f} MiB), "
          f"model-int8.onnx ({(out / 'model-int8.onnx').stat().st_size / 2**20:.0f} MiB)")


def session(path, threads):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def run(a):
    import numpy as np
    sess = session(a.onnx, a.threads)
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 50000, (a.batch, a.seq), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    sess.run(None, feed)  # warm-up
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"onnxruntime {Path(a.onnx).name}, batch {a.batch} x {a.seq}, {a.threads} thread(s): median {med:.3f} s")
    print(f"tokens_per_s={a.batch * a.seq / med:.1f} peak_rss_mib={rss:.0f}")


def accuracy(a):
    import numpy as np
    from tokenizers import Tokenizer
    d = Path(a.dir)
    tok = Tokenizer.from_file(str(d / "model/tokenizer.json"))
    with open(NOTES, newline="") as f:
        notes = [r["note"] for r in csv.DictReader(f)][: a.notes]
    # Each note cut to one window of runtime-cli's (at most 510 tokens with [CLS] and [SEP]), at a
    # token boundary of the text, so that both runtimes tokenise the same text.
    texts, seqs = [], []
    for n in notes:
        enc = tok.encode(n)
        if len(enc.ids) > 510:
            n = n[: enc.offsets[500][1]]
        texts.append(n)
        seqs.append(tok.encode(n).ids)

    def ort_embed(path):
        sess = session(path, os.cpu_count())
        out = []
        for ids in seqs:
            x = np.array([ids], dtype=np.int64)
            h = sess.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})[0][0]
            out.append(h.mean(0))
        return np.array(out)

    def ours(dtype):
        with tempfile.TemporaryDirectory() as t:
            # The same token windows, as JSONL of text the CLI tokenises the same way.
            docs = Path(t) / "notes.jsonl"
            docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
            npy = Path(t) / "e.npy"
            subprocess.run([str(CLI), "embed", str(docs), "--model", str(d / "model"), "--device", "cpu", "--dtype", dtype,
                            "--pooling", "mean", "-o", str(npy)], check=True, capture_output=True)
            return np.load(npy)

    def cos(x, y):
        return (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)

    def compare(ref, got):
        # A random model's embeddings share one large component (two different notes are near
        # cosine 1 too); centred: each minus the reference's mean over the notes, what tells the
        # notes apart.
        c, mu = cos(ref, got), ref.mean(0)
        cc = cos(ref - mu, got - mu)
        return {"min": float(c.min()), "mean": float(c.mean()), "centred_min": float(cc.min())}

    res = {}
    f32, i8 = ort_embed(d / "model.onnx"), ort_embed(d / "model-int8.onnx")
    o32, o8 = ours("f32"), ours("int8")
    res["ort_int8"] = compare(f32, i8)
    res["ours_int8"] = compare(o32, o8)
    res["ours_f32_vs_ort_f32"] = compare(f32, o32)
    res["notes"] = len(seqs)
    print(json.dumps(res))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("prepare")
    q.add_argument("--config", default=str(REPO / "tests/data/modernbert-configs/ModernBERT-base.config.json"))
    q.add_argument("--model", default=None, help="a trained model folder instead of random weights")
    q.add_argument("--out", required=True)
    q = sub.add_parser("run")
    q.add_argument("--onnx", required=True)
    q.add_argument("--batch", type=int, required=True)
    q.add_argument("--seq", type=int, required=True)
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--iters", type=int, default=3)
    q = sub.add_parser("accuracy")
    q.add_argument("--dir", required=True)
    q.add_argument("--notes", type=int, default=20)
    a = p.parse_args()
    {"prepare": prepare, "run": run, "accuracy": accuracy}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
