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

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::rc::Rc;

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorchDtype {
    /// float32 (`torch.FloatStorage`)
    F32,
    /// float64 (`torch.DoubleStorage`)
    F64,
    /// float16 (`torch.HalfStorage`)
    F16,
    /// bfloat16 (`torch.BFloat16Storage`)
    BF16,
    /// int64 (`torch.LongStorage`)
    I64,
    /// int32 (`torch.IntStorage`)
    I32,
    /// uint8 (`torch.ByteStorage`)
    U8,
}

impl TorchDtype {
    /// Bytes per element.
    fn size(self) -> usize {
        match self {
            TorchDtype::F64 | TorchDtype::I64 => 8,
            TorchDtype::F32 | TorchDtype::I32 => 4,
            TorchDtype::F16 | TorchDtype::BF16 => 2,
            TorchDtype::U8 => 1,
        }
    }

    /// The dtype of a `torch.<name>` storage type.
    fn from_storage_type(name: &str) -> Option<TorchDtype> {
        Some(match name {
            "FloatStorage" => TorchDtype::F32,
            "DoubleStorage" => TorchDtype::F64,
            "HalfStorage" => TorchDtype::F16,
            "BFloat16Storage" => TorchDtype::BF16,
            "LongStorage" => TorchDtype::I64,
            "IntStorage" => TorchDtype::I32,
            "ByteStorage" => TorchDtype::U8,
            _ => return None,
        })
    }
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
    pub dtype: TorchDtype,
    /// Its sizes, outermost first (empty for a scalar).
    pub shape: Vec<usize>,
    /// Its elements in row-major order.
    pub data: TorchData,
}

/// True when the bytes look like a torch checkpoint (zip `PK\x03\x04` start, or the legacy pickle magic) — used to sniff formats.
pub fn is_torch(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || is_legacy(bytes)
}

/// Read every tensor. Errors are plain messages WITHOUT the file name (the caller prefixes the path).
pub fn read(bytes: &[u8]) -> Result<Vec<TorchTensor>, String> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes)
    } else if is_legacy(bytes) {
        read_legacy(bytes)
    } else {
        Err("not a PyTorch checkpoint: neither a zip archive nor the legacy pickle format".to_string())
    }
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

// ---------------------------------------------------------------------------------------------------------
// zip

/// One central-directory entry.
struct ZipEntry {
    name: String,
    flags: u16,
    method: u16,
    compressed: u64,
    uncompressed: u64,
    local_offset: u64,
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// `start..start + len` when it lies inside `0..limit`.
fn span(start: u64, len: u64, limit: usize) -> Option<Range<usize>> {
    let start = usize::try_from(start).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= limit).then_some(start..end)
}

fn corrupt_zip(what: &str) -> String {
    format!("the zip archive is truncated or corrupt ({what})")
}

/// The central directory's entries (Zip64 aware).
fn zip_entries(bytes: &[u8]) -> Result<Vec<ZipEntry>, String> {
    // end of central directory: 22 bytes + a comment of up to 65,535 bytes, scanned backwards
    let last = bytes.len().checked_sub(22).ok_or_else(|| corrupt_zip("shorter than an end-of-central-directory record"))?;
    let first = bytes.len().saturating_sub(22 + 65_535);
    let eocd = (first..=last)
        .rev()
        .find(|&i| bytes[i..].starts_with(b"PK\x05\x06") && le_u16(bytes, i + 20).is_some_and(|comment| i + 22 + usize::from(comment) <= bytes.len()))
        .ok_or_else(|| corrupt_zip("no end-of-central-directory record"))?;
    let field16 = |at: usize| le_u16(bytes, eocd + at).ok_or_else(|| corrupt_zip("end-of-central-directory record"));
    let field32 = |at: usize| le_u32(bytes, eocd + at).ok_or_else(|| corrupt_zip("end-of-central-directory record"));
    let (disk, cd_disk) = (field16(4)?, field16(6)?);
    let mut count = u64::from(field16(10)?);
    let mut cd_size = u64::from(field32(12)?);
    let mut cd_offset = u64::from(field32(16)?);
    let multi_disk = disk != 0 || cd_disk != 0;
    let locator = eocd.checked_sub(20).filter(|&l| bytes[l..].starts_with(b"PK\x06\x07"));
    let multi_disk = if let Some(l) = locator {
        let bad = || corrupt_zip("Zip64 end-of-central-directory record");
        let record = le_u64(bytes, l + 8).ok_or_else(bad)?;
        let record = span(record, 56, bytes.len()).ok_or_else(bad)?.start;
        if !bytes[record..].starts_with(b"PK\x06\x06") {
            return Err(bad());
        }
        count = le_u64(bytes, record + 32).ok_or_else(bad)?;
        cd_size = le_u64(bytes, record + 40).ok_or_else(bad)?;
        cd_offset = le_u64(bytes, record + 48).ok_or_else(bad)?;
        multi_disk || le_u32(bytes, record + 16) != Some(0) || le_u32(bytes, record + 20) != Some(0)
    } else if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        return Err(corrupt_zip("Zip64 sizes without a Zip64 locator"));
    } else {
        multi_disk
    };
    if multi_disk {
        return Err("multi-disk zip archives are not supported".to_string());
    }
    let cd = span(cd_offset, cd_size, bytes.len()).ok_or_else(|| corrupt_zip("central directory out of bounds"))?;
    let cd = &bytes[cd];
    if count > (cd.len() / 46) as u64 {
        return Err(corrupt_zip("more entries than the central directory can hold"));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut p = 0usize;
    for _ in 0..count {
        let bad = || corrupt_zip("central directory entry");
        if !cd.get(p..).is_some_and(|rest| rest.starts_with(b"PK\x01\x02")) {
            return Err(bad());
        }
        let flags = le_u16(cd, p + 8).ok_or_else(bad)?;
        let method = le_u16(cd, p + 10).ok_or_else(bad)?;
        let mut compressed = u64::from(le_u32(cd, p + 20).ok_or_else(bad)?);
        let mut uncompressed = u64::from(le_u32(cd, p + 24).ok_or_else(bad)?);
        let name_len = usize::from(le_u16(cd, p + 28).ok_or_else(bad)?);
        let extra_len = usize::from(le_u16(cd, p + 30).ok_or_else(bad)?);
        let comment_len = usize::from(le_u16(cd, p + 32).ok_or_else(bad)?);
        let mut local_offset = u64::from(le_u32(cd, p + 42).ok_or_else(bad)?);
        let name = cd.get(p + 46..p + 46 + name_len).ok_or_else(bad)?;
        let extra = cd.get(p + 46 + name_len..p + 46 + name_len + extra_len).ok_or_else(bad)?;
        // Zip64 extended information: the 64-bit values of the fields set to 0xFFFFFFFF, in this order
        let mut e = 0usize;
        while e + 4 <= extra.len() {
            let id = le_u16(extra, e).ok_or_else(bad)?;
            let size = usize::from(le_u16(extra, e + 2).ok_or_else(bad)?);
            let body = extra.get(e + 4..e + 4 + size).ok_or_else(bad)?;
            if id == 1 {
                let mut q = 0usize;
                for field in [&mut uncompressed, &mut compressed, &mut local_offset] {
                    if *field == 0xFFFF_FFFF {
                        *field = le_u64(body, q).ok_or_else(bad)?;
                        q += 8;
                    }
                }
            }
            e += 4 + size;
        }
        entries.push(ZipEntry { name: String::from_utf8_lossy(name).into_owned(), flags, method, compressed, uncompressed, local_offset });
        p += 46 + name_len + extra_len + comment_len;
    }
    Ok(entries)
}

/// The byte range of a stored entry's contents (located through its local header).
fn entry_data(bytes: &[u8], entry: &ZipEntry) -> Result<Range<usize>, String> {
    if entry.method != 0 || entry.compressed != entry.uncompressed {
        return Err(format!(
            "its entry {} is compressed (zip method {}); only uncompressed (stored) entries can be read — re-save the checkpoint with torch.save",
            shown(&entry.name),
            entry.method
        ));
    }
    if entry.flags & 1 != 0 {
        return Err(format!("its entry {} is encrypted", shown(&entry.name)));
    }
    let bad = || corrupt_zip(&format!("local header of {}", shown(&entry.name)));
    let header = span(entry.local_offset, 30, bytes.len()).ok_or_else(bad)?.start;
    if !bytes[header..].starts_with(b"PK\x03\x04") {
        return Err(bad());
    }
    let name_len = le_u16(bytes, header + 26).ok_or_else(bad)?;
    let extra_len = le_u16(bytes, header + 28).ok_or_else(bad)?;
    let name = span(header as u64 + 30, u64::from(name_len), bytes.len()).ok_or_else(bad)?;
    if &bytes[name] != entry.name.as_bytes() {
        return Err(corrupt_zip(&format!("the local header of {} names another file", shown(&entry.name))));
    }
    let start = header as u64 + 30 + u64::from(name_len) + u64::from(extra_len);
    span(start, entry.uncompressed, bytes.len()).ok_or_else(|| corrupt_zip(&format!("the data of {} runs past the end", shown(&entry.name))))
}

