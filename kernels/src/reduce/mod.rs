//! The deterministic reductions and the device-side building blocks several families share:
//! block sums and maxima over a workgroup, column sums (bias gradients, LayerNorm's dw), flat
//! sums (Σx², totals), and filling a buffer with a value.
//!
//! Reductions never use atomics: every partial sum has a fixed owner and a fixed order, so a
//! result is bit-identical from run to run. Column sums: a workgroup of 64 columns × 4 row lanes
//! sums a block of `ROWS_PER_BLOCK` rows into a partial row, and the partial rows are summed the
//! same way until one is left. Flat sums: a workgroup of 256 sums `SUM_CHUNK` consecutive values
//! (a shared-memory tree at the end), repeated on the partial sums until one is left.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::backend::{DType, ReduceOps};
use crate::gpu::tensor::{launch_float, GpuBackend, GpuTensor, ELEMWISE_UNITS};
use crate::{Error, Result};

#[cfg(all(feature = "testing", not(target_family = "wasm")))]
mod tests;

impl ReduceOps for GpuBackend {
    fn sum_rows(&self, x: &GpuTensor) -> Result<GpuTensor> {
        sum_rows(self, x)
    }

    fn sum_squares(&self, x: &GpuTensor) -> Result<GpuTensor> {
        sum_squares(self, x)
    }
}

/// Sum of s[0..CUBE_DIM] into s[0], visible to every unit after the call. CUBE_DIM must be a
/// power of two. Every unit must call it (it holds barriers).
#[cube]
pub(crate) fn block_sum(s: &mut Shared<[f32]>) {
    sync_cube();
    let tid = UNIT_POS;
    let mut active = CUBE_DIM;
    while active > 1 {
        active /= 2;
        if tid < active {
            let sum = s[tid as usize] + s[(tid + active) as usize];
            s[tid as usize] = sum;
        }
        sync_cube();
    }
}

/// Max of s[0..CUBE_DIM] into s[0], visible to every unit after the call. CUBE_DIM must be a
/// power of two. Every unit must call it (it holds barriers).
#[cube]
pub(crate) fn block_max(s: &mut Shared<[f32]>) {
    sync_cube();
    let tid = UNIT_POS;
    let mut active = CUBE_DIM;
    while active > 1 {
        active /= 2;
        if tid < active {
            let larger = max(s[tid as usize], s[(tid + active) as usize]);
            s[tid as usize] = larger;
        }
        sync_cube();
    }
}

/// out[i] = value for i < n.
#[cube(launch_unchecked)]
fn fill_kernel<F: Float>(out: &mut [F], n: usize, value: f32) {
    let i = ABSOLUTE_POS;
    if i < n {
        out[i] = F::cast_from(value);
    }
}

/// Columns per column-sum workgroup.
pub(crate) const SUM_COLS: usize = 64;
/// Row lanes per column-sum workgroup (SUM_COLS × SUM_LANES = 256 invocations).
pub(crate) const SUM_LANES: usize = 4;
/// Rows one column-sum workgroup adds up.
pub(crate) const ROWS_PER_BLOCK: usize = 256;

/// partial[block, c] = Σ x[r, c] over the rows r of block `CUBE_POS_Y` (`ROWS_PER_BLOCK` of them),
/// for the `SUM_COLS` columns of block `CUBE_POS_X`. x [rows, cols] → partial [⌈rows/R⌉, cols].
#[cube(launch_unchecked)]
fn column_sum_kernel<F: Float>(x: &[F], partial: &mut [F], rows: usize, cols: usize) {
    let mut s = Shared::<[f32]>::new_slice(COLUMN_UNITS);
    let tid = UNIT_POS as usize;
    let col = CUBE_POS_X as usize * SUM_COLS + tid % SUM_COLS;
    let lane = tid / SUM_COLS;
    let block = CUBE_POS_Y as usize;
    let r_end = min(block * ROWS_PER_BLOCK + ROWS_PER_BLOCK, rows);
    let mut acc = 0.0f32;
    if col < cols {
        let mut r = block * ROWS_PER_BLOCK + lane;
        while r < r_end {
            acc += f32::cast_from(x[r * cols + col]);
            r += SUM_LANES;
        }
    }
    s[tid] = acc;
    sync_cube();
    if lane == 0 && col < cols {
        let total = s[tid] + s[tid + SUM_COLS] + s[tid + 2 * SUM_COLS] + s[tid + 3 * SUM_COLS];
        partial[block * cols + col] = F::cast_from(total);
    }
}

/// Invocations per flat-sum workgroup (a power of two).
const FLAT_UNITS: usize = 256;
/// Values one flat-sum workgroup adds up (16 per invocation).
pub(crate) const SUM_CHUNK: usize = 16 * FLAT_UNITS;
/// Invocations per column-sum workgroup.
const COLUMN_UNITS: usize = SUM_COLS * SUM_LANES;

/// partial[offset + b] = Σ x[i] (or Σ x[i]² with `square`) over the `SUM_CHUNK` values of block
/// b = CUBE_POS, for the `blocks` blocks covering x [n].
#[cube(launch_unchecked)]
fn flat_sum_kernel<F: Float>(x: &[F], partial: &mut [F], n: usize, blocks: usize, offset: usize, #[comptime] square: bool) {
    let mut s = Shared::<[f32]>::new_slice(FLAT_UNITS);
    let tid = UNIT_POS as usize;
    let block = CUBE_POS;
    let end = min(block * SUM_CHUNK + SUM_CHUNK, n);
    let mut acc = 0.0f32;
    let mut i = block * SUM_CHUNK + tid;
    while i < end {
        let v = f32::cast_from(x[i]);
        if square {
            acc += v * v;
        } else {
            acc += v;
        }
        i += FLAT_UNITS;
    }
    s[tid] = acc;
    block_sum(&mut s);
    if tid == 0 && block < blocks {
        partial[offset + block] = F::cast_from(s[0]);
    }
}

