//! Element-wise kernels: residual add, exact GELU, GeGLU, tanh (BERT's pooler), bias add,
//! column-block copy, casts; and for training their backwards and scaling. The reductions
//! (column sums, Σx²) are in `reduce/`.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::backend::{DType, ElementwiseOps};
use crate::gpu::tensor::{launch_float, launch_pair, GpuBackend, GpuTensor, ELEMWISE_UNITS};
use crate::shapes;
use crate::{Error, Result};

#[cfg(any(test, all(feature = "testing", not(target_family = "wasm"))))]
mod tests;

impl ElementwiseOps for GpuBackend {
    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        add(self, a, b)
    }

    fn gelu(&self, x: &GpuTensor) -> Result<GpuTensor> {
        gelu(self, x)
    }

    fn tanh(&self, x: &GpuTensor) -> Result<GpuTensor> {
        tanh(self, x)
    }

    fn geglu(&self, u: &GpuTensor) -> Result<GpuTensor> {
        geglu(self, u)
    }

    fn scale(&self, a: &GpuTensor, s: f32) -> Result<GpuTensor> {
        scale(self, a, s)
    }

    fn gelu_backward(&self, x: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        gelu_backward(self, x, dy)
    }

    fn tanh_backward(&self, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        tanh_backward(self, y, dy)
    }

    fn geglu_backward(&self, u: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        geglu_backward(self, u, dy)
    }
}

/// This family's shape rules, checked by the GPU launchers below and by the CPU backend alike.
pub(crate) mod shape {
    use crate::shapes::matrix;
    use crate::{Error, Result};

    /// u [N, 2I] → (N, I).
    pub(crate) fn geglu(u: &[usize]) -> Result<(usize, usize)> {
        let (rows, two_i) = matrix(u);
        if two_i % 2 != 0 {
            return Err(Error::shape("geglu", format!("input {u:?} has an odd last dimension")));
        }
        Ok((rows, two_i / 2))
    }

    /// u [N, 2I], dy [N, I] → (N, I).
    pub(crate) fn geglu_backward(u: &[usize], dy: &[usize]) -> Result<(usize, usize)> {
        let (rows, two_i) = matrix(u);
        if two_i % 2 != 0 || matrix(dy) != (rows, two_i / 2) || u.len() != dy.len() {
            return Err(Error::shape("geglu_backward", format!("u {u:?} with dy {dy:?}")));
        }
        Ok((rows, two_i / 2))
    }
}

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

/// tanh in f32 as sign(z) · (1 − e^(−2|z|)) / (1 + e^(−2|z|)): finite for every input (a
/// platform's `tanh` may overflow through e^(2z) for large |z|), absolute error ≈ 1e-7.
#[cube]
pub fn tanh_scalar(z: f32) -> f32 {
    let t = (f32::abs(z) * -2.0f32).exp();
    let m = (1.0f32 - t) / (1.0f32 + t);
    select(z < 0.0f32, -m, m)
}

#[cube(launch_unchecked)]
fn tanh_kernel<F: Float>(x: &[F], out: &mut [F], n: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        out[i] = F::cast_from(tanh_scalar(f32::cast_from(x[i])));
    }
}

#[cube(launch_unchecked)]
fn tanh_backward_kernel<F: Float>(y: &[F], dy: &[F], out: &mut [F], n: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        let t = f32::cast_from(y[i]);
        out[i] = F::cast_from(f32::cast_from(dy[i]) * (1.0f32 - t * t));
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
    shapes::same(op, &a.shape, &b.shape)
}

