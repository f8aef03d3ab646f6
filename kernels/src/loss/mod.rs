//! Cross-entropy, fused with the softmax: one workgroup per row computes the row max, the sum of
//! exponentials and logsumexp − logit[label], numerically stable for any vocabulary size.
//! The backward is the same row walk writing scale·(softmax − onehot). `label_rank` counts, per
//! row, the classes scoring above the label, so training metrics (top-k accuracy) need N numbers
//! from the device instead of the N × C logits.

use cubecl::prelude::*;

use crate::backend::{DType, LossOps};
use crate::gpu::tensor::{launch_float, launch_pair, GpuBackend, GpuIds, GpuTensor};
use crate::reduce::{block_max, block_sum};
use crate::Result;

#[cfg(any(test, all(feature = "testing", not(target_family = "wasm"))))]
mod tests;

impl LossOps for GpuBackend {
    fn cross_entropy(&self, logits: &GpuTensor, labels: &GpuIds) -> Result<GpuTensor> {
        cross_entropy(self, logits, labels)
    }

    fn cross_entropy_backward(&self, logits: &GpuTensor, labels: &GpuIds, scale: f32) -> Result<GpuTensor> {
        cross_entropy_backward(self, logits, labels, scale)
    }

    fn label_rank(&self, logits: &GpuTensor, labels: &GpuIds) -> Result<GpuTensor> {
        label_rank(self, logits, labels)
    }
}

/// This family's shape rules, checked by the GPU launchers below and by the CPU backend alike.
pub(crate) mod shape {
    use crate::shapes::matrix;
    use crate::{Error, Result};

    /// Logits [N, C] with one label per row, the largest `max` → (N, C).
    pub(crate) fn labels(op: &'static str, logits: &[usize], n: usize, max: Option<u32>) -> Result<(usize, usize)> {
        let (rows, c) = matrix(logits);
        if n != rows {
            return Err(Error::shape(op, format!("{n} labels for logits {logits:?}")));
        }
        if let Some(bad) = max.filter(|&m| m as usize >= c) {
            return Err(Error::shape(op, format!("label {bad} for {c} classes")));
        }
        Ok((rows, c))
    }
}

const UNITS: usize = 64;

/// (rows, classes) of logits [N, C] whose labels [N] are one per row and each < C.
fn check_labels(op: &'static str, logits: &GpuTensor, labels: &GpuIds) -> Result<(usize, usize)> {
    shape::labels(op, &logits.shape, labels.len, labels.max)
}

/// loss[r] = logsumexp(logits[r, :]) − logits[r, labels[r]] for logits [rows, c].
#[cube(launch_unchecked)]
fn cross_entropy_kernel<F: Float, L: Float>(logits: &[F], labels: &[u32], loss: &mut [L], rows: usize, c: usize) {
    let mut s_max = Shared::<[f32]>::new_slice(UNITS);
    let mut s_sum = Shared::<[f32]>::new_slice(UNITS);
    let row = CUBE_POS;
    if row < rows {
        let tid = UNIT_POS as usize;
        let base = row * c;
        let mut m = f32::min_value();
        let mut i = tid;
        while i < c {
            m = max(m, f32::cast_from(logits[base + i]));
            i += UNITS;
        }
        s_max[tid] = m;
        block_max(&mut s_max);
        let row_max = s_max[0];
        let mut acc = 0.0f32;
        let mut j = tid;
        while j < c {
            acc += (f32::cast_from(logits[base + j]) - row_max).exp();
            j += UNITS;
        }
        s_sum[tid] = acc;
        block_sum(&mut s_sum);
        let sum = s_sum[0];
        if tid == 0 {
            let label = labels[row] as usize;
            loss[row] = L::cast_from(row_max + sum.ln() - f32::cast_from(logits[base + label]));
        }
    }
}

/// logits [N, C], labels [N] → per-row loss [N, 1].
pub fn cross_entropy(gpu: &GpuBackend, logits: &GpuTensor, labels: &GpuIds) -> Result<GpuTensor> {
    let (rows, c) = check_labels("cross_entropy", logits, labels)?;
    let out = gpu.alloc("cross_entropy", rows)?;
    let (lh, ad) = logits.act("cross_entropy")?;
    launch_pair!(ad, DType::F32, cross_entropy_kernel(
            gpu.client(),
            gpu.grid("cross_entropy", rows)?,
            CubeDim::new_1d(UNITS as u32),
            BufferArg::from_raw_parts(lh, rows * c),
            BufferArg::from_raw_parts(labels.handle.clone(), rows),
            BufferArg::from_raw_parts(out.clone(), rows),
            rows,
            c,
        ));
    Ok(GpuTensor::single(out, vec![rows, 1]))
}

