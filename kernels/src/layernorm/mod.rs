//! LayerNorm over the last axis (biased variance, optional bias): one workgroup per row, a
//! two-pass mean/variance with shared-memory tree reductions. `add_layer_norm` fuses the residual
//! add that precedes every norm of the encoder into the same pass.
//!
//! Backward: a row kernel recomputes mean and 1/σ like the forward and writes dx and the row
//! statistics; dw = Σ_rows dy ⊙ x̂ is a column reduction (64 columns × 4 row lanes per workgroup
//! over blocks of rows, then the partial rows summed in a fixed order), deterministic.

use cubecl::prelude::*;

use crate::backend::{DType, LayerNormOps};
use crate::gpu::tensor::{launch_float, launch_pair, GpuBackend, GpuTensor};
use crate::reduce::{block_sum, column_grid, fill, finish_column_sums, ROWS_PER_BLOCK, SUM_COLS, SUM_LANES};
use crate::{Error, Result};

#[cfg(any(test, all(feature = "testing", not(target_family = "wasm"))))]
mod tests;

impl LayerNormOps for GpuBackend {
    fn layer_norm(&self, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>, eps: f32) -> Result<GpuTensor> {
        layer_norm(self, x, w, b, eps)
    }

    fn add_layer_norm(&self, x: &GpuTensor, y: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>, eps: f32) -> Result<(GpuTensor, GpuTensor)> {
        add_layer_norm(self, x, y, w, b, eps)
    }

    fn layer_norm_backward(&self, x: &GpuTensor, w: &GpuTensor, dy: &GpuTensor, eps: f32) -> Result<(GpuTensor, GpuTensor)> {
        layer_norm_backward(self, x, w, dy, eps)
    }
}

/// This family's shape rules, checked by the GPU launchers below and by the CPU backend alike.
pub(crate) mod shape {
    use crate::shapes::{len, matrix};
    use crate::{Error, Result};

    /// LayerNorm of x [N, H] (and, fused, of x + y) with weight [H] and bias [H] → (N, H).
    pub(crate) fn norm(op: &'static str, x: &[usize], y: Option<&[usize]>, w: &[usize], b: Option<&[usize]>) -> Result<(usize, usize)> {
        let (rows, h) = matrix(x);
        if y.is_some_and(|y| y != x) || len(w) != h || b.is_some_and(|b| len(b) != h) {
            let y = y.map(|y| format!(", y {y:?}")).unwrap_or_default();
            return Err(Error::shape(op, format!("x {x:?}{y} with weight {w:?} and bias {b:?}")));
        }
        Ok((rows, h))
    }

    /// x [N, H], w [H], dy [N, H] → (N, H).
    pub(crate) fn norm_backward(x: &[usize], w: &[usize], dy: &[usize]) -> Result<(usize, usize)> {
        let (rows, h) = matrix(x);
        if len(w) != h || dy != x {
            return Err(Error::shape("layer_norm_backward", format!("x {x:?} with weight {w:?} and dy {dy:?}")));
        }
        Ok((rows, h))
    }
}

/// Invocations per row (a power of two).
const UNITS: usize = 64;

/// The second half of a row's LayerNorm, given its mean: the variance of src[base..base + h],
/// then out = (src − μ)/sqrt(σ² + ε) ⊙ w (+ b). Every unit of the workgroup must call it (it holds
/// barriers).
#[cube]
#[allow(clippy::too_many_arguments)]
fn normalize_row<A: Float, W: Float>(src: &[A], w: &[W], b: &[W], out: &mut [A], base: usize, h: usize, mean: f32, eps: f32, #[comptime] has_bias: bool) {
    let mut s_var = Shared::<[f32]>::new_slice(UNITS);
    let tid = UNIT_POS as usize;
    let mut acc2 = 0.0f32;
    let mut j = tid;
    while j < h {
        let d = f32::cast_from(src[base + j]) - mean;
        acc2 += d * d;
        j += UNITS;
    }
    s_var[tid] = acc2;
    block_sum(&mut s_var);
    let var = s_var[0] * (1.0f32 / f32::cast_from(h));
    let rstd = 1.0f32 / (var + eps).sqrt();

    let mut k = tid;
    while k < h {
        let mut y = (f32::cast_from(src[base + k]) - mean) * rstd * f32::cast_from(w[k]);
        if has_bias {
            y += f32::cast_from(b[k]);
        }
        out[base + k] = A::cast_from(y);
        k += UNITS;
    }
}

