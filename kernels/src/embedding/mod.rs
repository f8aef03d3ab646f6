//! Row gathers and pooling: embedding lookup (over a table that may be split in row chunks),
//! row gather (CLS pooling, sparse prediction) and mean pooling per sequence.

use cubecl::prelude::*;

use crate::backend::DType;
use crate::gpu::{launch_float, launch_weighted, GpuBackend, GpuIds, GpuSeqs, GpuTensor, ELEMWISE_UNITS};
use crate::{Error, Result};

#[cfg(test)]
mod tests;

/// out[t, c] = table[ids[t] − lo, c] for the ids that fall in this chunk's rows [lo, lo + rows).
#[cube(launch_unchecked)]
fn gather_kernel<A: Float, W: Float>(table: &[W], ids: &[u32], out: &mut [A], n: usize, h: usize, lo: u32, rows: u32) {
    let i = ABSOLUTE_POS;
    if i < n {
        let t = i / h;
        let c = i % h;
        let id = ids[t];
        if id >= lo && id < lo + rows {
            out[i] = A::cast_from(table[(id - lo) as usize * h + c]);
        }
    }
}

/// out[b, c] = mean over the rows of sequence b of x[·, c].
#[cube(launch_unchecked)]
fn mean_pool_kernel<F: Float>(x: &[F], cu_seqlens: &[u32], out: &mut [F], n: usize, h: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        let b = i / h;
        let c = i % h;
        let start = cu_seqlens[b] as usize;
        let end = cu_seqlens[b + 1] as usize;
        let mut acc = 0.0f32;
        for t in start..end {
            acc += f32::cast_from(x[t * h + c]);
        }
        out[i] = F::cast_from(acc / f32::cast_from(end - start));
    }
}

fn gather(gpu: &GpuBackend, op: &'static str, table: &GpuTensor, ids: &GpuIds) -> Result<GpuTensor> {
    let (rows, h) = table.matrix();
    if let Some(max) = ids.max.filter(|&m| m as usize >= rows) {
        return Err(Error::shape(op, format!("index {max} outside a table of {rows} rows")));
    }
    let n = ids.len * h;
    let out = gpu.alloc(op, n)?;
    let (count, dim) = gpu.elementwise(op, n, ELEMWISE_UNITS)?;
    for (lo, part_rows, handle) in table.chunks() {
        launch_weighted!(table.dtype, gather_kernel(
                gpu.client(), count.clone(), dim,
                BufferArg::from_raw_parts(handle.clone(), part_rows * h),
                BufferArg::from_raw_parts(ids.handle.clone(), ids.len),
                BufferArg::from_raw_parts(out.clone(), n),
                n, h, lo as u32, part_rows as u32,
            ));
    }
    Ok(GpuTensor::single(out, vec![ids.len, h]))
}

/// table [V, H] (a weight, possibly in row chunks), ids [T] → table[ids] [T, H] (f32).
pub fn embedding(gpu: &GpuBackend, table: &GpuTensor, ids: &GpuIds) -> Result<GpuTensor> {
    gather(gpu, "embedding", table, ids)
}

/// x [N, H], rows [R] → x[rows] [R, H].
pub fn gather_rows(gpu: &GpuBackend, x: &GpuTensor, rows: &GpuIds) -> Result<GpuTensor> {
    gather(gpu, "gather_rows", x, rows)
}

/// x [T, H] → per-sequence mean [B, H].
pub fn mean_pool(gpu: &GpuBackend, x: &GpuTensor, seqs: &GpuSeqs) -> Result<GpuTensor> {
    let (t, h) = x.matrix();
    if t != seqs.tokens {
        return Err(Error::shape("mean_pool", format!("x {:?} over {} tokens", x.shape, seqs.tokens)));
    }
    let b = seqs.cu_seqlens.len() - 1;
    let n = b * h;
    let out = gpu.alloc("mean_pool", n)?;
    let (count, dim) = gpu.elementwise("mean_pool", n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, mean_pool_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(x.handle("mean_pool")?, t * h),
            BufferArg::from_raw_parts(seqs.cu.clone(), b + 1),
            BufferArg::from_raw_parts(out.clone(), n),
            n, h,
        ));
    Ok(GpuTensor::single(out, vec![b, h]))
}
