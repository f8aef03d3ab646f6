//! The tensors out of an unpickled state dict: each view checked against its storage, a byte
//! range of the file when contiguous, gathered when strided (within a memory budget).

use std::collections::HashSet;
use std::ops::Range;

use super::pickle::{shown, StorageDecl, TensorDecl, Value, Vm};
use super::{bad, TorchData, TorchTensor};
use crate::Result;

/// The tensors of the top-level dict, in its order.
pub(super) fn collect(vm: &Vm, top: &Value, ranges: &[Range<usize>], bytes: &[u8]) -> Result<Vec<TorchTensor>> {
    let entries = vm.dict(top).ok_or_else(|| bad(format!("its pickle holds a {}, not a state dict (a dict of name → tensor)", vm.kind(top))))?;
    // gathering strided tensors copies; a file may not make this reader allocate far more than its own size
    let mut budget = bytes.len().saturating_mul(2).saturating_add(64 << 20);
    let mut seen = HashSet::with_capacity(entries.len());
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let Value::Str(raw) = key else {
            return Err(bad(format!("its state dict has a {} key; only string names are supported", vm.kind(key))));
        };
        let Value::Tensor(t) = value else {
            return Err(bad(format!(
                "its state dict's entry \"{}\" is a {}, not a tensor; only a flat state dict of tensors can be read",
                shown(raw),
                vm.kind(value)
            )));
        };
        if !seen.insert(raw) {
            return Err(bad(format!("its state dict has the name \"{}\" twice", shown(raw))));
        }
        let tensor = &vm.tensors[*t];
        let storage = &vm.storages[tensor.storage];
        let data = tensor_data(raw, tensor, storage, ranges[tensor.storage].clone(), bytes, &mut budget)?;
        out.push(TorchTensor { name: raw.to_string(), dtype: storage.dtype, shape: tensor.shape.clone(), data });
    }
    Ok(out)
}

/// Checks that the view lies inside its storage, then returns its bytes (a range when contiguous).
pub(super) fn tensor_data(name: &str, tensor: &TensorDecl, storage: &StorageDecl, range: Range<usize>, bytes: &[u8], budget: &mut usize) -> Result<TorchData> {
    let TensorDecl { shape, stride, offset, .. } = tensor;
    let name = || shown(name);
    let size = storage.dtype.size();
    let too_big = || bad(format!("tensor \"{}\": its size {shape:?} is too large", name()));
    let numel = shape.iter().try_fold(1usize, |n, &s| n.checked_mul(s)).ok_or_else(too_big)?;
    let last =
        if numel == 0 { Some(*offset) } else { shape.iter().zip(stride).try_fold(*offset, |last, (&s, &st)| last.checked_add((s - 1).checked_mul(st)?)) };
    let fits = match last {
        Some(last) if numel == 0 => last <= storage.numel,
        Some(last) => last < storage.numel,
        None => false,
    };
    if !fits {
        return Err(bad(format!(
            "tensor \"{}\" (size {shape:?}, stride {stride:?}, offset {offset}) does not fit in its storage of {} elements",
            name(),
            storage.numel
        )));
    }
    // every element index is now < storage.numel, and range.len() == storage.numel * size
    let start = range.start + offset * size;
    let len = numel * size;
    if numel == 0 || is_contiguous(shape, stride) {
        return Ok(TorchData::Range(start..start + len));
    }
    *budget = budget.checked_sub(len).ok_or_else(|| bad(format!("tensor \"{}\": its strided views need more memory than the file's size allows", name())))?;
    let storage_bytes = &bytes[range];
    let mut out = Vec::with_capacity(len);
    let dims = shape.len(); // >= 1: a scalar is contiguous
    let (inner, inner_stride) = (shape[dims - 1], stride[dims - 1]);
    let mut index = vec![0usize; dims - 1];
    let outside = || bad(format!("tensor \"{}\" reads outside its storage", name()));
    loop {
        let base = index.iter().zip(stride).fold(*offset, |b, (&i, &st)| b + i * st);
        if inner_stride == 1 {
            out.extend_from_slice(storage_bytes.get(base * size..(base + inner) * size).ok_or_else(outside)?);
        } else {
            for j in 0..inner {
                let e = base + j * inner_stride;
                out.extend_from_slice(storage_bytes.get(e * size..(e + 1) * size).ok_or_else(outside)?);
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
pub(super) fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&s, &st) in shape.iter().zip(stride).rev() {
        if s != 1 && st != expected {
            return false;
        }
        expected = expected.saturating_mul(s);
    }
    true
}
