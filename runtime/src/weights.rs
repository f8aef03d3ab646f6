//! Checkpoints: `model.safetensors`, or shards listed in `model.safetensors.index.json`; or
//! PyTorch's `pytorch_model.bin` (and its shards), read by the safe reader of `torch.rs`, which
//! never runs code from the file. Files are memory-mapped (never copied whole) on native targets
//! and read from bytes in the browser. Headers are validated before any tensor is touched: a
//! truncated file, offsets that overlap or run past the end, or an unknown dtype are errors
//! naming the file.

use std::collections::HashMap;
use std::ops::Deref;

use safetensors::tensor::Dtype;

use crate::torch::TorchData;
use crate::{Error, Result};

/// The bytes of one file: a memory map, or an owned buffer.
enum Buffer {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Buffer::Mapped(m) => m,
            Buffer::Owned(v) => v,
        }
    }
}

struct File {
    name: String,
    buffer: Buffer,
    format: &'static str,
}

/// Where a tensor's bytes are: a range of its file, or (a strided PyTorch view) gathered once.
enum Data {
    Range(std::ops::Range<usize>),
    Owned(Vec<u8>),
}

struct Entry {
    file: usize,
    dtype: StoredDtype,
    shape: Vec<usize>,
    data: Data,
}

pub use crate::dtype::StoredDtype;

/// A view of one stored tensor.
pub struct TensorView<'a> {
    pub name: &'a str,
    pub file: &'a str,
    pub dtype: StoredDtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

impl TensorView<'_> {
    /// The values as f32 (f16 and bf16 widened exactly).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let b = self.bytes;
        Ok(match self.dtype {
            StoredDtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            StoredDtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            StoredDtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            StoredDtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => {
                return Err(Error::weights(self.file, format!("tensor \"{}\": expected a floating-point tensor, found {other:?}", self.name)))
            }
        })
    }
    /// The values as f64 (f64 exactly, narrower floats widened).
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        if self.dtype == StoredDtype::F64 {
            return Ok(self.bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect());
        }
        Ok(self.to_f32()?.into_iter().map(f64::from).collect())
    }
    /// The values as i64 (integer tensors of reference files).
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        let b = self.bytes;
        Ok(match self.dtype {
            StoredDtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
            StoredDtype::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
            StoredDtype::U8 => b.iter().map(|&v| v as i64).collect(),
            other => return Err(Error::weights(self.file, format!("tensor \"{}\": expected an integer tensor, found {other:?}", self.name))),
        })
    }
}

/// Where a model's parameters come from: a checkpoint, or fresh initialisation.
pub trait WeightSource {
    fn contains(&self, name: &str) -> bool;
    /// Stored shape of a tensor, if present.
    fn shape_of(&self, name: &str) -> Option<Vec<usize>>;
    /// The tensor as f32, checked against the expected shape.
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
    /// The error for a tensor that is needed but absent (naming where it was looked for).
    fn missing(&self, name: &str) -> Error;
    /// Where the tensor is (for messages).
    fn location(&self, name: &str) -> String;
}

impl WeightSource for Checkpoint {
    fn contains(&self, name: &str) -> bool {
        Checkpoint::contains(self, name)
    }
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.get(name).map(|t| t.shape.to_vec())
    }
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Checkpoint::f32(self, name, shape)
    }
    fn missing(&self, name: &str) -> Error {
        match self.require(name) {
            Err(e) => e,
            Ok(_) => Error::weights(self.file_of(name), format!("tensor \"{name}\" is present")),
        }
    }
    fn location(&self, name: &str) -> String {
        self.file_of(name).to_string()
    }
}

/// A checkpoint with a few named tensors taken from another file instead (the BERT parity check
/// takes the pooler its reference used from the reference file).
pub struct Overlay<'a> {
    pub base: &'a Checkpoint,
    pub extra: &'a Checkpoint,
    /// The names read from `extra`.
    pub names: Vec<String>,
}

impl Overlay<'_> {
    fn source(&self, name: &str) -> &Checkpoint {
        if self.names.iter().any(|n| n == name) { self.extra } else { self.base }
    }
}

impl WeightSource for Overlay<'_> {
    fn contains(&self, name: &str) -> bool {
        self.source(name).contains(name)
    }
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        WeightSource::shape_of(self.source(name), name)
    }
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.source(name).f32(name, shape)
    }
    fn missing(&self, name: &str) -> Error {
        WeightSource::missing(self.source(name), name)
    }
    fn location(&self, name: &str) -> String {
        self.source(name).file_of(name).to_string()
    }
}

/// One checkpoint: one or more files and an index from tensor name to where its bytes are.
pub struct Checkpoint {
    files: Vec<File>,
    index: HashMap<String, Entry>,
}