/// a, b [*] → a + b [*]. Tensors in row chunks (gradients of parameters larger than one binding)
/// are added part by part when both have the same chunks.
pub fn add(gpu: &GpuBackend, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    same_shape("add", a, b)?;
    if a.dtype == DType::F16 || b.dtype == DType::F16 {
        // f16 activations: always one buffer each.
        let ((ah, ad), (bh, bd)) = (a.act("add")?, b.act("add")?);
        if ad != bd {
            return Err(Error::shape("add", format!("{} + {} tensors", ad.name(), bd.name())));
        }
        let n = a.len();
        let out = gpu.alloc_as("add", n, ad)?;
        let (count, dim) = gpu.elementwise("add", n, ELEMWISE_UNITS)?;
        launch_float!(ad, add_kernel(
                gpu.client(), count, dim,
                BufferArg::from_raw_parts(ah, n),
                BufferArg::from_raw_parts(bh, n),
                BufferArg::from_raw_parts(out.clone(), n),
                n,
            ));
        return Ok(GpuTensor::of(out, a.shape.clone(), ad));
    }
    if !a.same_layout(b) {
        return Err(Error::limit("add", format!("{:?} is stored in {} and {} row chunks", a.shape, a.parts.len(), b.parts.len())));
    }
    let out = gpu.alloc_parts("add", &a.shape)?;
    if !out.same_layout(a) {
        return Err(Error::limit("add", format!("{:?} is split differently from a new tensor of its shape", a.shape)));
    }
    for (((ah, n), (bh, _)), (oh, _)) in a.f32_parts("add")?.into_iter().zip(b.f32_parts("add")?).zip(out.f32_parts("add")?) {
        let (count, dim) = gpu.elementwise("add", n, ELEMWISE_UNITS)?;
        launch_float!(DType::F32, add_kernel(
                gpu.client(), count, dim,
                BufferArg::from_raw_parts(ah, n),
                BufferArg::from_raw_parts(bh, n),
                BufferArg::from_raw_parts(oh, n),
                n,
            ));
    }
    Ok(out)
}

/// x [*] → GELU(x) [*].
pub fn gelu(gpu: &GpuBackend, x: &GpuTensor) -> Result<GpuTensor> {
    let n = x.len();
    let (xh, ad) = x.act("gelu")?;
    let out = gpu.alloc_as("gelu", n, ad)?;
    let (count, dim) = gpu.elementwise("gelu", n, ELEMWISE_UNITS)?;
    launch_float!(ad, gelu_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(xh, n),
            BufferArg::from_raw_parts(out.clone(), n),
            n,
        ));
    Ok(GpuTensor::of(out, x.shape.clone(), ad))
}

/// x [*] → tanh(x) [*] (BERT's pooler).
pub fn tanh(gpu: &GpuBackend, x: &GpuTensor) -> Result<GpuTensor> {
    let n = x.len();
    let (xh, ad) = x.act("tanh")?;
    let out = gpu.alloc_as("tanh", n, ad)?;
    let (count, dim) = gpu.elementwise("tanh", n, ELEMWISE_UNITS)?;
    launch_float!(ad, tanh_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(xh, n),
            BufferArg::from_raw_parts(out.clone(), n),
            n,
        ));
    Ok(GpuTensor::of(out, x.shape.clone(), ad))
}

/// u [N, 2I] → GELU(u[:, :I]) ⊙ u[:, I:] [N, I].
pub fn geglu(gpu: &GpuBackend, u: &GpuTensor) -> Result<GpuTensor> {
    let (rows, inter) = shape::geglu(&u.shape)?;
    let two_i = 2 * inter;
    let n = rows * inter;
    let (uh, ad) = u.act("geglu")?;
    let out = gpu.alloc_as("geglu", n, ad)?;
    let (count, dim) = gpu.elementwise("geglu", n, ELEMWISE_UNITS)?;
    launch_float!(ad, geglu_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(uh, rows * two_i),
            BufferArg::from_raw_parts(out.clone(), n),
            n, inter,
        ));
    Ok(GpuTensor::of(out, vec![rows, inter], ad))
}

/// y [N, M] += b [M], in place on a tensor the caller just created.
pub(crate) fn add_bias_in_place(gpu: &GpuBackend, y: &GpuTensor, b: &GpuTensor) -> Result<()> {
    let (rows, m) = y.matrix();
    shapes::bias(&b.shape, m)?;
    let n = rows * m;
    let (count, dim) = gpu.elementwise("bias", n, ELEMWISE_UNITS)?;
    let (yh, ad) = y.act("bias")?;
    launch_pair!(ad, b.dtype, add_bias_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(yh, n),
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
    let ((sh, sd), (dh, dd)) = (src.act("copy_columns")?, dst.act("copy_columns")?);
    if sd != dd {
        return Err(Error::shape("copy_columns", format!("{} into {}", sd.name(), dd.name())));
    }
    launch_float!(sd, copy_columns_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(sh, n),
            BufferArg::from_raw_parts(dh, rows * ld),
            n, m, ld, col0,
        ));
    Ok(())
}