/// y = (x − μ)/sqrt(σ² + ε) ⊙ w (+ b) for each row of x [rows, h].
#[cube(launch_unchecked)]
fn layer_norm_kernel<A: Float, W: Float>(
    x: &[A],
    w: &[W],
    b: &[W],
    out: &mut [A],
    rows: usize,
    h: usize,
    eps: f32,
    #[comptime] has_bias: bool,
) {
    let mut s_mean = Shared::<[f32]>::new_slice(UNITS);
    let row = CUBE_POS;
    if row < rows {
        let tid = UNIT_POS as usize;
        let base = row * h;
        let mut acc = 0.0f32;
        let mut i = tid;
        while i < h {
            acc += f32::cast_from(x[base + i]);
            i += UNITS;
        }
        s_mean[tid] = acc;
        block_sum(&mut s_mean);
        normalize_row(x, w, b, out, base, h, s_mean[0] * (1.0f32 / f32::cast_from(h)), eps, has_bias);
    }
}

/// x [N, H] (an activation, f32 or f16), w [H], b [H] or none (weights, f32 or f16) →
/// LayerNorm(x) [N, H] in x's dtype.
pub fn layer_norm(gpu: &GpuBackend, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>, eps: f32) -> Result<GpuTensor> {
    let (rows, h) = shape::norm("layer_norm", &x.shape, None, &w.shape, b.map(|b| &b.shape[..]))?;
    if b.is_some_and(|b| b.dtype != w.dtype) {
        return Err(Error::shape("layer_norm", "weight and bias are stored in different dtypes"));
    }
    let (xh, ad) = x.act("layer_norm")?;
    let out = gpu.alloc_as("layer_norm", rows * h, ad)?;
    let w_handle = w.stored("layer_norm")?;
    // Without a bias the kernel never reads `b`; bind the weight in its place.
    let b_handle = match b {
        Some(b) => b.stored("layer_norm")?,
        None => w_handle.clone(),
    };
    launch_pair!(ad, w.dtype, layer_norm_kernel(
            gpu.client(),
            gpu.grid("layer_norm", rows)?,
            CubeDim::new_1d(UNITS as u32),
            BufferArg::from_raw_parts(xh, rows * h),
            BufferArg::from_raw_parts(w_handle, h),
            BufferArg::from_raw_parts(b_handle, h),
            BufferArg::from_raw_parts(out.clone(), rows * h),
            rows,
            h,
            eps,
            b.is_some(),
        ));
    Ok(GpuTensor::of(out, x.shape.clone(), ad))
}

/// s = x + y and LayerNorm(s) for each row of x, y [rows, h]: the residual add fused with the
/// norm that follows it (one read of x and y, two writes, instead of add's read-write plus the
/// norm's reads). Each unit re-reads only the elements of s it wrote itself.
#[cube(launch_unchecked)]
fn add_layer_norm_kernel<A: Float, W: Float>(
    x: &[A],
    y: &[A],
    w: &[W],
    b: &[W],
    sum: &mut [A],
    out: &mut [A],
    rows: usize,
    h: usize,
    eps: f32,
    #[comptime] has_bias: bool,
) {
    let mut s_mean = Shared::<[f32]>::new_slice(UNITS);
    let row = CUBE_POS;
    if row < rows {
        let tid = UNIT_POS as usize;
        let base = row * h;
        let mut acc = 0.0f32;
        let mut i = tid;
        while i < h {
            // Added in f32 and stored in A, exactly like `add` (and what LayerNorm then reads).
            let v = A::cast_from(f32::cast_from(x[base + i]) + f32::cast_from(y[base + i]));
            sum[base + i] = v;
            acc += f32::cast_from(v);
            i += UNITS;
        }
        s_mean[tid] = acc;
        block_sum(&mut s_mean);
        normalize_row(&*sum, w, b, out, base, h, s_mean[0] * (1.0f32 / f32::cast_from(h)), eps, has_bias);
    }
}