/// The tensors of one file, by format: PyTorch (zip or legacy pickle) when it starts like one,
/// else safetensors.
fn parse_file(name: String, buffer: Buffer) -> Result<(File, Vec<(String, StoredDtype, Vec<usize>, Data)>)> {
    if crate::torch::is_torch(&buffer) {
        let tensors = crate::torch::read(&buffer, &name)?;
        let format = if buffer.starts_with(b"PK") { "PyTorch zip" } else { "PyTorch legacy" };
        let tensors = tensors
            .into_iter()
            .map(|t| {
                let data = match t.data {
                    TorchData::Range(r) => Data::Range(r),
                    TorchData::Owned(v) => Data::Owned(v),
                };
                (t.name, t.dtype, t.shape, data)
            })
            .collect();
        return Ok((File { name, buffer, format }, tensors));
    }
    let tensors = safetensors_header(&buffer)
        .map_err(|m| Error::weights(&name, m))?
        .into_iter()
        .map(|t| (t.name, t.dtype, t.shape, Data::Range(t.range)))
        .collect();
    Ok((File { name, buffer, format: "safetensors" }, tensors))
}

/// One tensor of a safetensors header: where its bytes are in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderEntry {
    pub name: String,
    pub dtype: StoredDtype,
    pub shape: Vec<usize>,
    /// Byte range in the whole file.
    pub range: std::ops::Range<usize>,
}

/// The largest safetensors header this reader accepts (the safetensors crate's own limit).
pub const MAX_HEADER: usize = 100_000_000;

/// Read and check a safetensors header against the file's bytes, before any tensor is touched:
/// the 8-byte length, the JSON, each tensor's dtype, shape and data offsets (the bytes its shape
/// needs, inside the file, overlapping no other tensor). The message names the tensor or field
/// at fault and what was expected; the caller prefixes the file.
pub fn safetensors_header(bytes: &[u8]) -> std::result::Result<Vec<HeaderEntry>, String> {
    let corrupt = "it may be truncated or corrupt, or not a safetensors file or PyTorch checkpoint";
    if bytes.len() < 8 {
        return Err(format!("{} bytes, too short for a safetensors header (8 bytes of length, then JSON); {corrupt}", bytes.len()));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER as u64 || n as usize > bytes.len() - 8 {
        return Err(format!("the header says it is {n} bytes long, but the file has {} bytes after the length (and headers are at most {MAX_HEADER}); {corrupt}", bytes.len() - 8));
    }
    let n = n as usize;
    let text = std::str::from_utf8(&bytes[8..8 + n]).map_err(|e| format!("the header is not UTF-8 (byte {}); {corrupt}", 8 + e.valid_up_to()))?;
    let header: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("the header is not valid JSON ({e}); {corrupt}"))?;
    let obj = header.as_object().ok_or_else(|| format!("the header is not a JSON object; {corrupt}"))?;
    let data_len = bytes.len() - 8 - n;
    let mut out = Vec::with_capacity(obj.len());
    for (tensor, info) in obj {
        if tensor == "__metadata__" {
            let ok = info.as_object().is_some_and(|m| m.values().all(serde_json::Value::is_string));
            if !ok {
                return Err("header field \"__metadata__\": expected an object of strings".into());
            }
            continue;
        }
        let field = |key: &str| info.get(key).ok_or_else(|| format!("tensor \"{tensor}\": the header has no \"{key}\""));
        let dtype_name = field("dtype")?.as_str().ok_or_else(|| format!("tensor \"{tensor}\": \"dtype\" is not a string"))?;
        let dtype = StoredDtype::from_safetensors(dtype_name).ok_or_else(|| {
            format!("tensor \"{tensor}\": dtype \"{dtype_name}\" is not supported; expected F32, F16, BF16, F64, I64, I32 or U8")
        })?;
        let size = dtype.size();
        let shape: Vec<usize> = field("shape")?
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect::<Option<Vec<usize>>>())
            .ok_or_else(|| format!("tensor \"{tensor}\": \"shape\" is not a list of non-negative integers"))?;
        let offsets = field("data_offsets")?
            .as_array()
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((usize::try_from(a[0].as_u64()?).ok()?, usize::try_from(a[1].as_u64()?).ok()?)))
            .ok_or_else(|| format!("tensor \"{tensor}\": \"data_offsets\" is not a pair [start, end] of byte offsets"))?;
        let needed = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
        let (start, end) = offsets;
        match needed {
            None => return Err(format!("tensor \"{tensor}\": shape {shape:?} of {dtype_name} is too large to address")),
            Some(b) if end < start || end - start != b => {
                return Err(format!("tensor \"{tensor}\": shape {shape:?} of {dtype_name} needs {b} bytes, but its data_offsets [{start}, {end}] hold {}", end as i128 - start as i128))
            }
            _ => {}
        }
        if end > data_len {
            return Err(format!("tensor \"{tensor}\": its data_offsets [{start}, {end}] run past the end of the data ({data_len} bytes after the header); {corrupt}"));
        }
        out.push(HeaderEntry { name: tensor.clone(), dtype, shape, range: 8 + n + start..8 + n + end });
    }
    // No two tensors may share bytes.
    let mut by_start: Vec<&HeaderEntry> = out.iter().filter(|t| !t.range.is_empty()).collect();
    by_start.sort_by_key(|t| (t.range.start, t.range.end));
    for pair in by_start.windows(2) {
        if pair[1].range.start < pair[0].range.end {
            return Err(format!("tensors \"{}\" and \"{}\" overlap in the file (their data_offsets share bytes); {corrupt}", pair[0].name, pair[1].name));
        }
    }
    Ok(out)
}

