#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets (fuzz/corpus/<target>/): small files
taken from the repository's own test data, and a few made here (a tiny safetensors file, a tiny
PyTorch zip checkpoint written without torch). Rerun after changing a format; the seeds are
committed so that `.ci/run` fuzzes from the same start every time."""
import collections, io, json, os, pickle, struct, sys, types, zipfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


def safetensors(tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def torch_zip(tensors):
    """A PyTorch zip checkpoint (protocol 2 pickle, stored entries) of float32 tensors, written
    with stand-ins for torch's globals, as torch.save writes them."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise RuntimeError("never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2

    class FloatStorage:
        pass

    FloatStorage.__module__ = "torch"
    FloatStorage.__qualname__ = FloatStorage.__name__ = "FloatStorage"
    torch.FloatStorage = FloatStorage
    torch._utils = utils
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils

    class Storage:
        def __init__(self, key, n):
            self.key, self.n = key, n

    class Tensor:
        def __init__(self, key, shape):
            self.key, self.shape = key, shape

        def __reduce__(self):
            n = 1
            for d in self.shape:
                n *= d
            stride, acc = [], 1
            for d in reversed(self.shape):
                stride.insert(0, acc)
                acc *= d
            return (_rebuild_tensor_v2, (Storage(self.key, n), 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", FloatStorage, obj.key, "cpu", obj.n)
            return None

    state = collections.OrderedDict()
    for i, (name, shape, values) in enumerate(tensors):
        state[name] = Tensor(str(i), shape)
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for i, (name, shape, values) in enumerate(tensors):
            z.writestr(f"archive/data/{i}", struct.pack(f"<{len(values)}f", *values))
        z.writestr("archive/version", "3\n")
    del sys.modules["torch"], sys.modules["torch._utils"]
    return out.getvalue()


f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)

# config.json
for name, path in [
    ("modernbert-mlm", "tests/fixtures/tiny-modernbert-mlm/config.json"),
    ("modernbert-tokcls", "tests/fixtures/tiny-modernbert-tokcls/config.json"),
    ("modernbert-base", "tests/data/modernbert-configs/ModernBERT-base.config.json"),
    ("bert-tokcls", "tests/fixtures-bert/tiny-bert-tokcls/config.json"),
    ("bert-torch", "tests/data/bert-torch/config.json"),
]:
    put("config", name, read(path))

# safetensors (and the PyTorch files the same entry point sniffs)
small = [("model.embeddings.norm.weight", "F32", [3], f32(1, 2, 3)), ("decoder.bias", "F16", [2], b"\x00\x3c\x00\x40"), ("ids", "I64", [1], struct.pack("<q", 7))]
put("safetensors_header", "small", safetensors(small, {"format": "pt"}))
put("safetensors_header", "empty", safetensors([]))
put("safetensors_header", "bf16-2d", safetensors([("w", "BF16", [2, 2], b"\x80\x3f" * 4)]))
put("safetensors_header", "torch-zip", torch_zip([("w", [2, 3], [0.5] * 6)]))

# PyTorch checkpoints
put("pickle", "zip-two-tensors", torch_zip([("bert.embeddings.word_embeddings.weight", [2, 3], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), ("classifier.bias", [2], [1.0, -1.0])]))
put("pickle", "malicious", read("tests/data/bert-torch-malicious/pytorch_model.bin"))

# tokenizer.json
put("tokenizer_json", "modernbert-tiny", read("tests/fixtures/tiny-modernbert-mlm/tokenizer.json"))
put("tokenizer_json", "wordlevel", json.dumps({
    "version": "1.0", "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True} for i, t in enumerate(["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"])],
    "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
    "model": {"type": "WordLevel", "vocab": {"[CLS]": 0, "[SEP]": 1, "[PAD]": 2, "[MASK]": 3, "[UNK]": 4, "the": 5, "patient": 6}, "unk_token": "[UNK]"},
}))

# vocab.txt / vocab.json + merges.txt (first byte: layout; 0xFF separates the files)
put("tokenizer_files", "wordpiece", b"\x00" + read("tests/data/bert-torch/vocab.txt"))
put("tokenizer_files", "wordpiece-config", b"\x02" + read("tests/data/bert-torch/vocab.txt") + b"\xff\xff" + read("tests/data/bert-torch/tokenizer_config.json"))
put("tokenizer_files", "bpe", b"\x01" + read("tests/data/bert-bpe-files/vocab.json") + b"\xff" + read("tests/data/bert-bpe-files/merges.txt"))

# documents (first byte: format, id column, skipping)
put("documents", "jsonl", b"\x00" + b'{"id": "n1", "text": "Seen 03/14/2019."}\n\n{"id": 2, "text": "caf\\u00e9"}\n{"text": "no id"}\n')
put("documents", "csv", b"\x05" + b'id,text\nn1,"quoted, with ""escapes"""\nn2,plain\n')
put("documents", "txt", b"\x02" + "One note, some UTF-8: Zoë Ödegaard.\n".encode())
put("documents", "lines", b"\x0b" + b"first\n\nsecond\r\nthird \xff bad\n")
put("documents", "bom-jsonl", b"\x08" + b'\xef\xbb\xbf{"text": "with a byte-order mark"}\n')
print("seeds written to", OUT)
