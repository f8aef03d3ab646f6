#!/usr/bin/env python3
"""Make the benchmark model: a seeded random-weight ModernBertForTokenClassification with the real
ModernBERT tokenizer, saved as a Hugging Face folder (what our page loads) plus onnx/model.onnx
(what transformers.js loads), and texts.json: for each benchmark length N, a text that tokenizes to
exactly N-2 content tokens (N with [CLS] and [SEP]), cut from examples/notes.txt repeated.

    python3 bench/browser/make_model.py [--out /tmp/bench-browser/model] [--layers 6] ...

Needs torch, transformers, tokenizers, onnx (pip install onnx onnxscript onnxruntime).
Nothing is downloaded: the tokenizer is tests/data/modernbert-tokenizer.
"""
import argparse
import json
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import ModernBertConfig, ModernBertForTokenClassification

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "tests/data/modernbert-tokenizer"
NOTES = REPO / "examples/notes.txt"
# The label scheme of the repo's deid models (models/deid-small/config.json): O + B-/I- tags.
CATEGORIES = ["AGE", "CONTACT", "DATE", "ID", "LOCATION", "NAME", "OTHER", "PROFESSION"]


def labels():
    names = ["O"] + [f"{p}-{c}" for c in CATEGORIES for p in ("B", "I")]
    return {i: n for i, n in enumerate(names)}


def make_texts(tok: Tokenizer, lengths):
    """For each N: a text of exactly N-2 tokens (without special tokens), cut at a token boundary."""
    base = NOTES.read_text()
    texts = {}
    for n in lengths:
        want = n - 2
        text = base
        while len(tok.encode(text, add_special_tokens=False).ids) < want + 64:
            text += "\n\n" + base
        enc = tok.encode(text, add_special_tokens=False)
        # Cut after token k (k from want down) where the re-encoded prefix has exactly `want` tokens.
        for k in range(want, want - 64, -1):
            cut = text[: enc.offsets[k - 1][1]]
            got = len(tok.encode(cut, add_special_tokens=False).ids)
            if got == want:
                texts[str(n)] = cut
                break
        else:
            raise SystemExit(f"could not cut a text of exactly {want} tokens")
    return texts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/bench-browser/model")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=192)
    ap.add_argument("--context", type=int, default=8192, help="max_position_embeddings")
    ap.add_argument("--lengths", default="128,512,2048,8192", help="texts.json lengths (tokens with [CLS]/[SEP])")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-onnx", action="store_true")
    a = ap.parse_args()

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    # ModernBERT pads its embedding matrix to a multiple of 64 (50368 for this tokenizer).
    vocab_padded = (vocab + 63) // 64 * 64
    special = {t: tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")}

    id2label = labels()
    config = ModernBertConfig(
        vocab_size=vocab_padded,
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        intermediate_size=a.intermediate,
        max_position_embeddings=a.context,
        global_attn_every_n_layers=3,
        local_attention=128,
        global_rope_theta=160000.0,
        local_rope_theta=10000.0,
        hidden_activation="gelu",
        classifier_activation="gelu",
        classifier_pooling="mean",
        pad_token_id=special["[PAD]"],
        cls_token_id=special["[CLS]"],
        sep_token_id=special["[SEP]"],
        bos_token_id=special["[CLS]"],
        eos_token_id=special["[SEP]"],
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        architectures=["ModernBertForTokenClassification"],
    )
    # Eager attention: exportable to ONNX with the TorchScript exporter (and what we compare
    # against numerically, see below).
    config._attn_implementation = "eager"
    torch.manual_seed(a.seed)
    model = ModernBertForTokenClassification(config).eval()
    # The default init leaves some norms at 1 and biases at 0; that is fine. Save float32.
    model.save_pretrained(out, safe_serialization=True)
    cfg = json.loads((out / "config.json").read_text())
    cfg.pop("_attn_implementation", None)
    cfg["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZER_DIR / f, out / f)

    lengths = [int(x) for x in a.lengths.split(",")]
    texts = make_texts(tok, lengths)
    (out / "texts.json").write_text(json.dumps(texts))
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {a.layers} layers, hidden {a.hidden}, heads {a.heads}, intermediate {a.intermediate}, "
          f"vocab {vocab_padded}, context {a.context}, {len(id2label)} labels, {params / 1e6:.1f}M parameters -> {out}")

    if a.no_onnx:
        return
    (out / "onnx").mkdir(exist_ok=True)
    onnx_path = out / "onnx/model.onnx"
    ids = torch.tensor([tok.encode(texts[str(lengths[0])]).ids])
    mask = torch.ones_like(ids)

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).logits

    with torch.no_grad():
        torch.onnx.export(
            Wrap(model), (ids, mask), str(onnx_path),
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch_size", 1: "sequence_length"},
                          "attention_mask": {0: "batch_size", 1: "sequence_length"},
                          "logits": {0: "batch_size", 1: "sequence_length"}},
            opset_version=17, dynamo=False, do_constant_folding=True,
        )
    # Check the export with onnxruntime (CPU) against PyTorch at two lengths (dynamic axes work).
    import numpy as np
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(onnx_path))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for n in lengths[:2]:
        ids = torch.tensor([tok.encode(texts[str(n)]).ids])
        assert ids.shape[1] == n, (ids.shape, n)
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.numpy()
        got = sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy())})[0]
        err = float(np.abs(got - want).max())
        print(f"onnx check, {n} tokens: max |onnxruntime - torch| = {err:.2e}")
        assert err < 1e-3, err
    print(f"onnx: {onnx_path} ({onnx_path.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
