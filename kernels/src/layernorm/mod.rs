//! LayerNorm over the last axis (biased variance, optional bias): one workgroup per row, a
//! two-pass mean/variance with shared-memory tree reductions.

use cubecl::prelude::*;

use crate::gpu::{launch_weighted, GpuBackend, GpuTensor};
use crate::{Error, Result};

#[cfg(test)]
mod tests;

/// Invocations per row (a power of two).
const UNITS: usize = 64;

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
    let mut s_var = Shared::<[f32]>::new_slice(UNITS);
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
        let var = s_var[0] * inv_h;
        let rstd = 1.0f32 / (var + eps).sqrt();

        let mut k = tid;
        while k < h {
            let mut y = (f32::cast_from(x[base + k]) - mean) * rstd * f32::cast_from(w[k]);
            if has_bias {
                y += f32::cast_from(b[k]);
            }
            out[base + k] = A::cast_from(y);
            k += UNITS;
        }
    }
}

/// x [N, H] (f32), w [H], b [H] or none (weights, f32 or f16) → LayerNorm(x) [N, H].
pub fn layer_norm(gpu: &GpuBackend, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>, eps: f32) -> Result<GpuTensor> {
    let (rows, h) = x.matrix();
    if w.len() != h || b.is_some_and(|b| b.len() != h) {
        return Err(Error::shape("layer_norm", format!("x {:?} with weight {:?} and bias {:?}", x.shape, w.shape, b.map(|b| &b.shape))));
    }
    if b.is_some_and(|b| b.dtype != w.dtype) {
        return Err(Error::shape("layer_norm", "weight and bias are stored in different dtypes"));
    }
    let out = gpu.alloc("layer_norm", rows * h)?;
    let w_handle = w.stored("layer_norm")?;
    // Without a bias the kernel never reads `b`; bind the weight in its place.
    let b_handle = match b {
        Some(b) => b.stored("layer_norm")?,
        None => w_handle.clone(),
    };
    launch_weighted!(w.dtype, layer_norm_kernel(
            gpu.client(),
            gpu.grid("layer_norm", rows)?,
            CubeDim::new_1d(UNITS as u32),
            BufferArg::from_raw_parts(x.handle("layer_norm")?, rows * h),
            BufferArg::from_raw_parts(w_handle, h),
            BufferArg::from_raw_parts(b_handle, h),
            BufferArg::from_raw_parts(out.clone(), rows * h),
            rows,
            h,
            eps,
            b.is_some(),
        ));
    Ok(GpuTensor::single(out, x.shape.clone()))
}
