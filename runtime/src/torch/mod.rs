//! Safe reader of PyTorch checkpoints (`pytorch_model.bin`: what `torch.save(model.state_dict(), path)` writes).
//!
//! # The safety rule
//!
//! A torch checkpoint is a Python *pickle*: a program for a small stack machine whose instructions can import
//! any Python callable (`os.system`, `builtins.eval`, …) and call it. `torch.load(…, weights_only=False)` runs
//! that program, so opening an untrusted `.bin` with it can run arbitrary code. **This module never runs code
//! from a file.** It interprets the pickle with its own iterative (non-recursive) machine that knows only the
//! opcodes a state dict needs, and only these globals, each implemented here in Rust:
//! `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the
//! storage types `torch.{Float,Half,BFloat16,Double,Long,Int,Byte}Storage`. Any other global is refused where
//! the pickle names it (`GLOBAL`/`STACK_GLOBAL`), any other opcode where it appears, each with its byte offset.
//! Every length, index, count and size is checked before use: a truncated or corrupt file gives an error, never
//! a panic, and memory stays bounded by limits proportional to the file.
//!
//! # The format
//!
//! * **zip** (torch ≥ 1.6, the default): a zip archive of *stored* (uncompressed) entries in one folder `<p>/`
//!   (the file's stem, e.g. `pytorch_model/`, or `archive/`): `<p>/data.pkl` (the pickle), `<p>/byteorder`
//!   (`little`), `<p>/data/<key>` (each storage's raw bytes) and version files. torch pads the local headers'
//!   extra fields so data is 64-byte aligned, and writes Zip64 records; both are handled (CRCs are not checked).
//! * **legacy** (torch < 1.6, or `_use_new_zipfile_serialization=False`): pickles one after another — the magic
//!   number `0x1950a86a20f9469cfc6c`, the protocol version 1001, a `sys_info` dict, the state dict, the list of
//!   storage keys — then, for each key of that list in order, its element count (u64 little-endian) and bytes.
//!
//! In both, the state dict is an `OrderedDict` of name → `_rebuild_tensor_v2(storage, storage_offset, size,
//! stride, requires_grad, backward_hooks[, metadata])` (optionally wrapped in `_rebuild_parameter`), where the
//! storage is a persistent id `('storage', torch.FloatStorage, key, location, numel[, view_metadata])`. Tensors
//! that share a storage (tied weights) come out once per name. A contiguous tensor is a byte range of the input
//! (no copy); a strided one (e.g. a saved transposed view) is gathered into its own buffer.
//!
//! Here: the formats (this file: which one, and the legacy layout), `zip.rs` (the archive),
//! `pickle.rs` (the machine), `state_dict.rs` (tensors out of the unpickled dict).

mod pickle;
mod state_dict;
#[cfg(test)]
mod tests;
mod zip;

use std::collections::HashMap;
use std::ops::Range;

use pickle::{shown, Value, Vm};
use state_dict::collect;
use zip::{le_u64, read_zip, span};

pub use crate::dtype::StoredDtype;
use crate::{Error, Result};

/// A checkpoint that cannot be read; `read` names the file.
fn bad(message: impl Into<String>) -> Error {
    Error::Weights { path: String::new(), message: message.into() }
}

/// Where a tensor's little-endian bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TorchData {
    /// A byte range of the input (contiguous tensors: zero copy).
    Range(Range<usize>),
    /// Gathered bytes (strided tensors, e.g. a transposed view).
    Owned(Vec<u8>),
}

/// One tensor of the state dict.
#[derive(Clone, Debug)]
pub struct TorchTensor {
    /// Its state-dict name, e.g. `bert.embeddings.word_embeddings.weight`.
    pub name: String,
    /// Its element type.
    pub dtype: StoredDtype,
    /// Its sizes, outermost first (empty for a scalar).
    pub shape: Vec<usize>,
    /// Its elements in row-major order.
    pub data: TorchData,
}

/// True when the bytes look like a torch checkpoint (zip `PK\x03\x04` start, or the legacy pickle magic) — used to sniff formats.
pub fn is_torch(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || is_legacy(bytes)
}

/// Read every tensor of `bytes`, read from `file` (which errors name).
pub fn read(bytes: &[u8], file: &str) -> Result<Vec<TorchTensor>> {
    let read = if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes)
    } else if is_legacy(bytes) {
        read_legacy(bytes)
    } else {
        Err(bad("not a PyTorch checkpoint: neither a zip archive nor the legacy pickle format"))
    };
    read.map_err(|e| match e {
        Error::Weights { message, .. } => Error::Weights { path: file.to_string(), message },
        other => other,
    })
}