/// x [N, H], y [N, H] (activations, f32 or f16), w [H], b [H] or none (weights, f32 or f16) →
/// (x + y [N, H], LayerNorm(x + y) [N, H]) in x's dtype.
pub fn add_layer_norm(gpu: &GpuBackend, x: &GpuTensor, y: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>, eps: f32) -> Result<(GpuTensor, GpuTensor)> {
    let (rows, h) = shape::norm("add_layer_norm", &x.shape, Some(&y.shape), &w.shape, b.map(|b| &b.shape[..]))?;
    if b.is_some_and(|b| b.dtype != w.dtype) {
        return Err(Error::shape("add_layer_norm", "weight and bias are stored in different dtypes"));
    }
    let ((xh, ad), (yh, yd)) = (x.act("add_layer_norm")?, y.act("add_layer_norm")?);
    if ad != yd {
        return Err(Error::shape("add_layer_norm", format!("x stored as {}, y as {}", ad.name(), yd.name())));
    }
    let sum = gpu.alloc_as("add_layer_norm", rows * h, ad)?;
    let out = gpu.alloc_as("add_layer_norm", rows * h, ad)?;
    let w_handle = w.stored("add_layer_norm")?;
    let b_handle = match b {
        Some(b) => b.stored("add_layer_norm")?,
        None => w_handle.clone(),
    };
    launch_pair!(ad, w.dtype, add_layer_norm_kernel(
            gpu.client(),
            gpu.grid("add_layer_norm", rows)?,
            CubeDim::new_1d(UNITS as u32),
            BufferArg::from_raw_parts(xh, rows * h),
            BufferArg::from_raw_parts(yh, rows * h),
            BufferArg::from_raw_parts(w_handle, h),
            BufferArg::from_raw_parts(b_handle, h),
            BufferArg::from_raw_parts(sum.clone(), rows * h),
            BufferArg::from_raw_parts(out.clone(), rows * h),
            rows,
            h,
            eps,
            b.is_some(),
        ));
    Ok((GpuTensor::of(sum, x.shape.clone(), ad), GpuTensor::of(out, x.shape.clone(), ad)))
}

/// Per row of x [rows, h]: with x̂ = (x − μ)·r and g = dy ⊙ w,
/// dx = r·(g − mean(g) − x̂·mean(g ⊙ x̂)); stats[row] = (μ, r).
#[cube(launch_unchecked)]
fn layer_norm_backward_kernel<F: Float>(
    x: &[F],
    w: &[F],
    dy: &[F],
    dx: &mut [F],
    stats: &mut [F],
    rows: usize,
    h: usize,
    eps: f32,
) {
    let mut s_mean = Shared::<[f32]>::new_slice(UNITS);
    let mut s_var = Shared::<[f32]>::new_slice(UNITS);
    let mut s_g = Shared::<[f32]>::new_slice(UNITS);
    let mut s_gx = Shared::<[f32]>::new_slice(UNITS);
    let row = CUBE_POS;
    if row < rows {
        let tid = UNIT_POS as usize;
        let base = row * h;
        let inv_h = 1.0f32 / f32::cast_from(h);

        let mut acc = 0.0f32;
        let mut i = tid;
        while i < h {
            acc += f32::cast_from(x[base + i]);
            i += UNITS;
        }
        s_mean[tid] = acc;
        block_sum(&mut s_mean);
        let mean = s_mean[0] * inv_h;

        let mut acc2 = 0.0f32;
        let mut j = tid;
        while j < h {
            let d = f32::cast_from(x[base + j]) - mean;
            acc2 += d * d;
            j += UNITS;
        }
        s_var[tid] = acc2;
        block_sum(&mut s_var);
        let rstd = 1.0f32 / (s_var[0] * inv_h + eps).sqrt();

        let mut sum_g = 0.0f32;
        let mut sum_gx = 0.0f32;
        let mut k = tid;
        while k < h {
            let g = f32::cast_from(dy[base + k]) * f32::cast_from(w[k]);
            sum_g += g;
            sum_gx += g * (f32::cast_from(x[base + k]) - mean) * rstd;
            k += UNITS;
        }
        s_g[tid] = sum_g;
        s_gx[tid] = sum_gx;
        block_sum(&mut s_g);
        block_sum(&mut s_gx);
        let mean_g = s_g[0] * inv_h;
        let mean_gx = s_gx[0] * inv_h;

        let mut c = tid;
        while c < h {
            let xhat = (f32::cast_from(x[base + c]) - mean) * rstd;
            let g = f32::cast_from(dy[base + c]) * f32::cast_from(w[c]);
            dx[base + c] = F::cast_from(rstd * (g - mean_g - xhat * mean_gx));
            c += UNITS;
        }
        if tid == 0 {
            stats[row * 2] = F::cast_from(mean);
            stats[row * 2 + 1] = F::cast_from(rstd);
        }
    }
}