/// dlogits[r, j] = scale · (softmax(logits[r])_j − [j = labels[r]]) for logits [rows, c].
#[cube(launch_unchecked)]
fn cross_entropy_backward_kernel<F: Float>(logits: &[F], labels: &[u32], dlogits: &mut [F], rows: usize, c: usize, scale: f32) {
    let mut s_max = Shared::<[f32]>::new_slice(UNITS);
    let mut s_sum = Shared::<[f32]>::new_slice(UNITS);
    let row = CUBE_POS;
    if row < rows {
        let tid = UNIT_POS as usize;
        let base = row * c;
        let mut m = f32::min_value();
        let mut i = tid;
        while i < c {
            m = max(m, f32::cast_from(logits[base + i]));
            i += UNITS;
        }
        s_max[tid] = m;
        block_max(&mut s_max);
        let row_max = s_max[0];
        let mut acc = 0.0f32;
        let mut j = tid;
        while j < c {
            acc += (f32::cast_from(logits[base + j]) - row_max).exp();
            j += UNITS;
        }
        s_sum[tid] = acc;
        block_sum(&mut s_sum);
        let sum = s_sum[0];
        let label = labels[row] as usize;
        let mut k = tid;
        while k < c {
            let p = (f32::cast_from(logits[base + k]) - row_max).exp() / sum;
            let onehot = select(k == label, 1.0f32, 0.0f32);
            dlogits[base + k] = F::cast_from(scale * (p - onehot));
            k += UNITS;
        }
    }
}

/// logits [N, C], labels [N] (each < C) → dlogits [N, C] = scale · (softmax − onehot).
pub fn cross_entropy_backward(gpu: &GpuBackend, logits: &GpuTensor, labels: &GpuIds, scale: f32) -> Result<GpuTensor> {
    let op = "cross_entropy_backward";
    let (rows, c) = check_labels(op, logits, labels)?;
    let out = gpu.alloc(op, rows * c)?;
    launch_float!(DType::F32, cross_entropy_backward_kernel(
            gpu.client(),
            gpu.grid(op, rows)?,
            CubeDim::new_1d(UNITS as u32),
            BufferArg::from_raw_parts(logits.handle(op)?, rows * c),
            BufferArg::from_raw_parts(labels.handle.clone(), rows),
            BufferArg::from_raw_parts(out.clone(), rows * c),
            rows,
            c,
            scale,
        ));
    Ok(GpuTensor::single(out, logits.shape.clone()))
}

/// rank[r] = #{j : logits[r, j] > logits[r, labels[r]]} for logits [rows, c], counted in f32
/// (exact below 2²⁴ classes), one workgroup per row.
#[cube(launch_unchecked)]
fn label_rank_kernel<F: Float, L: Float>(logits: &[F], labels: &[u32], rank: &mut [L], rows: usize, c: usize) {
    let mut s_count = Shared::<[f32]>::new_slice(UNITS);
    let row = CUBE_POS;
    if row < rows {
        let tid = UNIT_POS as usize;
        let base = row * c;
        let target = f32::cast_from(logits[base + labels[row] as usize]);
        let mut count = 0.0f32;
        let mut i = tid;
        while i < c {
            count += select(f32::cast_from(logits[base + i]) > target, 1.0f32, 0.0f32);
            i += UNITS;
        }
        s_count[tid] = count;
        block_sum(&mut s_count);
        if tid == 0 {
            rank[row] = L::cast_from(s_count[0]);
        }
    }
}

/// logits [N, C], labels [N] (each < C) → rank of each label [N, 1] (0 = top-1).
pub fn label_rank(gpu: &GpuBackend, logits: &GpuTensor, labels: &GpuIds) -> Result<GpuTensor> {
    let op = "label_rank";
    let (rows, c) = check_labels(op, logits, labels)?;
    let out = gpu.alloc(op, rows)?;
    if rows > 0 {
        let (lh, ad) = logits.act(op)?;
        launch_pair!(ad, DType::F32, label_rank_kernel(
                gpu.client(),
                gpu.grid(op, rows)?,
                CubeDim::new_1d(UNITS as u32),
                BufferArg::from_raw_parts(lh, rows * c),
                BufferArg::from_raw_parts(labels.handle.clone(), rows),
                BufferArg::from_raw_parts(out.clone(), rows),
                rows,
                c,
            ));
    }
    Ok(GpuTensor::single(out, vec![rows, 1]))
}