/// Copy n values from src[src_off..] to dst[dst_off..] (flat buffers of `dtype`; the caller
/// checks ranges).
pub(crate) fn copy_range(gpu: &GpuBackend, dtype: DType, src: &Handle, dst: &Handle, src_off: usize, dst_off: usize, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (count, dim) = gpu.elementwise("copy", n, ELEMWISE_UNITS)?;
    launch_float!(dtype, copy_range_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(src.clone(), src_off + n),
            BufferArg::from_raw_parts(dst.clone(), dst_off + n),
            n, src_off, dst_off,
        ));
    Ok(())
}

/// out[i] = x[i] converted to `W`. f32 → f16 gives one of the two nearest f16 values (WGSL leaves
/// the choice to the implementation; tests allow either); values beyond ±65504 overflow.
#[cube(launch_unchecked)]
fn cast_kernel<A: Float, W: Float>(x: &[A], out: &mut [W], n: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        out[i] = W::cast_from(x[i]);
    }
}

/// t [*] (f32, one buffer or row chunks) → the same values stored as `dtype`, in the same row
/// chunks (a narrower type always fits where the f32 chunk did). Mixed-precision training uses it
/// to give the products an f16 copy of an f32 master weight.
pub(crate) fn cast(gpu: &GpuBackend, t: &GpuTensor, dtype: DType) -> Result<GpuTensor> {
    if dtype == DType::BF16 {
        return Err(Error::Device("WGSL has no bf16: the GPU backend stores weights as f32 or f16".into()));
    }
    let mut parts = Vec::with_capacity(t.parts.len());
    for (h, n) in t.f32_parts("cast")? {
        // Buffer sizes stay multiples of 4 bytes (an odd number of f16 values is padded).
        let out = gpu.client().empty((n * dtype.size()).next_multiple_of(4).max(4));
        if n > 0 {
            let (count, dim) = gpu.elementwise("cast", n, ELEMWISE_UNITS)?;
            launch_pair!(DType::F32, dtype, cast_kernel(
                    gpu.client(), count, dim,
                    BufferArg::from_raw_parts(h, n),
                    BufferArg::from_raw_parts(out.clone(), n),
                    n,
                ));
        }
        parts.push(out);
    }
    Ok(GpuTensor { parts, part_rows: t.part_rows, shape: t.shape.clone(), dtype })
}

// ---- Training: backwards, scaling, deterministic reductions. ----

/// d GELU(z)/dz in f32: Φ(z) + z·φ(z).
#[cube]
pub fn gelu_grad_scalar(z: f32) -> f32 {
    let cdf = 0.5f32 * (1.0f32 + Erf::erf(z * 0.707_106_77f32));
    let pdf = (z * z * -0.5f32).exp() * 0.398_942_3f32;
    cdf + z * pdf
}

#[cube(launch_unchecked)]
fn scale_kernel<F: Float>(a: &[F], out: &mut [F], n: usize, s: f32) {
    let i = ABSOLUTE_POS;
    if i < n {
        out[i] = F::cast_from(f32::cast_from(a[i]) * s);
    }
}

#[cube(launch_unchecked)]
fn gelu_backward_kernel<F: Float>(x: &[F], dy: &[F], out: &mut [F], n: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        out[i] = F::cast_from(f32::cast_from(dy[i]) * gelu_grad_scalar(f32::cast_from(x[i])));
    }
}

/// One invocation per element of dy [rows, I]: du[r, j] = dy·gate·GELU′(a), du[r, I + j] = dy·GELU(a)
/// with a = u[r, j], gate = u[r, I + j].
#[cube(launch_unchecked)]
fn geglu_backward_kernel<F: Float>(u: &[F], dy: &[F], du: &mut [F], n: usize, inter: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        let row = i / inter;
        let j = i % inter;
        let base = row * 2 * inter;
        let a = f32::cast_from(u[base + j]);
        let gate = f32::cast_from(u[base + inter + j]);
        let d = f32::cast_from(dy[i]);
        du[base + j] = F::cast_from(d * gate * gelu_grad_scalar(a));
        du[base + inter + j] = F::cast_from(d * gelu_scalar(a));
    }
}