/// Set n f32 values of a buffer to `value`.
pub(crate) fn fill(gpu: &GpuBackend, out: &Handle, n: usize, value: f32) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (count, dim) = gpu.elementwise("fill", n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, fill_kernel(gpu.client(), count, dim, BufferArg::from_raw_parts(out.clone(), n), n, value));
    Ok(())
}

/// Grid of a column reduction over [rows, cols]: (column blocks, row blocks).
pub(crate) fn column_grid(gpu: &GpuBackend, op: &'static str, rows: usize, cols: usize) -> Result<(CubeCount, usize)> {
    let col_blocks = cols.div_ceil(SUM_COLS);
    let row_blocks = rows.div_ceil(ROWS_PER_BLOCK).max(1);
    let max = gpu.limits().max_cube_count as usize;
    if col_blocks > max || row_blocks > max {
        return Err(Error::limit(op, format!("a column reduction over [{rows}, {cols}] needs more workgroups than the device's grid has")));
    }
    Ok((CubeCount::Static(col_blocks.max(1) as u32, row_blocks as u32, 1), row_blocks))
}

/// Sum partial rows [blocks, cols] (a column reduction's first stage) down to [cols], in a fixed
/// order. Returns the handle of the [cols] result.
pub(crate) fn finish_column_sums(gpu: &GpuBackend, op: &'static str, mut partial: Handle, mut blocks: usize, cols: usize) -> Result<Handle> {
    while blocks > 1 {
        let (count, next) = column_grid(gpu, op, blocks, cols)?;
        let out = gpu.alloc(op, next * cols)?;
        launch_float!(DType::F32, column_sum_kernel(
                gpu.client(), count, CubeDim::new_1d(COLUMN_UNITS as u32),
                BufferArg::from_raw_parts(partial, blocks * cols),
                BufferArg::from_raw_parts(out.clone(), next * cols),
                blocks, cols,
            ));
        partial = out;
        blocks = next;
    }
    Ok(partial)
}

/// Column sums x [N, C] → [C] (bias gradients), deterministic.
pub fn sum_rows(gpu: &GpuBackend, x: &GpuTensor) -> Result<GpuTensor> {
    let (rows, cols) = x.matrix();
    let xh = x.handle("sum_rows")?;
    let out = if rows == 0 {
        let out = gpu.alloc("sum_rows", cols)?;
        fill(gpu, &out, cols, 0.0)?;
        out
    } else {
        let (count, blocks) = column_grid(gpu, "sum_rows", rows, cols)?;
        let partial = gpu.alloc("sum_rows", blocks * cols)?;
        launch_float!(DType::F32, column_sum_kernel(
                gpu.client(), count, CubeDim::new_1d(COLUMN_UNITS as u32),
                BufferArg::from_raw_parts(xh, rows * cols),
                BufferArg::from_raw_parts(partial.clone(), blocks * cols),
                rows, cols,
            ));
        finish_column_sums(gpu, "sum_rows", partial, blocks, cols)?
    };
    Ok(GpuTensor::single(out, vec![cols]))
}

/// Stage one of a flat sum: the partial sums of `x` [n] (squared with `square`) written at
/// `partial[offset..offset + blocks]`. Returns the number of blocks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn flat_partial_sums(gpu: &GpuBackend, op: &'static str, x: &Handle, n: usize, partial: &Handle, partial_len: usize, offset: usize, square: bool) -> Result<usize> {
    let blocks = n.div_ceil(SUM_CHUNK);
    if blocks == 0 {
        return Ok(0);
    }
    launch_float!(DType::F32, flat_sum_kernel(
            gpu.client(), gpu.grid(op, blocks)?, CubeDim::new_1d(FLAT_UNITS as u32),
            BufferArg::from_raw_parts(x.clone(), n),
            BufferArg::from_raw_parts(partial.clone(), partial_len),
            n, blocks, offset, square,
        ));
    Ok(blocks)
}

/// Sum a flat buffer of n ≥ 1 values down to one [1], in a fixed order.
pub(crate) fn flat_total(gpu: &GpuBackend, op: &'static str, mut x: Handle, mut n: usize) -> Result<Handle> {
    while n > 1 {
        let blocks = n.div_ceil(SUM_CHUNK);
        let out = gpu.alloc(op, blocks)?;
        flat_partial_sums(gpu, op, &x, n, &out, blocks, 0, false)?;
        x = out;
        n = blocks;
    }
    Ok(x)
}

/// Σ x² over every element of x (one buffer or row chunks) → [1], deterministic.
pub fn sum_squares(gpu: &GpuBackend, x: &GpuTensor) -> Result<GpuTensor> {
    let parts = x.f32_parts("sum_squares")?;
    let blocks: usize = parts.iter().map(|(_, n)| n.div_ceil(SUM_CHUNK)).sum();
    if blocks == 0 {
        let out = gpu.alloc("sum_squares", 1)?;
        fill(gpu, &out, 1, 0.0)?;
        return Ok(GpuTensor::single(out, vec![1, 1]));
    }
    let partial = gpu.alloc("sum_squares", blocks)?;
    let mut offset = 0;
    for (h, n) in &parts {
        offset += flat_partial_sums(gpu, "sum_squares", h, *n, &partial, blocks, offset, true)?;
    }
    Ok(GpuTensor::single(flat_total(gpu, "sum_squares", partial, blocks)?, vec![1, 1]))
}