/// partial[block, c] = Σ dy[r, c]·(x[r, c] − μ_r)·r_r over the `ROWS_PER_BLOCK` rows of block
/// `CUBE_POS_Y`, for the `SUM_COLS` columns of block `CUBE_POS_X` (the first stage of dw).
#[cube(launch_unchecked)]
fn layer_norm_dw_kernel<F: Float>(x: &[F], dy: &[F], stats: &[F], partial: &mut [F], rows: usize, h: usize) {
    let mut s = Shared::<[f32]>::new_slice(comptime!(SUM_COLS * SUM_LANES));
    let tid = UNIT_POS as usize;
    let col = CUBE_POS_X as usize * SUM_COLS + tid % SUM_COLS;
    let lane = tid / SUM_COLS;
    let block = CUBE_POS_Y as usize;
    let r_end = min(block * ROWS_PER_BLOCK + ROWS_PER_BLOCK, rows);
    let mut acc = 0.0f32;
    if col < h {
        let mut r = block * ROWS_PER_BLOCK + lane;
        while r < r_end {
            let xhat = (f32::cast_from(x[r * h + col]) - f32::cast_from(stats[r * 2])) * f32::cast_from(stats[r * 2 + 1]);
            acc += f32::cast_from(dy[r * h + col]) * xhat;
            r += SUM_LANES;
        }
    }
    s[tid] = acc;
    sync_cube();
    if lane == 0 && col < h {
        let total = s[tid] + s[tid + SUM_COLS] + s[tid + 2 * SUM_COLS] + s[tid + 3 * SUM_COLS];
        partial[block * h + col] = F::cast_from(total);
    }
}

/// x [N, H], w [H], dy [N, H] (all f32) → (dx [N, H], dw [H]). The bias gradient is `sum_rows(dy)`.
pub fn layer_norm_backward(gpu: &GpuBackend, x: &GpuTensor, w: &GpuTensor, dy: &GpuTensor, eps: f32) -> Result<(GpuTensor, GpuTensor)> {
    let op = "layer_norm_backward";
    let (rows, h) = shape::norm_backward(&x.shape, &w.shape, &dy.shape)?;
    let (xh, wh, dyh) = (x.handle(op)?, w.handle(op)?, dy.handle(op)?);
    let dx = gpu.alloc(op, rows * h)?;
    if rows == 0 {
        let dw = gpu.alloc(op, h)?;
        fill(gpu, &dw, h, 0.0)?;
        return Ok((GpuTensor::single(dx, x.shape.clone()), GpuTensor::single(dw, vec![h])));
    }
    let stats = gpu.alloc(op, rows * 2)?;
    launch_float!(DType::F32, layer_norm_backward_kernel(
            gpu.client(),
            gpu.grid(op, rows)?,
            CubeDim::new_1d(UNITS as u32),
            BufferArg::from_raw_parts(xh.clone(), rows * h),
            BufferArg::from_raw_parts(wh, h),
            BufferArg::from_raw_parts(dyh.clone(), rows * h),
            BufferArg::from_raw_parts(dx.clone(), rows * h),
            BufferArg::from_raw_parts(stats.clone(), rows * 2),
            rows,
            h,
            eps,
        ));
    let (count, blocks) = column_grid(gpu, op, rows, h)?;
    let partial = gpu.alloc(op, blocks * h)?;
    launch_float!(DType::F32, layer_norm_dw_kernel(
            gpu.client(),
            count,
            CubeDim::new_1d((SUM_COLS * SUM_LANES) as u32),
            BufferArg::from_raw_parts(xh, rows * h),
            BufferArg::from_raw_parts(dyh, rows * h),
            BufferArg::from_raw_parts(stats, rows * 2),
            BufferArg::from_raw_parts(partial.clone(), blocks * h),
            rows,
            h,
        ));
    let dw = finish_column_sums(gpu, op, partial, blocks, h)?;
    Ok((GpuTensor::single(dx, x.shape.clone()), GpuTensor::single(dw, vec![h])))
}