fn check_same(op: &'static str, a: &GpuTensor, b: &GpuTensor) -> Result<()> {
    same_shape(op, a, b)?;
    a.handle(op)?;
    b.handle(op)?;
    Ok(())
}

/// a [*] (one buffer or row chunks) → a·s [*], laid out like `a`.
pub fn scale(gpu: &GpuBackend, a: &GpuTensor, s: f32) -> Result<GpuTensor> {
    let out = gpu.alloc_parts("scale", &a.shape)?;
    if !out.same_layout(a) {
        return Err(Error::limit("scale", format!("{:?} is split differently from a new tensor of its shape", a.shape)));
    }
    for ((ah, n), (oh, _)) in a.f32_parts("scale")?.into_iter().zip(out.f32_parts("scale")?) {
        let (count, dim) = gpu.elementwise("scale", n, ELEMWISE_UNITS)?;
        launch_float!(DType::F32, scale_kernel(
                gpu.client(), count, dim,
                BufferArg::from_raw_parts(ah, n),
                BufferArg::from_raw_parts(oh, n),
                n, s,
            ));
    }
    Ok(out)
}

/// x [*], dy [*] → dx = dy · GELU′(x) [*].
pub fn gelu_backward(gpu: &GpuBackend, x: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
    check_same("gelu_backward", x, dy)?;
    let n = x.len();
    let out = gpu.alloc("gelu_backward", n)?;
    let (count, dim) = gpu.elementwise("gelu_backward", n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, gelu_backward_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(x.handle("gelu_backward")?, n),
            BufferArg::from_raw_parts(dy.handle("gelu_backward")?, n),
            BufferArg::from_raw_parts(out.clone(), n),
            n,
        ));
    Ok(GpuTensor::single(out, x.shape.clone()))
}

/// y = tanh(x) [*], dy [*] → dx = dy · (1 − y²) [*].
pub fn tanh_backward(gpu: &GpuBackend, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
    check_same("tanh_backward", y, dy)?;
    let n = y.len();
    let out = gpu.alloc("tanh_backward", n)?;
    let (count, dim) = gpu.elementwise("tanh_backward", n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, tanh_backward_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(y.handle("tanh_backward")?, n),
            BufferArg::from_raw_parts(dy.handle("tanh_backward")?, n),
            BufferArg::from_raw_parts(out.clone(), n),
            n,
        ));
    Ok(GpuTensor::single(out, y.shape.clone()))
}

/// u [N, 2I], dy [N, I] → du [N, 2I].
pub fn geglu_backward(gpu: &GpuBackend, u: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
    let (rows, inter) = shape::geglu_backward(&u.shape, &dy.shape)?;
    let two_i = 2 * inter;
    let n = rows * inter;
    let out = gpu.alloc("geglu_backward", rows * two_i)?;
    let (count, dim) = gpu.elementwise("geglu_backward", n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, geglu_backward_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(u.handle("geglu_backward")?, rows * two_i),
            BufferArg::from_raw_parts(dy.handle("geglu_backward")?, n),
            BufferArg::from_raw_parts(out.clone(), rows * two_i),
            n, inter,
        ));
    Ok(GpuTensor::single(out, u.shape.clone()))
}

/// dst [rows, m] = columns col0..col0+m of src [rows, ld].
#[cube(launch_unchecked)]
fn take_columns_kernel<F: Float>(src: &[F], dst: &mut [F], n: usize, m: usize, ld: usize, col0: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        let r = i / m;
        let c = i % m;
        dst[i] = src[r * ld + col0 + c];
    }
}

/// Columns col0..col0+m of src [rows, ld] as a new [rows, m] tensor.
pub(crate) fn take_columns(gpu: &GpuBackend, src: &GpuTensor, col0: usize, m: usize) -> Result<GpuTensor> {
    let (rows, ld) = src.matrix();
    if col0 + m > ld {
        return Err(Error::shape("take_columns", format!("columns {col0}..{} of {:?}", col0 + m, src.shape)));
    }
    let n = rows * m;
    let out = gpu.alloc("take_columns", n)?;
    let (count, dim) = gpu.elementwise("take_columns", n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, take_columns_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(src.handle("take_columns")?, rows * ld),
            BufferArg::from_raw_parts(out.clone(), n),
            n, m, ld, col0,
        ));
    Ok(GpuTensor::single(out, vec![rows, m]))
}