impl Checkpoint {
    /// A checkpoint from in-memory files (the browser, tests): (name, bytes) per shard, each
    /// safetensors or a PyTorch checkpoint.
    pub fn from_bytes(files: Vec<(String, Vec<u8>)>) -> Result<Self> {
        let files = files.into_iter().map(|(name, bytes)| parse_file(name, Buffer::Owned(bytes))).collect::<Result<Vec<_>>>()?;
        Self::index(files)
    }

    fn index(parsed: Vec<(File, Vec<(String, StoredDtype, Vec<usize>, Data)>)>) -> Result<Self> {
        let mut index: HashMap<String, Entry> = HashMap::new();
        let mut files = Vec::with_capacity(parsed.len());
        for (i, (f, tensors)) in parsed.into_iter().enumerate() {
            for (name, dtype, shape, data) in tensors {
                if let Some(prev) = index.get(&name) {
                    return Err(Error::weights(&f.name, format!("tensor \"{name}\" is also in {}", files.get(prev.file).map_or("", |p: &File| &p.name))));
                }
                index.insert(name, Entry { file: i, dtype, shape, data });
            }
            files.push(f);
        }
        Ok(Checkpoint { files, index })
    }

    /// Open a single `.safetensors` file (memory-mapped).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_file(path: &std::path::Path) -> Result<Self> {
        Self::index(vec![map_file(path)?])
    }

    /// Open the weights of a Hugging Face model folder, the first of: `model.safetensors`, the
    /// shards named by `model.safetensors.index.json`, `pytorch_model.bin`, the shards named by
    /// `pytorch_model.bin.index.json`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_dir(dir: &std::path::Path) -> Result<Self> {
        for (single, index) in [("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json")] {
            if crate::files::present(&dir.join(single)) {
                return Self::open_file(&dir.join(single));
            }
            if crate::files::present(&dir.join(index)) {
                return Self::open_shards(dir, &dir.join(index));
            }
        }
        Err(Error::weights(
            &dir.display().to_string(),
            "no weights in this folder: expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json",
        ))
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn open_shards(dir: &std::path::Path, index_path: &std::path::Path) -> Result<Self> {
        let shown = index_path.display().to_string();
        let text = crate::files::read_text(index_path)?;
        let shards = shard_names(&shown, &text)?;
        let files = shards.iter().map(|s| map_file(&dir.join(s))).collect::<Result<Vec<_>>>()?;
        let ckpt = Self::index(files)?;
        // Every tensor the index promises must be where it says.
        let map: serde_json::Value = serde_json::from_str(&text).expect("parsed above");
        for (tensor, shard) in map["weight_map"].as_object().expect("checked above") {
            let found = ckpt.index.get(tensor).map(|e| &ckpt.files[e.file].name);
            let expected = dir.join(shard.as_str().unwrap_or_default()).display().to_string();
            if found != Some(&expected) {
                return Err(Error::weights(&shown, format!("weight_map says \"{tensor}\" is in {shard}, but that file does not hold it")));
            }
        }
        Ok(ckpt)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The files, their format, and the stored dtypes (for `info`).
    pub fn describe(&self) -> String {
        let files: Vec<&str> = self.files.iter().map(|f| f.name.rsplit(['/', '\\']).next().unwrap_or(&f.name)).collect();
        let mut dtypes: Vec<String> = self.names().filter_map(|n| self.get(n)).map(|t| format!("{:?}", t.dtype)).collect();
        dtypes.sort();
        dtypes.dedup();
        let mut formats: Vec<&str> = self.files.iter().map(|f| f.format).collect();
        formats.dedup();
        format!("{} ({}, {} tensors, {})", files.join(", "), formats.join(" and "), self.index.len(), dtypes.join(" and "))
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Where the tensor is stored (for messages): the file that holds it, or the first file.
    pub fn file_of(&self, name: &str) -> &str {
        self.index.get(name).map_or_else(|| self.files.first().map_or("checkpoint", |f| &f.name), |e| &self.files[e.file].name)
    }

    /// A view of a stored tensor, if present.
    pub fn get(&self, name: &str) -> Option<TensorView<'_>> {
        let (key, e) = self.index.get_key_value(name)?;
        let f = &self.files[e.file];
        let bytes = match &e.data {
            Data::Range(r) => f.buffer.get(r.clone())?,
            Data::Owned(v) => v.as_slice(),
        };
        Some(TensorView { name: key, file: &f.name, dtype: e.dtype, shape: &e.shape, bytes })
    }

    /// The tensor as f32, checked against the expected shape and to be finite: a NaN or an
    /// infinity in a weight makes every output it touches meaningless (and a de-identification
    /// model that outputs NaN finds no PHI), so it is refused at load.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.require(name)?;
        if t.shape != shape {
            return Err(Error::weights(t.file, format!("tensor \"{name}\" has shape {:?}, expected {shape:?} from the config", t.shape)));
        }
        let values = t.to_f32()?;
        check_finite(t.file, name, &values)?;
        Ok(values)
    }

    /// The tensor, or an error naming it and the file(s) searched.
    pub fn require(&self, name: &str) -> Result<TensorView<'_>> {
        self.get(name).ok_or_else(|| {
            let files: Vec<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
            let files = if files.is_empty() { "the checkpoint (it has no files)".to_string() } else { files.join(", ") };
            Error::weights(&files, format!("missing tensor \"{name}\""))
        })
    }
}

