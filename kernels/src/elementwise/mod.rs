//! Element-wise kernels: residual add, exact GELU, GeGLU, bias add, column-block copy.

use cubecl::prelude::*;

use crate::backend::DType;
use crate::gpu::{launch_float, launch_weighted, GpuBackend, GpuTensor, ELEMWISE_UNITS};
use crate::{Error, Result};

#[cfg(test)]
mod tests;

/// Exact GELU in f32: z · ½ · (1 + erf(z/√2)). (cubecl's erf on WGSL is Abramowitz–Stegun
/// 7.1.26, absolute error ≤ 1.5e-7.) Kernels compute in f32 whatever the storage type.
#[cube]
pub fn gelu_scalar(z: f32) -> f32 {
    z * 0.5f32 * (1.0f32 + Erf::erf(z * 0.707_106_77f32))
}

#[cube(launch_unchecked)]
fn add_kernel<F: Float>(a: &[F], b: &[F], out: &mut [F], n: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        out[i] = F::cast_from(f32::cast_from(a[i]) + f32::cast_from(b[i]));
    }
}

#[cube(launch_unchecked)]
fn gelu_kernel<F: Float>(x: &[F], out: &mut [F], n: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        out[i] = F::cast_from(gelu_scalar(f32::cast_from(x[i])));
    }
}

/// out[r, j] = GELU(u[r, j]) · u[r, I + j] over n = rows · I outputs.
#[cube(launch_unchecked)]
fn geglu_kernel<F: Float>(u: &[F], out: &mut [F], n: usize, inter: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        let row = i / inter;
        let j = i % inter;
        let base = row * 2 * inter;
        out[i] = F::cast_from(gelu_scalar(f32::cast_from(u[base + j])) * f32::cast_from(u[base + inter + j]));
    }
}

/// y[r, c] += b[c] in place, y [rows, m].
#[cube(launch_unchecked)]
fn add_bias_kernel<A: Float, W: Float>(y: &mut [A], b: &[W], n: usize, m: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        y[i] = A::cast_from(f32::cast_from(y[i]) + f32::cast_from(b[i % m]));
    }
}

/// dst[r, col0 + c] = src[r, c]: src [rows, m] into the column block of dst [rows, ld].
#[cube(launch_unchecked)]
fn copy_columns_kernel<F: Float>(src: &[F], dst: &mut [F], n: usize, m: usize, ld: usize, col0: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        let r = i / m;
        let c = i % m;
        dst[r * ld + col0 + c] = src[i];
    }
}

/// dst[dst_off + i] = src[src_off + i] for i < n.
#[cube(launch_unchecked)]
fn copy_range_kernel<F: Float>(src: &[F], dst: &mut [F], n: usize, src_off: usize, dst_off: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        dst[dst_off + i] = src[src_off + i];
    }
}

fn same_shape(op: &'static str, a: &GpuTensor, b: &GpuTensor) -> Result<()> {
    if a.shape != b.shape {
        return Err(Error::shape(op, format!("{:?} and {:?} differ", a.shape, b.shape)));
    }
    Ok(())
}

/// a, b [*] → a + b [*].
pub fn add(gpu: &GpuBackend, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    same_shape("add", a, b)?;
    let n = a.len();
    let out = gpu.alloc("add", n)?;
    let (count, dim) = gpu.elementwise("add", n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, add_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(a.handle("add")?, n),
            BufferArg::from_raw_parts(b.handle("add")?, n),
            BufferArg::from_raw_parts(out.clone(), n),
            n,
        ));
    Ok(GpuTensor::single(out, a.shape.clone()))
}

/// x [*] → GELU(x) [*].
pub fn gelu(gpu: &GpuBackend, x: &GpuTensor) -> Result<GpuTensor> {
    let n = x.len();
    let out = gpu.alloc("gelu", n)?;
    let (count, dim) = gpu.elementwise("gelu", n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, gelu_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(x.handle("gelu")?, n),
            BufferArg::from_raw_parts(out.clone(), n),
            n,
        ));
    Ok(GpuTensor::single(out, x.shape.clone()))
}

/// u [N, 2I] → GELU(u[:, :I]) ⊙ u[:, I:] [N, I].
pub fn geglu(gpu: &GpuBackend, u: &GpuTensor) -> Result<GpuTensor> {
    let (rows, two_i) = u.matrix();
    if two_i % 2 != 0 {
        return Err(Error::shape("geglu", format!("input {:?} has an odd last dimension", u.shape)));
    }
    let inter = two_i / 2;
    let n = rows * inter;
    let out = gpu.alloc("geglu", n)?;
    let (count, dim) = gpu.elementwise("geglu", n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, geglu_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(u.handle("geglu")?, rows * two_i),
            BufferArg::from_raw_parts(out.clone(), n),
            n, inter,
        ));
    Ok(GpuTensor::single(out, vec![rows, inter]))
}

/// y [N, M] += b [M], in place on a tensor the caller just created.
pub(crate) fn add_bias_in_place(gpu: &GpuBackend, y: &GpuTensor, b: &GpuTensor) -> Result<()> {
    let (rows, m) = y.matrix();
    if b.len() != m {
        return Err(Error::shape("linear", format!("bias {:?} for {m} outputs", b.shape)));
    }
    let n = rows * m;
    let (count, dim) = gpu.elementwise("bias", n, ELEMWISE_UNITS)?;
    launch_weighted!(b.dtype, add_bias_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(y.handle("bias")?, n),
            BufferArg::from_raw_parts(b.stored("bias")?, m),
            n, m,
        ));
    Ok(())
}

/// Copy src [N, m] into columns col0..col0+m of dst [N, ld].
pub(crate) fn copy_columns(gpu: &GpuBackend, src: &GpuTensor, dst: &GpuTensor, col0: usize) -> Result<()> {
    let (rows, m) = src.matrix();
    let (drows, ld) = dst.matrix();
    if rows != drows || col0 + m > ld {
        return Err(Error::shape("copy_columns", format!("{:?} into {:?} at column {col0}", src.shape, dst.shape)));
    }
    let n = rows * m;
    let (count, dim) = gpu.elementwise("copy_columns", n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, copy_columns_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(src.handle("copy_columns")?, n),
            BufferArg::from_raw_parts(dst.handle("copy_columns")?, rows * ld),
            n, m, ld, col0,
        ));
    Ok(())
}

/// Copy n values from src[src_off..] to dst[dst_off..] (flat f32 buffers; the caller checks ranges).
pub(crate) fn copy_range(gpu: &GpuBackend, src: &cubecl::server::Handle, dst: &cubecl::server::Handle, src_off: usize, dst_off: usize, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (count, dim) = gpu.elementwise("copy", n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, copy_range_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(src.clone(), src_off + n),
            BufferArg::from_raw_parts(dst.clone(), dst_off + n),
            n, src_off, dst_off,
        ));
    Ok(())
}