fn read_zip(bytes: &[u8]) -> Result<Vec<TorchTensor>, String> {
    let entries = zip_entries(bytes)?;
    let mut by_name: HashMap<&str, &ZipEntry> = HashMap::with_capacity(entries.len());
    for entry in &entries {
        if by_name.insert(entry.name.as_str(), entry).is_some() {
            return Err(format!("its zip archive has two entries named {}", shown(&entry.name)));
        }
    }
    let pickles: Vec<&ZipEntry> =
        entries.iter().filter(|e| e.name.split_once('/').is_some_and(|(prefix, file)| file == "data.pkl" && !prefix.is_empty())).collect();
    let pickle = match pickles.as_slice() {
        [one] => *one,
        [] => return Err("its zip archive has no <folder>/data.pkl, so it is not a torch.save checkpoint".to_string()),
        _ => return Err(format!("its zip archive has {} data.pkl files; a torch.save checkpoint has one", pickles.len())),
    };
    let prefix = pickle.name.strip_suffix("data.pkl").unwrap_or_default();
    if let Some(entry) = by_name.get(format!("{prefix}byteorder").as_str()) {
        match bytes[entry_data(bytes, entry)?].trim_ascii() {
            b"little" => {}
            b"big" => return Err("it stores big-endian tensors (byteorder = big); re-save it on a little-endian machine".to_string()),
            other => return Err(format!("its byteorder entry says {:?}; expected little", String::from_utf8_lossy(other))),
        }
    }
    let mut vm = Vm::default();
    let (top, _) = vm.load(&bytes[entry_data(bytes, pickle)?], 0)?;
    let mut ranges = Vec::with_capacity(vm.storages.len());
    for storage in &vm.storages {
        let name = format!("{prefix}data/{}", storage.key);
        let entry = by_name
            .get(name.as_str())
            .ok_or_else(|| format!("its pickle uses storage \"{}\" but the archive has no {}", shown(&storage.key), shown(&name)))?;
        let range = entry_data(bytes, entry)?;
        if Some(range.len()) != storage.numel.checked_mul(storage.dtype.size()) {
            return Err(format!(
                "its storage {} has {} bytes, but the pickle declares {} elements of {:?}",
                shown(&name),
                range.len(),
                storage.numel,
                storage.dtype
            ));
        }
        ranges.push(range);
    }
    collect(&vm, &top, &ranges, bytes)
}

// ---------------------------------------------------------------------------------------------------------
// legacy

fn read_legacy(bytes: &[u8]) -> Result<Vec<TorchTensor>, String> {
    let mut vm = Vm::default();
    let (magic, pos) = vm.load(bytes, 0)?;
    if !matches!(magic, Value::LegacyMagic) {
        return Err("its legacy-format magic number is wrong".to_string());
    }
    let (version, pos) = vm.load(bytes, pos)?;
    if !matches!(version, Value::Int(LEGACY_PROTOCOL_VERSION)) {
        return Err(format!("its legacy-format protocol version is not {LEGACY_PROTOCOL_VERSION}"));
    }
    let (sys_info, pos) = vm.load(bytes, pos)?;
    let sys_info = vm.dict(&sys_info).ok_or("its legacy-format sys_info is not a dict")?;
    for (key, value) in sys_info {
        if matches!(key, Value::Str(k) if &**k == "little_endian") && matches!(value, Value::Bool(false) | Value::Int(0)) {
            return Err("it stores big-endian tensors (sys_info little_endian = False); re-save it on a little-endian machine".to_string());
        }
    }
    let (top, pos) = vm.load(bytes, pos)?;
    let (keys, mut pos) = vm.load(bytes, pos)?;
    let keys = vm.list(&keys).ok_or("its legacy-format storage-key list is not a list")?;
    let index: HashMap<&str, usize> = vm.storages.iter().enumerate().map(|(i, s)| (&*s.key, i)).collect();
    let mut ranges: Vec<Option<Range<usize>>> = vec![None; vm.storages.len()];
    for key in keys {
        let Value::Str(raw) = key else {
            return Err(format!("its legacy-format storage-key list holds a {}", vm.kind(key)));
        };
        let key = || shown(raw);
        let &i = index.get(&**raw).ok_or_else(|| format!("its storage \"{}\" is not used by the pickle", key()))?;
        if ranges[i].is_some() {
            return Err(format!("its storage \"{}\" is listed twice", key()));
        }
        let storage = &vm.storages[i];
        let count = le_u64(bytes, pos).ok_or_else(|| format!("it is truncated: the data of storage \"{}\" is missing", key()))?;
        if usize::try_from(count).ok() != Some(storage.numel) {
            return Err(format!("its storage \"{}\" has {count} elements, but the pickle declares {}", key(), storage.numel));
        }
        let len = storage.numel.checked_mul(storage.dtype.size()).ok_or("a storage is too large")?;
        let range =
            span(pos as u64 + 8, len as u64, bytes.len()).ok_or_else(|| format!("it is truncated: storage \"{}\" runs past the end", key()))?;
        pos = range.end;
        ranges[i] = Some(range);
    }
    let ranges = ranges
        .into_iter()
        .zip(&vm.storages)
        .map(|(range, storage)| range.ok_or_else(|| format!("its pickle uses storage \"{}\" but the file does not contain it", shown(&storage.key))))
        .collect::<Result<Vec<_>, String>>()?;
    collect(&vm, &top, &ranges, bytes)
}

// ---------------------------------------------------------------------------------------------------------
// tensors out of the unpickled state dict

/// The tensors of the top-level dict, in its order.
fn collect(vm: &Vm, top: &Value, ranges: &[Range<usize>], bytes: &[u8]) -> Result<Vec<TorchTensor>, String> {
    let entries = vm.dict(top).ok_or_else(|| format!("its pickle holds a {}, not a state dict (a dict of name → tensor)", vm.kind(top)))?;
    // gathering strided tensors copies; a file may not make this reader allocate far more than its own size
    let mut budget = bytes.len().saturating_mul(2).saturating_add(64 << 20);
    let mut seen = HashSet::with_capacity(entries.len());
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let Value::Str(raw) = key else {
            return Err(format!("its state dict has a {} key; only string names are supported", vm.kind(key)));
        };
        let Value::Tensor(t) = value else {
            return Err(format!(
                "its state dict's entry \"{}\" is a {}, not a tensor; only a flat state dict of tensors can be read",
                shown(raw),
                vm.kind(value)
            ));
        };
        if !seen.insert(raw) {
            return Err(format!("its state dict has the name \"{}\" twice", shown(raw)));
        }
        let tensor = &vm.tensors[*t];
        let storage = &vm.storages[tensor.storage];
        let data = tensor_data(raw, tensor, storage, ranges[tensor.storage].clone(), bytes, &mut budget)?;
        out.push(TorchTensor { name: raw.to_string(), dtype: storage.dtype, shape: tensor.shape.clone(), data });
    }
    Ok(out)
}