/// Refuse a tensor holding NaN or an infinity, naming the first such element.
pub fn check_finite(file: &str, name: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => {
            let bad = values.iter().filter(|v| !v.is_finite()).count();
            Err(Error::weights(
                file,
                format!("tensor \"{name}\": element {i} is {} ({bad} of its {} values are not finite); the checkpoint is corrupt or its training diverged, and a model with such weights cannot be trusted", values[i], values.len()),
            ))
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn map_file(path: &std::path::Path) -> Result<(File, Vec<(String, StoredDtype, Vec<usize>, Data)>)> {
    let name = path.display().to_string();
    let file = crate::files::open_regular(path)?;
    // SAFETY: the map is read-only; a file changed by another process while mapped is outside
    // what any loader can defend against (transformers maps the same way).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Io { path: name.clone(), source: e })?;
    parse_file(name, Buffer::Mapped(map))
}

/// The distinct shard file names of a `model.safetensors.index.json`, in order of first use.
pub fn shard_names(source: &str, text: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::weights(source, format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::weights(source, "field \"weight_map\": expected an object mapping tensor names to files"))?;
    let mut shards: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| Error::weights(source, format!("field \"weight_map.{tensor}\": expected a file name")))?;
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(Error::weights(source, format!("field \"weight_map.{tensor}\": \"{file}\" is not a file name in this folder")));
        }
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_string());
        }
    }
    if shards.is_empty() {
        return Err(Error::weights(source, "field \"weight_map\": lists no tensors; expected each tensor name mapped to the shard file that holds it"));
    }
    Ok(shards)
}

/// Write tensors as a safetensors file in memory (f32, in the given order).
pub fn serialize_f32(tensors: &[(String, Vec<usize>, Vec<f32>)], metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    serialize(tensors, StoredDtype::F32, metadata)
}

/// Write tensors as a safetensors file in memory, stored as `dtype` (F32, F16 or BF16; values
/// rounded to nearest even), in the given order.
pub fn serialize(tensors: &[(String, Vec<usize>, Vec<f32>)], dtype: StoredDtype, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView as StView;
    let (st, encode): (Dtype, fn(&f32) -> Vec<u8>) = match dtype {
        StoredDtype::F32 => (Dtype::F32, |x| x.to_le_bytes().to_vec()),
        StoredDtype::F16 => (Dtype::F16, |x| half::f16::from_f32(*x).to_le_bytes().to_vec()),
        StoredDtype::BF16 => (Dtype::BF16, |x| half::bf16::from_f32(*x).to_le_bytes().to_vec()),
        other => return Err(Error::weights("safetensors", format!("cannot store weights as {other:?}: expected F32, F16 or BF16"))),
    };
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| v.iter().flat_map(encode).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            StView::new(st, shape.clone(), b).map(|v| (name.clone(), v)).map_err(|e| Error::weights(name, format!("cannot serialise: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, metadata).map_err(|e| Error::weights("safetensors", format!("cannot serialise: {e}")))
}
