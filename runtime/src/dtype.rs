//! The element types tensors are stored in, in safetensors files and PyTorch checkpoints alike.

/// A tensor's element type as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDtype {
    F32,
    /// Reference files only (learning rates); read with `to_f64`.
    F64,
    F16,
    BF16,
    I64,
    I32,
    U8,
}

impl StoredDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StoredDtype::F64 | StoredDtype::I64 => 8,
            StoredDtype::F32 | StoredDtype::I32 => 4,
            StoredDtype::F16 | StoredDtype::BF16 => 2,
            StoredDtype::U8 => 1,
        }
    }
    /// The dtype of a safetensors header's `"dtype"` (`"F32"`, …).
    pub fn from_safetensors(name: &str) -> Option<Self> {
        Some(match name {
            "F32" => StoredDtype::F32,
            "F64" => StoredDtype::F64,
            "F16" => StoredDtype::F16,
            "BF16" => StoredDtype::BF16,
            "I64" => StoredDtype::I64,
            "I32" => StoredDtype::I32,
            "U8" => StoredDtype::U8,
            _ => return None,
        })
    }
    /// The dtype of a `torch.<name>` storage type (`FloatStorage`, …).
    pub fn from_torch_storage(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => StoredDtype::F32,
            "DoubleStorage" => StoredDtype::F64,
            "HalfStorage" => StoredDtype::F16,
            "BFloat16Storage" => StoredDtype::BF16,
            "LongStorage" => StoredDtype::I64,
            "IntStorage" => StoredDtype::I32,
            "ByteStorage" => StoredDtype::U8,
            _ => return None,
        })
    }
}