/// Checks that the view lies inside its storage, then returns its bytes (a range when contiguous).
fn tensor_data(
    name: &str,
    tensor: &TensorDecl,
    storage: &StorageDecl,
    range: Range<usize>,
    bytes: &[u8],
    budget: &mut usize,
) -> Result<TorchData, String> {
    let TensorDecl { shape, stride, offset, .. } = tensor;
    let name = || shown(name);
    let size = storage.dtype.size();
    let too_big = || format!("tensor \"{}\": its size {shape:?} is too large", name());
    let numel = shape.iter().try_fold(1usize, |n, &s| n.checked_mul(s)).ok_or_else(too_big)?;
    let last = if numel == 0 {
        Some(*offset)
    } else {
        shape.iter().zip(stride).try_fold(*offset, |last, (&s, &st)| last.checked_add((s - 1).checked_mul(st)?))
    };
    let fits = match last {
        Some(last) if numel == 0 => last <= storage.numel,
        Some(last) => last < storage.numel,
        None => false,
    };
    if !fits {
        return Err(format!(
            "tensor \"{}\" (size {shape:?}, stride {stride:?}, offset {offset}) does not fit in its storage of {} elements",
            name(),
            storage.numel
        ));
    }
    // every element index is now < storage.numel, and range.len() == storage.numel * size
    let start = range.start + offset * size;
    let len = numel * size;
    if numel == 0 || is_contiguous(shape, stride) {
        return Ok(TorchData::Range(start..start + len));
    }
    *budget =
        budget.checked_sub(len).ok_or_else(|| format!("tensor \"{}\": its strided views need more memory than the file's size allows", name()))?;
    let storage_bytes = &bytes[range];
    let mut out = Vec::with_capacity(len);
    let dims = shape.len(); // >= 1: a scalar is contiguous
    let (inner, inner_stride) = (shape[dims - 1], stride[dims - 1]);
    let mut index = vec![0usize; dims - 1];
    let bad = || format!("tensor \"{}\" reads outside its storage", name());
    loop {
        let base = index.iter().zip(stride).fold(*offset, |b, (&i, &st)| b + i * st);
        if inner_stride == 1 {
            out.extend_from_slice(storage_bytes.get(base * size..(base + inner) * size).ok_or_else(bad)?);
        } else {
            for j in 0..inner {
                let e = base + j * inner_stride;
                out.extend_from_slice(storage_bytes.get(e * size..(e + 1) * size).ok_or_else(bad)?);
            }
        }
        // next index of the outer dimensions, last fastest
        let mut d = dims - 1;
        loop {
            if d == 0 {
                return Ok(TorchData::Owned(out));
            }
            d -= 1;
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// Row-major contiguous (strides of size-1 dimensions do not matter).
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&s, &st) in shape.iter().zip(stride).rev() {
        if s != 1 && st != expected {
            return false;
        }
        expected = expected.saturating_mul(s);
    }
    true
}

// ---------------------------------------------------------------------------------------------------------
// the pickle machine

/// A pickle value. Containers live in [`Vm::objects`] and are referred to by index, so values are cheap to
/// copy (BINGET) and nothing is recursive.
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// A float (its value is never needed).
    Float,
    Str(Rc<str>),
    Global(Callable),
    Storage(usize),
    Tensor(usize),
    Obj(usize),
    LegacyMagic,
}

/// A container built by the pickle.
enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Insertion order; keys are not deduplicated (the state dict is checked for duplicates instead).
    Dict(Vec<(Value, Value)>),
}

/// The only globals a pickle may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Callable {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(TorchDtype),
}

/// A storage named by a persistent id.
struct StorageDecl {
    key: Rc<str>,
    dtype: TorchDtype,
    numel: usize,
}

/// A `_rebuild_tensor_v2` call (a view of a storage; checked against it later).
struct TensorDecl {
    storage: usize,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// What the pickles built, shared by the legacy format's successive pickles.
#[derive(Default)]
struct Vm {
    objects: Vec<Obj>,
    storages: Vec<StorageDecl>,
    storage_index: HashMap<Rc<str>, usize>,
    tensors: Vec<TensorDecl>,
}

/// The name of a pickle opcode, for messages.
fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// `n` bytes at `pos`, advancing it.
fn take<'a>(data: &'a [u8], pos: &mut usize, n: usize, at: usize) -> Result<&'a [u8], String> {
    match pos.checked_add(n) {
        Some(end) if end <= data.len() => {
            let s = &data[*pos..end];
            *pos = end;
            Ok(s)
        }
        _ => Err(format!("its pickle is truncated: the opcode at byte {at} runs past the end")),
    }
}

fn take_array<const N: usize>(data: &[u8], pos: &mut usize, at: usize) -> Result<[u8; N], String> {
    take(data, pos, N, at)?.try_into().map_err(|_| format!("its pickle is truncated at byte {at}"))
}

/// A GLOBAL operand line (up to its newline).
fn take_line<'a>(data: &'a [u8], pos: &mut usize, at: usize) -> Result<&'a [u8], String> {
    let rest = data.get(*pos..).unwrap_or_default();
    let n = rest
        .iter()
        .take(MAX_GLOBAL_LINE + 1)
        .position(|&b| b == b'\n')
        .ok_or_else(|| format!("its pickle's GLOBAL at byte {at} has no (or too long a) module or name"))?;
    let line = &rest[..n];
    *pos += n + 1;
    Ok(line)
}

fn text(bytes: &[u8], at: usize) -> Result<Rc<str>, String> {
    std::str::from_utf8(bytes).map(Rc::from).map_err(|_| format!("its pickle has a string that is not UTF-8 at byte {at}"))
}

/// `module.name`, escaped and shortened for a message.
fn global_name(module: &str, name: &str) -> String {
    shown(&format!("{module}.{name}"))
}

/// A string from the file, escaped and shortened for a message.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(200).flat_map(char::escape_debug).collect();
    if s.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}

/// The allowlist: the Rust stand-in for a global, or the refusal.
fn resolve_global(module: &str, name: &str, at: usize) -> Result<Value, String> {
    let callable = match (module, name) {
        ("collections", "OrderedDict") => Some(Callable::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Callable::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Callable::RebuildParameter),
        ("torch", storage) => TorchDtype::from_storage_type(storage).map(Callable::Storage),
        _ => None,
    };
    match callable {
        Some(c) => Ok(Value::Global(c)),
        None if module == "torch" && name.ends_with("Storage") && !name.contains('.') => Err(format!(
            "its pickle names {} at byte {at}: tensors of that type are not supported (only float32/64, float16, bfloat16, int64/32 and uint8)",
            global_name(module, name)
        )),
        None => Err(format!(
            "its pickle names {} at byte {at}; only the globals that rebuild tensors are allowed (this loader never runs code from a file)",
            global_name(module, name)
        )),
    }
}

/// The memo: indices are normally 0, 1, 2, … (kept in a vector); any others go to a map.
#[derive(Default)]
struct Memo {
    dense: Vec<Value>,
    sparse: HashMap<u32, Value>,
}

impl Memo {
    fn len(&self) -> usize {
        self.dense.len() + self.sparse.len()
    }

    fn get(&self, i: u32) -> Option<&Value> {
        self.dense.get(i as usize).or_else(|| self.sparse.get(&i))
    }

    fn insert(&mut self, i: u32, v: Value, at: usize) -> Result<(), String> {
        let index = i as usize;
        if let Some(slot) = self.dense.get_mut(index) {
            *slot = v;
            return Ok(());
        }
        if self.len() >= MAX_MEMO && !self.sparse.contains_key(&i) {
            return Err(format!("its pickle's memo grows past {MAX_MEMO} entries (at byte {at})"));
        }
        if index == self.dense.len() {
            self.sparse.remove(&i);
            self.dense.push(v);
        } else {
            self.sparse.insert(i, v);
        }
        Ok(())
    }
}

/// One pickle's stack machine state.
struct Machine<'v> {
    vm: &'v mut Vm,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Memo,
}

