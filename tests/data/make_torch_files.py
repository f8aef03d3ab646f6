#!/usr/bin/env python3
"""PyTorch-checkpoint (`pytorch_model.bin`) fixtures for the runtime's safe torch reader (runtime/src/torch.rs).

Reads tests/fixtures-bert/tiny-bert-mlm/model.safetensors and writes three folders under tests/data/:

    bert-torch/pytorch_model.bin          torch.save(state_dict) in the zip format (torch >= 1.6 default)
    bert-torch/expected.txt               one line per tensor, in state-dict order:
                                              <name> <dtype> <shape> <fnv1a64 of the little-endian bytes, 16 hex digits>
                                          dtype is the reader's TorchDtype name (F32, I64, ...), shape is the
                                          comma-separated sizes in brackets ([320,48], [] for a scalar)
    bert-torch-legacy/pytorch_model.bin   the same state dict with _use_new_zipfile_serialization=False
                                          (the pre-1.6 format: a sequence of pickles, then the raw storages)
    bert-torch-malicious/pytorch_model.bin  a torch-like zip whose archive/data.pkl is a protocol-2 pickle that
                                          would call os.system("touch /tmp/SHOULD_NOT_EXIST_torch_pickle")
                                          if it were unpickled; it is built here and NEVER loaded
    */config.json                         byte-identical copies of tiny-bert-mlm/config.json

The state dict is every tensor of model.safetensors in the file's order, then
    cls.predictions.decoder.weight  -- the SAME tensor object as bert.embeddings.word_embeddings.weight
                                       (tied weights: one shared storage, pickled once then memoised)
    bert.embeddings.position_ids    -- torch.arange(64).unsqueeze(0), int64 (the buffer old BERT checkpoints carry)
and it carries a `_metadata` attribute like `model.state_dict()` has (saved as a BUILD of the OrderedDict).

Determinism: torch.save writes a random `.data/serialization_id` into the zip and the legacy format names
storages after memory addresses (which also sets the order of their bytes). The script overwrites the id with
zeros (fixing both CRC-32 fields) and renumbers the legacy storages by first use (names, key list and byte order),
so every run gives identical bytes. Both files are then re-read with torch.load(weights_only=True) and compared with the source tensors.

Usage: python3 tests/data/make_torch_files.py          (from anywhere; paths are relative to this file)
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import pickletools
import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "fixtures-bert" / "tiny-bert-mlm"
DATA = HERE
MALICIOUS_TARGET = "/tmp/SHOULD_NOT_EXIST_torch_pickle"

DTYPE_NAMES = {
    torch.float32: "F32",
    torch.float64: "F64",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
}


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64-bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3); the Rust tests compute the same."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The tensor's elements in row-major order as little-endian bytes (this machine is little-endian)."""
    t = t.contiguous()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def state_dict() -> collections.OrderedDict:
    """The checkpoint: model.safetensors in file order + a tied decoder weight + position_ids, with _metadata."""
    raw = (SRC / "model.safetensors").read_bytes()
    src = load_file(str(SRC / "model.safetensors"))
    # "the file's order" is the order of the tensors' bytes in model.safetensors (here also name order)
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    sd = collections.OrderedDict((name, src[name]) for name in names)
    sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"]  # the same object: tied
    sd["bert.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    metadata = collections.OrderedDict()
    for prefix in ["", "bert", "bert.embeddings", "bert.encoder", "cls", "cls.predictions"]:
        metadata[prefix] = {"version": 1}
    sd._metadata = metadata
    return sd


def zero_serialization_id(blob: bytes) -> bytes:
    """Overwrites the zip entry `*/.data/serialization_id` with '0's and fixes the CRC-32 in both headers."""
    out = bytearray(blob)
    zf = zipfile.ZipFile(io.BytesIO(blob))
    infos = [i for i in zf.infolist() if i.filename.endswith("/.data/serialization_id")]
    assert len(infos) == 1, [i.filename for i in zf.infolist()]
    info = infos[0]
    assert info.compress_type == zipfile.ZIP_STORED
    off = info.header_offset
    assert out[off : off + 4] == b"PK\x03\x04"
    name_len, extra_len = struct.unpack("<HH", out[off + 26 : off + 30])
    start = off + 30 + name_len + extra_len
    new = b"0" * info.file_size
    out[start : start + info.file_size] = new
    crc = struct.pack("<I", zlib.crc32(new))
    out[off + 14 : off + 18] = crc
    # the central-directory record of this entry: signature, then the name at +46
    name = info.filename.encode()
    pos = 0
    found = 0
    while True:
        pos = out.find(b"PK\x01\x02", pos)
        if pos < 0:
            break
        n = struct.unpack("<H", out[pos + 28 : pos + 30])[0]
        if bytes(out[pos + 46 : pos + 46 + n]) == name:
            out[pos + 16 : pos + 20] = crc
            found += 1
        pos += 4
    assert found == 1
    return bytes(out)


def renumber_legacy_keys(blob: bytes, sd) -> bytes:
    """Renames the legacy format's storage keys (memory addresses) to zero-padded sequence numbers.

    The file is: magic pickle, protocol pickle, sys_info pickle, main pickle, key-list pickle, then per key of
    that (sorted) list the storage's u64 element count and bytes. torch's keys are `str(storage._cdata)` of this
    process, so both their names and their sorted order change from run to run. Here each storage is numbered
    by its first use in the state dict; the keys are rewritten inside the pickles (BINUNICODE strings), the key
    list is pickled again (as torch does: pickle protocol 2) in the new sorted order, and the storages' records
    are copied, unchanged, in that order.
    """
    f = io.BytesIO(blob)
    for _ in range(4):
        for _op, _arg, _pos in pickletools.genops(f):
            pass
    keys_start = f.tell()
    for _op, _arg, _pos in pickletools.genops(f):
        pass
    pickles_end = f.tell()
    keys = pickle.loads(blob[keys_start:pickles_end])  # a list of str that this script itself just wrote
    assert isinstance(keys, list) and all(isinstance(k, str) for k in keys)

    # torch's key of each tensor's storage, in state-dict order
    by_key = {}
    for t in sd.values():
        by_key.setdefault(str(t.untyped_storage()._cdata), t)
    assert sorted(by_key) == sorted(keys), "storage keys do not match this process's storages"
    width = len(str(len(keys)))
    mapping = {k: str(i).zfill(width) for i, k in enumerate(by_key)}

    # the storages' records, in torch's order
    records = {}
    pos = pickles_end
    for k in keys:
        numel = struct.unpack("<Q", blob[pos : pos + 8])[0]
        size = by_key[k].untyped_storage().nbytes()
        assert numel * by_key[k].element_size() == size
        records[k] = blob[pos : pos + 8 + size]
        pos += 8 + size
    assert pos == len(blob)

    head = blob[:keys_start]
    for old, new in mapping.items():
        o = b"X" + struct.pack("<I", len(old)) + old.encode()
        n = b"X" + struct.pack("<I", len(new)) + new.encode()
        assert head.count(o) >= 1, old
        head = head.replace(o, n)
    new_order = sorted(mapping, key=mapping.get)
    return head + pickle.dumps([mapping[k] for k in new_order], protocol=2) + b"".join(records[k] for k in new_order)


class _SystemCall:
    """Pickles as a call of os.system(command): what a malicious checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def malicious_zip() -> bytes:
    """A torch-like stored zip whose data.pkl is an OrderedDict whose only value is os.system(...)'s result."""
    payload = collections.OrderedDict(evil=_SystemCall(f"touch {MALICIOUS_TARGET}"))
    pkl = pickle.dumps(payload, protocol=2)
    assert b"system" in pkl
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in [
            ("archive/data.pkl", pkl),
            ("archive/.format_version", b"1"),
            ("archive/byteorder", b"little"),
            ("archive/version", b"3\n"),
        ]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, data)
    return buf.getvalue()