/// `0x1950a86a20f9469cfc6c`, little-endian: the first thing the legacy format pickles.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// The legacy format's protocol version.
const LEGACY_PROTOCOL_VERSION: i64 = 1001;
/// The most values the pickle stack (and the MARK stack) may hold.
const MAX_STACK: usize = 1 << 22;
/// The most memo entries one pickle may store.
const MAX_MEMO: usize = 1 << 22;
/// The most tuples, lists, dicts and tensors the pickles may build.
const MAX_OBJECTS: usize = 1 << 24;
/// The most dimensions a tensor may have.
const MAX_NDIM: usize = 64;
/// The longest module or name a GLOBAL opcode may carry.
const MAX_GLOBAL_LINE: usize = 256;

/// Opens with PROTO n, LONG1 of 10 bytes = the legacy magic number.
fn is_legacy(bytes: &[u8]) -> bool {
    bytes.len() >= 14 && bytes[0] == 0x80 && bytes[2] == 0x8a && bytes[3] == 10 && bytes[4..14] == LEGACY_MAGIC
}

// The legacy format: pickles one after another, then the storages.

fn read_legacy(bytes: &[u8]) -> Result<Vec<TorchTensor>> {
    let mut vm = Vm::default();
    let (magic, pos) = vm.load(bytes, 0)?;
    if !matches!(magic, Value::LegacyMagic) {
        return Err(bad("its legacy-format magic number is wrong"));
    }
    let (version, pos) = vm.load(bytes, pos)?;
    if !matches!(version, Value::Int(LEGACY_PROTOCOL_VERSION)) {
        return Err(bad(format!("its legacy-format protocol version is not {LEGACY_PROTOCOL_VERSION}")));
    }
    let (sys_info, pos) = vm.load(bytes, pos)?;
    let sys_info = vm.dict(&sys_info).ok_or_else(|| bad("its legacy-format sys_info is not a dict"))?;
    for (key, value) in sys_info {
        if matches!(key, Value::Str(k) if &**k == "little_endian") && matches!(value, Value::Bool(false) | Value::Int(0)) {
            return Err(bad("it stores big-endian tensors (sys_info little_endian = False); re-save it on a little-endian machine"));
        }
    }
    let (top, pos) = vm.load(bytes, pos)?;
    let (keys, mut pos) = vm.load(bytes, pos)?;
    let keys = vm.list(&keys).ok_or_else(|| bad("its legacy-format storage-key list is not a list"))?;
    let index: HashMap<&str, usize> = vm.storages.iter().enumerate().map(|(i, s)| (&*s.key, i)).collect();
    let mut ranges: Vec<Option<Range<usize>>> = vec![None; vm.storages.len()];
    for key in keys {
        let Value::Str(raw) = key else {
            return Err(bad(format!("its legacy-format storage-key list holds a {}", vm.kind(key))));
        };
        let key = || shown(raw);
        let &i = index.get(&**raw).ok_or_else(|| bad(format!("its storage \"{}\" is not used by the pickle", key())))?;
        if ranges[i].is_some() {
            return Err(bad(format!("its storage \"{}\" is listed twice", key())));
        }
        let storage = &vm.storages[i];
        let count = le_u64(bytes, pos).ok_or_else(|| bad(format!("it is truncated: the data of storage \"{}\" is missing", key())))?;
        if usize::try_from(count).ok() != Some(storage.numel) {
            return Err(bad(format!("its storage \"{}\" has {count} elements, but the pickle declares {}", key(), storage.numel)));
        }
        let len = storage.numel.checked_mul(storage.dtype.size()).ok_or_else(|| bad("a storage is too large"))?;
        let range = span(pos as u64 + 8, len as u64, bytes.len()).ok_or_else(|| bad(format!("it is truncated: storage \"{}\" runs past the end", key())))?;
        pos = range.end;
        ranges[i] = Some(range);
    }
    let ranges = ranges
        .into_iter()
        .zip(&vm.storages)
        .map(|(range, storage)| range.ok_or_else(|| bad(format!("its pickle uses storage \"{}\" but the file does not contain it", shown(&storage.key)))))
        .collect::<Result<Vec<_>>>()?;
    collect(&vm, &top, &ranges, bytes)
}