impl Vm {
    fn kind(&self, v: &Value) -> &'static str {
        match v {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::LegacyMagic => "int",
            Value::Float => "float",
            Value::Str(_) => "string",
            Value::Global(_) => "callable",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Obj(i) => match self.objects.get(*i) {
                Some(Obj::Tuple(_)) => "tuple",
                Some(Obj::List(_)) => "list",
                Some(Obj::Dict(_)) => "dict",
                None => "object",
            },
        }
    }

    fn dict(&self, v: &Value) -> Option<&[(Value, Value)]> {
        match v {
            Value::Obj(i) => match self.objects.get(*i) {
                Some(Obj::Dict(entries)) => Some(entries),
                _ => None,
            },
            _ => None,
        }
    }

    fn list(&self, v: &Value) -> Option<&[Value]> {
        match v {
            Value::Obj(i) => match self.objects.get(*i) {
                Some(Obj::List(items)) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    fn tuple(&self, v: &Value) -> Option<&[Value]> {
        match v {
            Value::Obj(i) => match self.objects.get(*i) {
                Some(Obj::Tuple(items)) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    fn new_obj(&mut self, obj: Obj) -> Result<Value, String> {
        if self.objects.len() + self.tensors.len() >= MAX_OBJECTS {
            return Err(format!("its pickle builds more than {MAX_OBJECTS} objects"));
        }
        self.objects.push(obj);
        Ok(Value::Obj(self.objects.len() - 1))
    }

    /// Runs one pickle starting at `start`; returns its value and the position after its STOP.
    fn load(&mut self, data: &[u8], start: usize) -> Result<(Value, usize), String> {
        let mut m = Machine { vm: self, stack: Vec::new(), marks: Vec::new(), memo: Memo::default() };
        let mut pos = start;
        loop {
            let at = pos;
            let op = *data.get(pos).ok_or_else(|| format!("its pickle is truncated: it ends at byte {at} without STOP"))?;
            pos += 1;
            match op {
                0x80 => {
                    let [version] = take_array(data, &mut pos, at)?;
                    if version > 5 {
                        return Err(format!("its pickle has an unknown protocol version {version} at byte {at}"));
                    }
                }
                0x95 => {
                    take_array::<8>(data, &mut pos, at)?; // FRAME: a read-ahead hint only
                }
                b'.' => {
                    let value = m.pop(at)?;
                    return Ok((value, pos));
                }
                b'(' => {
                    if m.marks.len() >= MAX_STACK {
                        return Err(format!("its pickle has too many MARKs (at byte {at})"));
                    }
                    m.marks.push(m.stack.len());
                }
                b')' => m.push_obj(Obj::Tuple(Vec::new()))?,
                b']' => m.push_obj(Obj::List(Vec::new()))?,
                b'}' => m.push_obj(Obj::Dict(Vec::new()))?,
                b't' => {
                    let items = m.pop_mark(at)?;
                    m.push_obj(Obj::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(m.pop(at)?);
                    }
                    items.reverse();
                    m.push_obj(Obj::Tuple(items))?;
                }
                b'a' => {
                    let item = m.pop(at)?;
                    m.list_on_top(at)?.push(item);
                }
                b'e' => {
                    let items = m.pop_mark(at)?;
                    m.list_on_top(at)?.extend(items);
                }
                b's' => {
                    let value = m.pop(at)?;
                    let key = m.pop(at)?;
                    m.dict_on_top(at)?.push((key, value));
                }
                b'u' => {
                    let items = m.pop_mark(at)?;
                    if items.len() % 2 != 0 {
                        return Err(format!("its pickle's SETITEMS at byte {at} has an odd number of items"));
                    }
                    let dict = m.dict_on_top(at)?;
                    let mut items = items.into_iter();
                    while let (Some(k), Some(v)) = (items.next(), items.next()) {
                        dict.push((k, v));
                    }
                }
                b'q' => {
                    let [i] = take_array(data, &mut pos, at)?;
                    m.put(u32::from(i), at)?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(take_array(data, &mut pos, at)?);
                    m.put(i, at)?;
                }
                0x94 => {
                    let i = u32::try_from(m.memo.len()).map_err(|_| format!("its pickle's memo is full at byte {at}"))?;
                    m.put(i, at)?;
                }
                b'h' => {
                    let [i] = take_array(data, &mut pos, at)?;
                    m.get(u32::from(i), at)?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(take_array(data, &mut pos, at)?);
                    m.get(i, at)?;
                }
                b'J' => m.push(Value::Int(i64::from(i32::from_le_bytes(take_array(data, &mut pos, at)?))))?,
                b'K' => m.push(Value::Int(i64::from(take_array::<1>(data, &mut pos, at)?[0])))?,
                b'M' => m.push(Value::Int(i64::from(u16::from_le_bytes(take_array(data, &mut pos, at)?))))?,
                0x8a => {
                    let [n] = take_array(data, &mut pos, at)?;
                    let digits = take(data, &mut pos, usize::from(n), at)?;
                    let value = if digits.len() <= 8 {
                        let negative = digits.last().is_some_and(|&b| b & 0x80 != 0);
                        let mut buf = if negative { [0xff; 8] } else { [0; 8] };
                        buf[..digits.len()].copy_from_slice(digits);
                        Value::Int(i64::from_le_bytes(buf))
                    } else if digits == LEGACY_MAGIC {
                        Value::LegacyMagic
                    } else {
                        return Err(format!("its pickle has an integer of {n} bytes at byte {at}; at most 8 are supported"));
                    };
                    m.push(value)?;
                }
                b'G' => {
                    take_array::<8>(data, &mut pos, at)?;
                    m.push(Value::Float)?;
                }
                b'N' => m.push(Value::None)?,
                0x88 => m.push(Value::Bool(true))?,
                0x89 => m.push(Value::Bool(false))?,
                b'X' => {
                    let n = u32::from_le_bytes(take_array(data, &mut pos, at)?);
                    let s = text(take(data, &mut pos, n as usize, at)?, at)?;
                    m.push(Value::Str(s))?;
                }
                0x8c | b'U' => {
                    let [n] = take_array(data, &mut pos, at)?;
                    let s = text(take(data, &mut pos, usize::from(n), at)?, at)?;
                    m.push(Value::Str(s))?;
                }
                0x8d => {
                    let n = u64::from_le_bytes(take_array(data, &mut pos, at)?);
                    let n = usize::try_from(n).map_err(|_| format!("its pickle is truncated: the opcode at byte {at} runs past the end"))?;
                    let s = text(take(data, &mut pos, n, at)?, at)?;
                    m.push(Value::Str(s))?;
                }
                b'T' => {
                    let n = i32::from_le_bytes(take_array(data, &mut pos, at)?);
                    let n = usize::try_from(n).map_err(|_| format!("its pickle has a negative string length at byte {at}"))?;
                    let s = text(take(data, &mut pos, n, at)?, at)?;
                    m.push(Value::Str(s))?;
                }
                b'c' => {
                    let module = String::from_utf8_lossy(take_line(data, &mut pos, at)?).into_owned();
                    let name = String::from_utf8_lossy(take_line(data, &mut pos, at)?).into_owned();
                    m.push(resolve_global(&module, &name, at)?)?;
                }
                0x93 => {
                    let name = m.pop(at)?;
                    let module = m.pop(at)?;
                    let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                        return Err(format!("its pickle's STACK_GLOBAL at byte {at} does not name a module and a global"));
                    };
                    m.push(resolve_global(module, name, at)?)?;
                }
                b'R' => {
                    let args = m.pop(at)?;
                    let callable = m.pop(at)?;
                    let value = m.vm.reduce(&callable, &args, at)?;
                    m.push(value)?;
                }
                b'b' => {
                    let state = m.pop(at)?;
                    let target = m.top(at)?.clone();
                    // OrderedDict's state: its __dict__, e.g. torch's {'_metadata': …}, which is ignored
                    if m.vm.dict(&target).is_none() || m.vm.dict(&state).is_none() {
                        return Err(format!(
                            "its pickle's BUILD at byte {at} sets the state of a {} to a {}; only a dict's attributes are accepted",
                            m.vm.kind(&target),
                            m.vm.kind(&state)
                        ));
                    }
                }
                b'Q' => {
                    let pid = m.pop(at)?;
                    let storage = m.vm.persistent_load(&pid, at)?;
                    m.push(storage)?;
                }
                _ => {
                    return Err(match opcode_name(op) {
                        Some(name) => format!(
                            "its pickle uses opcode {name} (0x{op:02x}) at byte {at}, which this loader does not support (it never runs code from a file)"
                        ),
                        None => format!("its pickle has an unknown opcode 0x{op:02x} at byte {at}"),
                    });
                }
            }
        }
    }

    /// REDUCE: the Rust implementations of the allowed callables.
    fn reduce(&mut self, callable: &Value, args: &Value, at: usize) -> Result<Value, String> {
        let Value::Global(callable) = *callable else {
            return Err(format!("its pickle calls a {} at byte {at}", self.kind(callable)));
        };
        let args = self.tuple(args).ok_or_else(|| format!("its pickle's REDUCE at byte {at} has {} arguments, not a tuple", self.kind(args)))?;
        match callable {
            Callable::OrderedDict => {
                if !args.is_empty() {
                    return Err(format!("its pickle calls collections.OrderedDict with arguments at byte {at}"));
                }
                self.new_obj(Obj::Dict(Vec::new()))
            }
            Callable::RebuildParameter => match args {
                [tensor @ Value::Tensor(_), Value::Bool(_) | Value::Int(_), hooks] if self.dict(hooks).is_some() => Ok(tensor.clone()),
                _ => Err(format!("its pickle calls torch._utils._rebuild_parameter at byte {at} with unexpected arguments")),
            },
            Callable::RebuildTensorV2 => {
                if !(6..=7).contains(&args.len()) {
                    return Err(format!("its pickle calls torch._utils._rebuild_tensor_v2 at byte {at} with {} arguments", args.len()));
                }
                let args = args.to_vec();
                self.rebuild_tensor(&args, at)
            }
            Callable::Storage(dtype) => {
                Err(format!("its pickle calls the storage type {dtype:?} at byte {at}; storages may only come from persistent ids"))
            }
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
    fn rebuild_tensor(&mut self, args: &[Value], at: usize) -> Result<Value, String> {
        let bad = |what: &str| format!("its pickle calls torch._utils._rebuild_tensor_v2 at byte {at} with {what}");
        let Value::Storage(storage) = args[0] else {
            return Err(bad(&format!("a {} instead of a storage", self.kind(&args[0]))));
        };
        let Value::Int(offset) = args[1] else {
            return Err(bad("a storage offset that is not an int"));
        };
        let offset = usize::try_from(offset).map_err(|_| bad("a negative storage offset"))?;
        let shape = self.sizes(&args[2]).ok_or_else(|| bad("a size that is not a tuple of non-negative ints"))?;
        let stride = self.sizes(&args[3]).ok_or_else(|| bad("a stride that is not a tuple of non-negative ints"))?;
        if shape.len() != stride.len() {
            return Err(bad("size and stride of different lengths"));
        }
        if !matches!(args[4], Value::Bool(_) | Value::Int(_)) || self.dict(&args[5]).is_none() {
            return Err(bad("unexpected requires_grad or backward_hooks"));
        }
        if let Some(metadata) = args.get(6) {
            if !matches!(metadata, Value::None) && self.dict(metadata).is_none() {
                return Err(bad("metadata that is not a dict"));
            }
        }
        if self.objects.len() + self.tensors.len() >= MAX_OBJECTS {
            return Err(format!("its pickle builds more than {MAX_OBJECTS} objects"));
        }
        self.tensors.push(TensorDecl { storage, offset, shape, stride });
        Ok(Value::Tensor(self.tensors.len() - 1))
    }

    /// A tuple of at most [`MAX_NDIM`] non-negative ints.
    fn sizes(&self, v: &Value) -> Option<Vec<usize>> {
        let items = self.tuple(v)?;
        if items.len() > MAX_NDIM {
            return None;
        }
        items
            .iter()
            .map(|item| match item {
                Value::Int(i) => usize::try_from(*i).ok(),
                _ => None,
            })
            .collect()
    }

    /// BINPERSID: `('storage', storage_type, key, location, numel[, view_metadata = None])`.
    fn persistent_load(&mut self, pid: &Value, at: usize) -> Result<Value, String> {
        let bad = |what: &str| format!("its pickle has a persistent id at byte {at} that {what}");
        let items = self.tuple(pid).ok_or_else(|| bad("is not a tuple"))?;
        let (dtype, key, numel) = match items {
            [Value::Str(tag), Value::Global(Callable::Storage(dtype)), Value::Str(key), Value::Str(_location), Value::Int(numel), rest @ ..]
                if &**tag == "storage" && rest.len() <= 1 =>
            {
                if rest.first().is_some_and(|view| !matches!(view, Value::None)) {
                    return Err(bad("is a view of a storage (legacy view_metadata), which is not supported"));
                }
                (*dtype, key.clone(), usize::try_from(*numel).map_err(|_| bad("has a negative size"))?)
            }
            _ => return Err(bad("is not ('storage', <storage type>, key, location, size)")),
        };
        if numel.checked_mul(dtype.size()).is_none() {
            return Err(bad("has an impossible size"));
        }
        if let Some(&i) = self.storage_index.get(&key) {
            let s = &self.storages[i];
            if s.dtype != dtype || s.numel != numel {
                return Err(bad(&format!("declares storage \"{}\" again with another type or size", shown(&key))));
            }
            return Ok(Value::Storage(i));
        }
        self.storages.push(StorageDecl { key: key.clone(), dtype, numel });
        self.storage_index.insert(key, self.storages.len() - 1);
        Ok(Value::Storage(self.storages.len() - 1))
    }
}

impl Machine<'_> {
    /// The stack depth below which the innermost MARK hides values.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, v: Value) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err(format!("its pickle's stack grows past {MAX_STACK} values"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn push_obj(&mut self, obj: Obj) -> Result<(), String> {
        let v = self.vm.new_obj(obj)?;
        self.push(v)
    }

    fn pop(&mut self, at: usize) -> Result<Value, String> {
        if self.stack.len() <= self.floor() {
            return Err(format!("its pickle's opcode at byte {at} pops an empty stack"));
        }
        self.stack.pop().ok_or_else(|| format!("its pickle's opcode at byte {at} pops an empty stack"))
    }

    fn top(&self, at: usize) -> Result<&Value, String> {
        match self.stack.last() {
            Some(v) if self.stack.len() > self.floor() => Ok(v),
            _ => Err(format!("its pickle's opcode at byte {at} reads an empty stack")),
        }
    }

    /// The values pushed since the last MARK.
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or_else(|| format!("its pickle's opcode at byte {at} has no MARK"))?;
        if mark > self.stack.len() {
            return Err(format!("its pickle's opcode at byte {at} has a broken MARK"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn list_on_top(&mut self, at: usize) -> Result<&mut Vec<Value>, String> {
        let target = self.top(at)?.clone();
        let kind = self.vm.kind(&target);
        match (target, &mut self.vm.objects) {
            (Value::Obj(i), objects) => match objects.get_mut(i) {
                Some(Obj::List(items)) => Ok(items),
                _ => Err(format!("its pickle appends to a {kind} at byte {at}")),
            },
            _ => Err(format!("its pickle appends to a {kind} at byte {at}")),
        }
    }

    fn dict_on_top(&mut self, at: usize) -> Result<&mut Vec<(Value, Value)>, String> {
        let target = self.top(at)?.clone();
        let kind = self.vm.kind(&target);
        match (target, &mut self.vm.objects) {
            (Value::Obj(i), objects) => match objects.get_mut(i) {
                Some(Obj::Dict(entries)) => Ok(entries),
                _ => Err(format!("its pickle sets an item of a {kind} at byte {at}")),
            },
            _ => Err(format!("its pickle sets an item of a {kind} at byte {at}")),
        }
    }

    fn put(&mut self, i: u32, at: usize) -> Result<(), String> {
        let v = self.top(at)?.clone();
        self.memo.insert(i, v, at)
    }

    fn get(&mut self, i: u32, at: usize) -> Result<(), String> {
        let v = self.memo.get(i).cloned().ok_or_else(|| format!("its pickle reads memo entry {i} at byte {at}, which was never stored"))?;
        self.push(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/bert-torch/pytorch_model.bin");
    const LEGACY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/bert-torch-legacy/pytorch_model.bin");
    const MALICIOUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/bert-torch-malicious/pytorch_model.bin");
    const EXPECTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/bert-torch/expected.txt");
    const SAFETENSORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures-bert/tiny-bert-mlm/model.safetensors");

    /// FNV-1a 64 (make_torch_files.py computes the same).
    fn fnv1a64(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    }

    fn bytes_of<'a>(file: &'a [u8], t: &'a TorchTensor) -> &'a [u8] {
        match &t.data {
            TorchData::Range(r) => &file[r.clone()],
            TorchData::Owned(v) => v,
        }
    }

    fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    fn check_fixture(path: &str) {
        let file = std::fs::read(path).unwrap();
        assert!(is_torch(&file));
        let tensors = read(&file).unwrap();
        let expected = std::fs::read_to_string(EXPECTED).unwrap();
        let lines: Vec<&str> = expected.lines().collect();
        assert_eq!(tensors.len(), lines.len());
        assert_eq!(lines.len(), 60);
        for (t, line) in tensors.iter().zip(&lines) {
            let shape = t.shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
            let got = format!("{} {:?} [{}] {:016x}", t.name, t.dtype, shape, fnv1a64(bytes_of(&file, t)));
            assert_eq!(&got, line, "{path}");
            assert!(matches!(t.data, TorchData::Range(_)), "{}: contiguous tensors are zero-copy", t.name);
        }
        let find = |name: &str| tensors.iter().find(|t| t.name == name).unwrap();
        let (decoder, embeddings) = (find("cls.predictions.decoder.weight"), find("bert.embeddings.word_embeddings.weight"));
        assert_eq!(decoder.shape, [320, 48]);
        assert_eq!(bytes_of(&file, decoder), bytes_of(&file, embeddings));
        assert_eq!(decoder.data, embeddings.data, "tied: the same bytes of the file");
        let positions = find("bert.embeddings.position_ids");
        assert_eq!((positions.dtype, positions.shape.as_slice()), (TorchDtype::I64, &[1usize, 64][..]));
        let ids: Vec<i64> = bytes_of(&file, positions).chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(ids, (0..64).collect::<Vec<i64>>());
    }

    #[test]
    fn zip_fixture_matches_safetensors() {
        check_fixture(ZIP);
    }

    #[test]
    fn legacy_fixture_matches_safetensors() {
        check_fixture(LEGACY);
    }

    /// expected.txt itself against model.safetensors (8-byte header length, JSON header, data), parsed minimally.
    #[test]
    fn expected_list_matches_safetensors() {
        let st = std::fs::read(SAFETENSORS).unwrap();
        let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&st[8..8 + n]).unwrap();
        let data = &st[8 + n..];
        let expected = std::fs::read_to_string(EXPECTED).unwrap();
        let mut checked = 0;
        for line in expected.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let name = fields[0];
            let Some(at) = header.find(&format!("\"{name}\":")) else {
                assert!(name == "cls.predictions.decoder.weight" || name == "bert.embeddings.position_ids", "{name}");
                continue;
            };
            let entry = &header[at..at + header[at..].find('}').unwrap()];
            let offsets = &entry[entry.find("\"data_offsets\":[").unwrap() + 16..];
            let offsets: Vec<usize> = offsets[..offsets.find(']').unwrap()].split(',').map(|s| s.trim().parse().unwrap()).collect();
            let shape = &entry[entry.find("\"shape\":[").unwrap() + 9..];
            let shape: String = shape[..shape.find(']').unwrap()].chars().filter(|c| !c.is_whitespace()).collect();
            assert!(entry.contains("\"dtype\":\"F32\""));
            assert_eq!(fields[1], "F32");
            assert_eq!(fields[2], format!("[{shape}]"));
            assert_eq!(fields[3], format!("{:016x}", fnv1a64(&data[offsets[0]..offsets[1]])), "{name}");
            checked += 1;
        }
        assert_eq!(checked, 58);
    }

    #[test]
    fn malicious_fixture_is_refused_without_running_it() {
        let file = std::fs::read(MALICIOUS).unwrap();
        assert!(is_torch(&file));
        let err = read(&file).unwrap_err();
        assert!(err.contains("posix.system") || err.contains("os.system"), "{err}");
        assert!(err.contains("never runs code"), "{err}");
        assert!(!std::path::Path::new("/tmp/SHOULD_NOT_EXIST_torch_pickle").exists());
    }

    #[test]
    fn sniffing() {
        assert!(!is_torch(b""));
        assert!(!is_torch(&std::fs::read(SAFETENSORS).unwrap()));
        assert!(!is_torch(b"\x80\x02}q\x00."));
        assert!(read(b"").unwrap_err().contains("not a PyTorch checkpoint"));
        assert!(read(b"\x80\x02}.").unwrap_err().contains("not a PyTorch checkpoint"));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for path in [ZIP, LEGACY, MALICIOUS] {
            let file = std::fs::read(path).unwrap();
            for k in 0..64 {
                let len = file.len() * k / 64;
                assert!(read(&file[..len]).is_err(), "{path} cut at {len}");
            }
            // and every cut inside the pickle(s) and headers at the start
            for len in 0..file.len().min(8000) {
                assert!(read(&file[..len]).is_err(), "{path} cut at {len}");
            }
            // and every cut of the zip's tail (central directory, Zip64 records)
            for len in file.len().saturating_sub(8000)..file.len() {
                assert!(read(&file[..len]).is_err(), "{path} cut at {len}");
            }
        }
    }

    /// Byte flips never panic (they may or may not be detected: the data bytes are not checksummed).
    #[test]
    fn byte_flips_never_panic() {
        for path in [ZIP, LEGACY] {
            let mut file = std::fs::read(path).unwrap();
            let n = file.len();
            let positions: Vec<usize> = (0..n.min(8000)).chain((8000..n).step_by(61)).chain(n.saturating_sub(5000)..n).collect();
            for i in positions {
                for flip in if i % 4 == 0 { &[0xff, 0x01, 0x80][..] } else { &[0xff] } {
                    file[i] ^= flip;
                    let _ = read(&file);
                    file[i] ^= flip;
                }
            }
            assert!(read(&file).is_ok());
        }
    }

    /// Random byte changes and cuts (xorshift, fixed seed) of small hand-built files and of the fixtures' pickles.
    #[test]
    fn random_mutations_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        let small = [
            torch_zip(&views(false), &[("0", floats(6)), ("1", floats(1))], b"little", true),
            legacy(&views(true), &[("1", floats(1)), ("0", floats(6))], true),
        ];
        for base in &small {
            assert!(read(base).is_ok());
            for _ in 0..20_000 {
                let mut file = base.clone();
                for _ in 0..1 + next() % 4 {
                    let i = next() % file.len();
                    file[i] = next() as u8;
                }
                if next() % 4 == 0 {
                    file.truncate(next() % file.len());
                }
                let _ = read(&file);
            }
        }
        for path in [ZIP, LEGACY] {
            let mut file = std::fs::read(path).unwrap();
            for _ in 0..3000 {
                let i = next() % 8000;
                let old = file[i];
                file[i] = next() as u8;
                let _ = read(&file);
                file[i] = old;
            }
        }
    }

    // --- hand-built files -------------------------------------------------------------------------------

    /// A stored zip like torch's: 64-byte-aligned data through padding extra fields; optionally with Zip64 fields.
    fn zip(entries: &[(&str, &[u8], u16)], zip64: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data, method) in entries {
            let offset = out.len();
            let pad = (64 - (offset + 30 + name.len() + 4) % 64) % 64;
            out.extend_from_slice(b"PK\x03\x04");
            for v in [20u16, 0, *method, 0, 0] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [0u32, data.len() as u32, data.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&(4 + pad as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"FB");
            out.extend_from_slice(&(pad as u16).to_le_bytes());
            out.resize(out.len() + pad, b'Z');
            out.extend_from_slice(data);

            let big = |v: u32| if zip64 { 0xFFFF_FFFF } else { v };
            central.extend_from_slice(b"PK\x01\x02");
            for v in [45u16, 45, 0, *method, 0, 0] {
                central.extend_from_slice(&v.to_le_bytes());
            }
            for v in [0u32, big(data.len() as u32), big(data.len() as u32)] {
                central.extend_from_slice(&v.to_le_bytes());
            }
            for v in [name.len() as u16, if zip64 { 28 } else { 0 }, 0, 0, 0] {
                central.extend_from_slice(&v.to_le_bytes());
            }
            central.extend_from_slice(&0u32.to_le_bytes());
            central.extend_from_slice(&big(offset as u32).to_le_bytes());
            central.extend_from_slice(name.as_bytes());
            if zip64 {
                central.extend_from_slice(&1u16.to_le_bytes());
                central.extend_from_slice(&24u16.to_le_bytes());
                for v in [data.len() as u64, data.len() as u64, offset as u64] {
                    central.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        let (cd_offset, cd_size, n) = (out.len(), central.len(), entries.len());
        out.extend_from_slice(&central);
        if zip64 {
            let record = out.len();
            out.extend_from_slice(b"PK\x06\x06");
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&45u16.to_le_bytes());
            out.extend_from_slice(&45u16.to_le_bytes());
            out.extend_from_slice(&[0; 8]);
            for v in [n as u64, n as u64, cd_size as u64, cd_offset as u64] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(b"PK\x06\x07");
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(record as u64).to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
        let n16 = if zip64 { 0xFFFF } else { n as u16 };
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&n16.to_le_bytes());
        let (size32, offset32) = if zip64 { (0xFFFF_FFFF, 0xFFFF_FFFF) } else { (cd_size as u32, cd_offset as u32) };
        out.extend_from_slice(&size32.to_le_bytes());
        out.extend_from_slice(&offset32.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    /// A torch.save-like archive: archive/data.pkl, byteorder, the storages as archive/data/<key>, version.
    fn torch_zip(pickle: &[u8], storages: &[(&str, Vec<u8>)], byteorder: &[u8], zip64: bool) -> Vec<u8> {
        let names: Vec<String> = storages.iter().map(|(key, _)| format!("archive/data/{key}")).collect();
        let mut entries: Vec<(&str, &[u8], u16)> = vec![("archive/data.pkl", pickle, 0), ("archive/byteorder", byteorder, 0)];
        for (name, (_, data)) in names.iter().zip(storages) {
            entries.push((name, data, 0));
        }
        entries.push(("archive/version", b"3\n", 0));
        zip(&entries, zip64)
    }

    /// A pickle writer.
    struct Pk(Vec<u8>);

    impl Pk {
        fn new() -> Pk {
            Pk(vec![0x80, 2])
        }
        fn op(mut self, op: u8) -> Pk {
            self.0.push(op);
            self
        }
        fn raw(mut self, bytes: &[u8]) -> Pk {
            self.0.extend_from_slice(bytes);
            self
        }
        fn global(self, module: &str, name: &str) -> Pk {
            self.raw(format!("c{module}\n{name}\n").as_bytes())
        }
        fn s(self, s: &str) -> Pk {
            self.op(b'X').raw(&(s.len() as u32).to_le_bytes()).raw(s.as_bytes())
        }
        fn int(self, i: i32) -> Pk {
            self.op(b'J').raw(&i.to_le_bytes())
        }
        fn ints(self, v: &[i32]) -> Pk {
            v.iter().fold(self.op(b'('), |p, &i| p.int(i)).op(b't')
        }
        fn ordered_dict(self) -> Pk {
            self.global("collections", "OrderedDict").op(b')').op(b'R')
        }
        /// `_rebuild_tensor_v2(('storage', torch.FloatStorage, key, 'cpu', numel[, None]), offset, size, stride, False, OrderedDict())`
        fn tensor(self, key: &str, numel: i32, offset: i32, size: &[i32], stride: &[i32], legacy: bool) -> Pk {
            let p = self.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
            let p = p.op(b'(').s("storage").global("torch", "FloatStorage").s(key).s("cpu").int(numel);
            let p = if legacy { p.op(b'N') } else { p };
            p.op(b't').op(b'Q').int(offset).ints(size).ints(stride).op(0x89).ordered_dict().op(b't').op(b'R')
        }
        /// `OrderedDict()` + SETITEMS of what `items` writes + STOP.
        fn state_dict(items: impl FnOnce(Pk) -> Pk) -> Vec<u8> {
            items(Pk::new().ordered_dict().op(b'(')).op(b'u').op(b'.').0
        }
    }

    fn floats(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
    }

    /// A 2x3 storage [0..6) seen as "w" (contiguous), "t" (transposed view) and "s" (offset 1, stride 2).
    fn views(legacy: bool) -> Vec<u8> {
        Pk::state_dict(|p| {
            p.s("w")
                .tensor("0", 6, 0, &[2, 3], &[3, 1], legacy)
                .s("t")
                .tensor("0", 6, 0, &[3, 2], &[1, 3], legacy)
                .s("s")
                .tensor("0", 6, 1, &[2], &[2], legacy)
                .s("scalar")
                .tensor("1", 1, 0, &[], &[], legacy)
                .s("empty")
                .tensor("1", 1, 1, &[0, 4], &[4, 1], legacy)
        })
    }

    fn check_views(file: &[u8]) {
        let tensors = read(file).unwrap();
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w", "t", "s", "scalar", "empty"]);
        assert!(matches!(tensors[0].data, TorchData::Range(_)));
        assert_eq!(f32s(bytes_of(file, &tensors[0])), [0., 1., 2., 3., 4., 5.]);
        assert!(matches!(tensors[1].data, TorchData::Owned(_)));
        assert_eq!(tensors[1].shape, [3, 2]);
        assert_eq!(f32s(bytes_of(file, &tensors[1])), [0., 3., 1., 4., 2., 5.]);
        assert_eq!(f32s(bytes_of(file, &tensors[2])), [1., 3.]);
        assert_eq!(tensors[3].shape, Vec::<usize>::new());
        assert_eq!(f32s(bytes_of(file, &tensors[3])), [0.]);
        assert_eq!((tensors[4].shape.as_slice(), bytes_of(file, &tensors[4]).len()), (&[0usize, 4][..], 0));
    }

    #[test]
    fn strided_views_zip_and_zip64() {
        for zip64 in [false, true] {
            let file = torch_zip(&views(false), &[("0", floats(6)), ("1", floats(1))], b"little", zip64);
            check_views(&file);
        }
    }

    /// magic, protocol version, sys_info, the state dict, the key list, then count + bytes per key.
    fn legacy(main: &[u8], storages: &[(&str, Vec<u8>)], little_endian: bool) -> Vec<u8> {
        let mut out = vec![0x80, 2, 0x8a, 10];
        out.extend_from_slice(&LEGACY_MAGIC);
        out.push(b'.');
        out.extend_from_slice(b"\x80\x02M\xe9\x03.");
        out.extend(Pk::new().op(b'}').s("little_endian").op(if little_endian { 0x88 } else { 0x89 }).op(b's').op(b'.').0);
        out.extend_from_slice(main);
        out.extend(storages.iter().fold(Pk::new().op(b']').op(b'('), |p, (key, _)| p.s(key)).op(b'e').op(b'.').0);
        for (_, data) in storages {
            out.extend_from_slice(&(data.len() as u64 / 4).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn strided_views_legacy() {
        let file = legacy(&views(true), &[("1", floats(1)), ("0", floats(6))], true);
        assert!(is_torch(&file));
        check_views(&file);
        let file = legacy(&views(true), &[("1", floats(1)), ("0", floats(6))], false);
        assert!(read(&file).unwrap_err().contains("big-endian"));
        let err = read(&legacy(&views(true), &[("0", floats(6))], true)).unwrap_err();
        assert!(err.contains("\"1\""), "{err}");
        let err = read(&legacy(&views(true), &[("1", floats(1)), ("0", floats(5))], true)).unwrap_err();
        assert!(err.contains("5 elements"), "{err}");
        // a storage view (non-None view_metadata)
        let main = Pk::state_dict(|p| {
            let p = p.s("v").global("torch._utils", "_rebuild_tensor_v2").op(b'(');
            let p = p.op(b'(').s("storage").global("torch", "FloatStorage").s("0").s("cpu").int(6).ints(&[0, 1]).op(b't').op(b'Q');
            p.int(0).ints(&[1]).ints(&[1]).op(0x89).ordered_dict().op(b't').op(b'R')
        });
        let err = read(&legacy(&main, &[("0", floats(6))], true)).unwrap_err();
        assert!(err.contains("view"), "{err}");
    }

    /// Protocol-4 opcodes (FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE), _rebuild_parameter, a BUILD with
    /// _metadata and the tied tensor memoised with LONG_BINPUT / LONG_BINGET.
    #[test]
    fn protocol_4_parameters_and_ties() {
        let short = |p: Pk, s: &str| p.op(0x8c).op(s.len() as u8).raw(s.as_bytes());
        let mut p = Pk(vec![0x80, 4, 0x95]).raw(&[0; 8]);
        p = short(short(p, "collections"), "OrderedDict").op(0x93).op(0x94).op(b')').op(b'R').op(b'(');
        p = short(short(p, "a"), "torch._utils");
        p = short(p, "_rebuild_parameter").op(0x93).op(b'(');
        p = p.tensor("k", 4, 0, &[2, 2], &[2, 1], false).op(b'r').raw(&7u32.to_le_bytes());
        p = p.op(0x88).ordered_dict().op(b't').op(b'R');
        p = short(p, "b").op(b'j').raw(&7u32.to_le_bytes()).op(b'u');
        p = p.op(b'}').s("_metadata").op(b'}').s("").op(b'}').s("version").op(b'K').op(1).op(b's').op(b's').op(b's').op(b'b').op(b'.');
        let file = torch_zip(&p.0, &[("k", floats(4))], b"little\n", false);
        let tensors = read(&file).unwrap();
        assert_eq!(tensors.len(), 2);
        assert_eq!((tensors[0].name.as_str(), tensors[1].name.as_str()), ("a", "b"));
        assert_eq!(tensors[0].data, tensors[1].data);
        assert_eq!(f32s(bytes_of(&file, &tensors[1])), [0., 1., 2., 3.]);
    }

    fn refused(pickle: &[u8]) -> String {
        let file = torch_zip(pickle, &[("0", floats(6))], b"little", false);
        read(&file).unwrap_err()
    }

    #[test]
    fn refuses_posix_system() {
        let p = Pk::new().global("posix", "system").s("touch /tmp/SHOULD_NOT_EXIST_torch_pickle").op(0x85).op(b'R').op(b'.');
        let err = refused(&p.0);
        assert!(err.contains("posix.system at byte 2"), "{err}");
        assert!(err.contains("never runs code"), "{err}");
        assert!(!std::path::Path::new("/tmp/SHOULD_NOT_EXIST_torch_pickle").exists());
    }

    #[test]
    fn refuses_builtins_eval_via_stack_global() {
        let p = Pk::new().s("builtins").s("eval").op(0x93).s("1+1").op(0x85).op(b'R').op(b'.');
        let err = refused(&p.0);
        assert!(err.contains("builtins.eval at byte 24"), "{err}");
    }

    #[test]
    fn refuses_other_globals() {
        for (module, name) in [
            ("torch._utils", "_rebuild_qtensor"),
            ("torch.storage", "_load_from_bytes"),
            ("__builtin__", "getattr"),
            ("os", "system"),
            ("torch", "_utils._rebuild_tensor_v2"),
        ] {
            let err = refused(&Pk::new().global(module, name).op(b'.').0);
            assert!(err.contains(&format!("{module}.{name} at byte 2")), "{err}");
        }
        let err = refused(&Pk::new().global("torch", "BoolStorage").op(b'.').0);
        assert!(err.contains("torch.BoolStorage") && err.contains("not supported"), "{err}");
        // a long name is shortened in the message
        let err = refused(&Pk::new().s("os").s(&"x".repeat(5000)).op(0x93).op(b'.').0);
        assert!(err.len() < 400 && err.contains("os.xxx") && err.contains('…'), "{err}");
        // a control character in a name is escaped in the message
        let err = refused(&Pk::new().global("os\r", "system").op(b'.').0);
        assert!(err.contains("os\\r.system"), "{err}");
    }

    #[test]
    fn refuses_code_running_opcodes() {
        for (bytes, name) in [
            (&b"\x80\x02(ios\nsystem\nX\x01\x00\x00\x00x."[..], "INST (0x69) at byte 3"),
            (b"\x80\x02)\x81.", "NEWOBJ (0x81) at byte 3"),
            (b"\x80\x02)}\x92.", "NEWOBJ_EX"),
            (b"\x80\x02(o.", "OBJ"),
            (b"\x80\x02P1\n.", "PERSID"),
            (b"\x80\x02\x82\x01.", "EXT1"),
            (b"\x80\x02\x83\x01\x00.", "EXT2"),
            (b"\x80\x02\x84\x01\x00\x00\x00.", "EXT4"),
            (b"\x80\x02\x96\x00\x00\x00\x00\x00\x00\x00\x00.", "BYTEARRAY8"),
            (b"\x80\x02N2.", "DUP"),
            (b"\x80\x02\xff.", "unknown opcode 0xff at byte 2"),
        ] {
            let err = refused(bytes);
            assert!(err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn refuses_tensor_larger_than_its_storage() {
        let p = Pk::state_dict(|p| p.s("big").tensor("0", 6, 0, &[7], &[1], false));
        let err = refused(&p);
        assert!(err.contains("\"big\"") && err.contains("does not fit"), "{err}");
        let p = Pk::state_dict(|p| p.s("late").tensor("0", 6, 5, &[2, 1], &[1, 1], false));
        assert!(refused(&p).contains("does not fit"));
        let p = Pk::state_dict(|p| p.s("neg").tensor("0", 6, 0, &[2], &[-1], false));
        assert!(refused(&p).contains("stride"));
        let p = Pk::state_dict(|p| p.s("huge").tensor("0", 6, 0, &[1 << 30, 1 << 30, 1 << 30], &[0, 0, 0], false));
        assert!(refused(&p).contains("too large"));
        // the storage must have exactly numel * element size bytes
        let p = Pk::state_dict(|p| p.s("x").tensor("0", 5, 0, &[5], &[1], false));
        assert!(refused(&p).contains("24 bytes"));
        // and must exist
        let p = Pk::state_dict(|p| p.s("x").tensor("9", 6, 0, &[6], &[1], false));
        assert!(refused(&p).contains("archive/data/9"));
    }

    #[test]
    fn refuses_compressed_entries() {
        let pickle = Pk::state_dict(|p| p.s("w").tensor("0", 6, 0, &[6], &[1], false));
        let data = floats(6);
        let file = zip(&[("archive/data.pkl", &pickle, 0), ("archive/data/0", &data, 8)], false);
        let err = read(&file).unwrap_err();
        assert!(err.contains("archive/data/0 is compressed") && err.contains("torch.save"), "{err}");
    }

    #[test]
    fn refuses_big_endian() {
        let pickle = Pk::state_dict(|p| p.s("w").tensor("0", 6, 0, &[6], &[1], false));
        let err = read(&torch_zip(&pickle, &[("0", floats(6))], b"big", false)).unwrap_err();
        assert!(err.contains("big-endian"), "{err}");
        assert!(read(&torch_zip(&pickle, &[("0", floats(6))], b"middle", false)).is_err());
    }

    #[test]
    fn refuses_non_tensor_values() {
        let err = refused(&Pk::state_dict(|p| p.s("w").tensor("0", 6, 0, &[6], &[1], false).s("step").int(5)));
        assert!(err.contains("\"step\"") && err.contains("int, not a tensor"), "{err}");
        let err = refused(&Pk::state_dict(|p| p.s("nested").ordered_dict()));
        assert!(err.contains("\"nested\"") && err.contains("dict"), "{err}");
        let err = refused(&Pk::new().op(b']').op(b'.').0);
        assert!(err.contains("list, not a state dict"), "{err}");
        let err = refused(&Pk::state_dict(|p| p.s("w").tensor("0", 6, 0, &[6], &[1], false).s("w").tensor("0", 6, 0, &[6], &[1], false)));
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn refuses_bad_archives() {
        let pickle = Pk::state_dict(|p| p);
        assert!(read(&zip(&[("archive/data.pkl", &pickle, 0)], false)).unwrap().is_empty());
        let two = zip(&[("a/data.pkl", &pickle, 0), ("b/data.pkl", &pickle, 0)], false);
        assert!(read(&two).unwrap_err().contains("2 data.pkl"));
        let none = zip(&[("a/model.pkl", &pickle, 0)], false);
        assert!(read(&none).unwrap_err().contains("no <folder>/data.pkl"));
        let dup = zip(&[("a/data.pkl", &pickle, 0), ("a/data.pkl", &pickle, 0)], false);
        assert!(read(&dup).unwrap_err().contains("two entries"));
        // a storage id that is not ('storage', type, key, location, numel)
        let p = Pk::new().op(b'(').s("module").s("x").op(b't').op(b'Q').op(b'.');
        assert!(refused(&p.0).contains("persistent id at byte"));
    }

    /// No recursion: a million nested lists, marks and memo entries are fine (and bounded), not a stack overflow.
    #[test]
    fn deep_nesting_is_iterative() {
        let depth = 1_000_000;
        let mut p = Pk::new();
        p.0.resize(p.0.len() + depth, b']');
        p.0.resize(p.0.len() + depth - 1, b'a');
        let err = refused(&p.op(b'.').0);
        assert!(err.contains("list, not a state dict"), "{err}");
        let mut p = Pk::new();
        p.0.resize(p.0.len() + depth, b'(');
        assert!(refused(&p.op(b'.').0).contains("empty stack"));
        let mut p = Pk::new().op(b'N');
        for i in 0..100_000u32 {
            p = p.op(b'r').raw(&i.wrapping_mul(2_654_435_761).to_le_bytes());
        }
        assert!(refused(&p.op(b'.').0).contains("None, not a state dict"));
    }

    #[test]
    fn malformed_pickles_are_errors() {
        for bytes in [
            &b"\x80\x02."[..],
            b"\x80\x02h\x05.",
            b"\x80\x02Nu.",
            b"\x80\x02(N}u.",
            b"\x80\x02NNa.",
            b"\x80\x02}NNNu.",
            b"\x80\x02X\xff\xff\xff\xff",
            b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x80\x02T\xff\xff\xff\xff",
            b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00.",
            b"\x80\x02X\x02\x00\x00\x00\xff\xfe.",
            b"\x80\x09.",
            b"\x80\x02ccollections\nOrderedDict",
            b"\x80\x02NN\x93.",
            b"\x80\x02ccollections\nOrderedDict\nN\x85R.",
            b"\x80\x02ccollections\nOrderedDict\nNR.",
            b"\x80\x02NNR.",
            b"\x80\x02ctorch\nFloatStorage\n)R.",
            b"\x80\x02}Nb.",
            b"\x80\x02]}b.",
            b"\x80\x02(N.",
        ] {
            assert!(refused(bytes).starts_with("its pickle"), "{bytes:?}: {}", refused(bytes));
        }
        // the memo: out-of-order indices, then the dense slot catching up with a sparse one, then overwrites
        let mut vm = Vm::default();
        let p = b"\x80\x02K\x05q\x01K\x06q\x00K\x07q\x01K\x08q\x00\x94h\x00h\x01h\x02\x87.";
        let (v, _) = vm.load(p, 0).unwrap();
        let items: Vec<i64> = vm.tuple(&v).unwrap().iter().map(|v| if let Value::Int(i) = v { *i } else { -1 }).collect();
        assert_eq!(items, [8, 7, 8]);
        assert!(vm.load(b"\x80\x02Nq\x01h\x00.", 0).unwrap_err().contains("memo entry 0"));
        // LONG1 sign extension
        let mut vm = Vm::default();
        assert!(matches!(vm.load(b"\x80\x02\x8a\x02\xff\xff.", 0).unwrap().0, Value::Int(-1)));
        assert!(matches!(vm.load(b"\x80\x02\x8a\x02\xff\x7f.", 0).unwrap().0, Value::Int(32767)));
        assert!(matches!(vm.load(b"\x80\x02\x8a\x00.", 0).unwrap().0, Value::Int(0)));
    }
}