def save(sd, **kwargs) -> bytes:
    """torch.save to a file named pytorch_model.bin (so the zip's folder is `pytorch_model/`, as on the Hub)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pytorch_model.bin"
        torch.save(sd, path, **kwargs)
        return path.read_bytes()


def check(path: Path, sd) -> None:
    """torch.load (weights_only) gives back every tensor, the tie and the metadata."""
    loaded = torch.load(path, weights_only=True)
    assert list(loaded.keys()) == list(sd.keys()), path
    for k, v in sd.items():
        w = loaded[k]
        assert w.dtype == v.dtype and w.shape == v.shape and torch.equal(w, v), (path, k)
    a, b = loaded["cls.predictions.decoder.weight"], loaded["bert.embeddings.word_embeddings.weight"]
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr(), "tie lost"
    assert dict(loaded._metadata) == dict(sd._metadata)
    print(f"  torch.load({path.relative_to(DATA.parent.parent)}): {len(loaded)} tensors OK, tie kept")


def main() -> None:
    sd = state_dict()
    config = SRC / "config.json"

    outputs = {
        "bert-torch": zero_serialization_id(save(sd)),
        "bert-torch-legacy": renumber_legacy_keys(save(sd, _use_new_zipfile_serialization=False), sd),
        "bert-torch-malicious": malicious_zip(),
    }
    for folder, blob in outputs.items():
        d = DATA / folder
        d.mkdir(parents=True, exist_ok=True)
        (d / "pytorch_model.bin").write_bytes(blob)
        shutil.copyfile(config, d / "config.json")
        print(f"wrote {d / 'pytorch_model.bin'} ({len(blob)} bytes) and config.json")

    # the same bytes again: the output is deterministic
    assert zero_serialization_id(save(sd)) == outputs["bert-torch"]
    assert renumber_legacy_keys(save(sd, _use_new_zipfile_serialization=False), sd) == outputs["bert-torch-legacy"]

    lines = []
    for name, t in sd.items():
        shape = "[" + ",".join(str(s) for s in t.shape) + "]"
        lines.append(f"{name} {DTYPE_NAMES[t.dtype]} {shape} {fnv1a64(tensor_bytes(t)):016x}\n")
    (DATA / "bert-torch" / "expected.txt").write_text("".join(lines))
    print(f"wrote {DATA / 'bert-torch' / 'expected.txt'} ({len(lines)} tensors)")

    check(DATA / "bert-torch" / "pytorch_model.bin", sd)
    check(DATA / "bert-torch-legacy" / "pytorch_model.bin", sd)


if __name__ == "__main__":
    main()
