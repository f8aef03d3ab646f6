//! Linear layers: y = x·Wᵀ (+ b) through cubek-matmul, with W given as a transposed view (no
//! copy) and the bias added by a separate element-wise kernel. A weight stored in row chunks
//! (a vocabulary projection larger than one binding) is multiplied chunk by chunk, each result
//! copied into its column block of the output.
//!
//! Training adds the two other products of a linear layer's backward, also through cubek with
//! strided views (no transposed copies): `matmul` (dx = dy·W) and `matmul_tn` (dW = dyᵀ·x). A
//! weight gradient larger than one binding (the tied decoder's [V, H]) is produced in the row
//! chunks `upload` would give the parameter, and `matmul` accepts such a [K, M] operand.
//!
//! Mixed precision: on a backend whose weight dtype is f16, an f32 weight operand (a trainable
//! parameter, the f32 master copy) is first cast to an f16 copy, used for that one product and
//! dropped, so `linear` and `matmul` multiply f32 activations by f16 weights with f32
//! accumulation, as inference with f16 weights does. Gradients and the optimizer stay f32.

use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl::zspace::{Shape, Strides, Tiling};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems, MatmulSetupError};
use cubek::matmul::launch::launch_ref;
use cubek::std::InputBinding;

use crate::backend::{DType, LinearOps};
use std::borrow::Cow;

use crate::elementwise::{add, add_bias_in_place, cast, copy_columns, take_columns};
use crate::gpu::tensor::{launch_pair, GpuBackend, GpuTensor};
use crate::reduce::fill;
pub use path::{GemmLog, GemmPath};
use crate::{Error, Result};

pub mod path;
mod tiled;
#[cfg(any(test, all(feature = "testing", not(target_family = "wasm"))))]
mod tests;

impl LinearOps for GpuBackend {
    fn linear(&self, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>) -> Result<GpuTensor> {
        linear(self, x, w, b)
    }

    fn matmul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        matmul(self, a, b)
    }

    fn matmul_tn(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        matmul_tn(self, a, b)
    }
}

/// This family's shape rules, checked by the GPU launchers below and by the CPU backend alike.
pub(crate) mod shape {
    use crate::shapes::{bias, matrix};
    use crate::{Error, Result};

    /// x [N, K] · w [M, K]ᵀ (+ b [M]) → (N, K, M).
    pub(crate) fn linear(x: &[usize], w: &[usize], b: Option<&[usize]>) -> Result<(usize, usize, usize)> {
        let ((n, k), (m, kw)) = (matrix(x), matrix(w));
        if kw != k || w.len() != 2 {
            return Err(Error::shape("linear", format!("x {x:?} · wᵀ with w {w:?}: inner sizes differ")));
        }
        if let Some(b) = b {
            bias(b, m)?;
        }
        Ok((n, k, m))
    }

    /// a [N, K] · b [K, M] → (N, K, M).
    pub(crate) fn matmul(a: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
        let ((n, k), (kb, m)) = (matrix(a), matrix(b));
        if a.len() != 2 || b.len() != 2 || kb != k {
            return Err(Error::shape("matmul", format!("a {a:?} · b {b:?}: inner sizes differ")));
        }
        Ok((n, k, m))
    }

    /// a [N, M]ᵀ · b [N, K] → (N, M, K).
    pub(crate) fn matmul_tn(a: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
        let ((n, m), (nb, k)) = (matrix(a), matrix(b));
        if a.len() != 2 || b.len() != 2 || nb != n {
            return Err(Error::shape("matmul_tn", format!("a {a:?}ᵀ · b {b:?}: row counts differ")));
        }
        Ok((n, m, k))
    }
}

fn binding(handle: Handle, shape: [usize; 2], strides: [usize; 2]) -> TensorBinding {
    TensorBinding {
        handle: handle.binding(),
        shape: Shape::from(shape.to_vec()),
        strides: Strides::from(strides.to_vec()),
        tiling: Tiling::UNTILED,
    }
}

/// Launch one product on the backend's GEMM path.
fn launch_gemm(gpu: &GpuBackend, op: &'static str, lhs: InputBinding, rhs: InputBinding, out: TensorBinding, dtypes: &mut MatmulElems) -> Result<()> {
    let unit = GemmPath::Unit.strategy();
    let half = elem(DType::F16);
    let both_f16 = dtypes.lhs_global == half && dtypes.rhs_global == half;
    let strategy = match gpu.gemm {
        GemmPath::Auto if !both_f16 || gpu.gemm_log.refused() => unit,
        GemmPath::Auto => {
            let cmma = GemmPath::Cmma.strategy();
            let mut tried = dtypes.clone();
            match launch_ref(&cmma, gpu.client(), lhs.clone(), rhs.clone(), out.clone(), &mut tried) {
                Ok(()) => {
                    *dtypes = tried;
                    gpu.gemm_log.record(&cmma);
                    return Ok(());
                }
                Err(e) => {
                    let why: String = e.to_string().trim().chars().take(200).collect();
                    match e {
                        MatmulSetupError::Unavailable(_) => gpu.gemm_log.refuse(why),
                        _ => gpu.gemm_log.fall_back(why),
                    }
                    unit
                }
            }
        }
        path => path.strategy(),
    };
    launch_ref(&strategy, gpu.client(), lhs, rhs, out, dtypes).map_err(|e| Error::launch(op, e))?;
    gpu.gemm_log.record(&strategy);
    Ok(())
}

fn elem(d: DType) -> cubecl::ir::ElemType {
    match d {
        DType::F32 => f32::elem_type_native(),
        DType::F16 => half::f16::elem_type_native(),
        DType::BF16 => half::bf16::elem_type_native(),
        DType::Int8 => unreachable!("GpuBackend::with_dtype refuses int8"),
    }
}

/// y [n, m] = x [n, k] · w[m, k]ᵀ (w stored as `wd`; x and y as `ad`), accumulated in f32.
#[allow(clippy::too_many_arguments)]
fn matmul_nt(gpu: &GpuBackend, x: Handle, ad: DType, w: Handle, wd: DType, y: Handle, n: usize, k: usize, m: usize) -> Result<()> {
    let lhs = InputBinding::Normal(binding(x, [n, k], [k, 1]), elem(ad));
    let rhs = InputBinding::Normal(binding(w, [k, m], [1, k]), elem(wd));
    let out = binding(y, [n, m], [m, 1]);
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems { lhs: elem(ad), rhs: elem(wd), out: elem(ad) });
    launch_gemm(gpu, "linear", lhs, rhs, out, &mut dtypes)
}

/// A weight operand in the backend's precision: an f32 matrix on an f16 backend becomes an f16 copy
/// (same row chunks); anything else is used as stored.
fn in_weight_dtype<'a>(gpu: &GpuBackend, w: &'a GpuTensor) -> Result<Cow<'a, GpuTensor>> {
    if gpu.dtype == DType::F16 && w.dtype == DType::F32 && w.shape.len() == 2 {
        Ok(Cow::Owned(cast(gpu, w, DType::F16)?))
    } else {
        Ok(Cow::Borrowed(w))
    }
}

/// x [N, K] (an activation, f32 or f16), w [M, K] (a weight, possibly in row chunks), b [M] →
/// x·wᵀ + b [N, M] in x's dtype, accumulated in f32.
pub fn linear(gpu: &GpuBackend, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>) -> Result<GpuTensor> {
    let (n, k, m) = shape::linear(&x.shape, &w.shape, None)?;
    let mut shape = x.shape.clone();
    *shape.last_mut().unwrap() = m;
    let (xh, ad) = x.act("linear")?;
    let y = GpuTensor::of(gpu.alloc_as("linear", n * m, ad)?, shape, ad);
    if gpu.gemm == GemmPath::Tiled && w.parts.len() == 1 && n > 0 && m > 0 && k > 0 {
        let w = in_weight_dtype(gpu, w)?;
        let fused = b.filter(|b| b.dtype == DType::F32 && b.parts.len() == 1);
        linear_tiled(gpu, xh, ad, &w, fused, &y, n, k, m)?;
        if let (Some(b), None) = (b, fused) {
            add_bias_in_place(gpu, &y, b)?;
        }
        return Ok(y);
    }
    if n > 0 && m > 0 {
        let w = in_weight_dtype(gpu, w)?;
        if w.parts.len() == 1 {
            matmul_nt(gpu, xh, ad, w.parts[0].clone(), w.dtype, y.parts[0].clone(), n, k, m)?;
        } else {
            for (lo, rows, handle) in w.chunks() {
                let part = GpuTensor::of(gpu.alloc_as("linear", n * rows, ad)?, vec![n, rows], ad);
                matmul_nt(gpu, xh.clone(), ad, handle.clone(), w.dtype, part.parts[0].clone(), n, k, rows)?;
                copy_columns(gpu, &part, &y, lo)?;
            }
        }
    }
    if let Some(b) = b {
        add_bias_in_place(gpu, &y, b)?;
    }
    Ok(y)
}

/// y [n, m] = x [n, k] · w [m, k]ᵀ (+ b [m], f32) on the register-tiled kernel.
#[allow(clippy::too_many_arguments)]
fn linear_tiled(gpu: &GpuBackend, x: Handle, ad: DType, w: &GpuTensor, b: Option<&GpuTensor>, y: &GpuTensor, n: usize, k: usize, m: usize) -> Result<()> {
    use tiled::{linear_tiled_kernel, TM, TN, WG_X, WG_Y};
    let groups = |len: usize, tile: usize, wg: u32| len.div_ceil(tile).div_ceil(wg as usize);
    let (gx, gy) = (groups(m, TN, WG_X), groups(n, TM, WG_Y));
    let max = gpu.limits().max_cube_count as usize;
    if gx > max || gy > max {
        return Err(Error::limit("linear", format!("[{n}, {k}] · [{m}, {k}]ᵀ needs a {gx} × {gy} grid, more than the device's {max} per dimension")));
    }
    let bias = match b {
        Some(b) => b.stored("linear")?,
        None => gpu.client().empty(4),
    };
    launch_pair!(ad, w.dtype, linear_tiled_kernel(
        gpu.client(),
        CubeCount::Static(gx as u32, gy as u32, 1),
        CubeDim::new_2d(WG_X, WG_Y),
        BufferArg::from_raw_parts(x, n * k),
        BufferArg::from_raw_parts(w.parts[0].clone(), m * k),
        BufferArg::from_raw_parts(bias, b.map_or(1, |_| m)),
        BufferArg::from_raw_parts(y.parts[0].clone(), n * m),
        n,
        k,
        m,
        b.is_some(),
    ));
    gpu.gemm_log.record_name("linear_tiled");
    Ok(())
}

/// A matrix operand: (buffer, shape, strides) of a view.
type View = (Handle, [usize; 2], [usize; 2]);

/// out [rows, cols] (f32) = lhs (f32) · rhs (stored as `rd`), accumulated in f32.
fn gemm(gpu: &GpuBackend, op: &'static str, lhs: View, rhs: View, rd: DType, out: Handle) -> Result<()> {
    let (rows, cols) = (lhs.1[0], rhs.1[1]);
    if lhs.1[1] == 0 {
        return fill(gpu, &out, rows * cols, 0.0);
    }
    let f = elem(DType::F32);
    let lhs = InputBinding::Normal(binding(lhs.0, lhs.1, lhs.2), f);
    let rhs = InputBinding::Normal(binding(rhs.0, rhs.1, rhs.2), elem(rd));
    let out = binding(out, [rows, cols], [cols, 1]);
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems { lhs: f, rhs: elem(rd), out: f });
    launch_gemm(gpu, op, lhs, rhs, out, &mut dtypes)
}

/// a [N, K] · b [K, M] → [N, M], f32. `b` is a weight (multiplied in the backend's weight dtype)
/// and may be in row chunks (a parameter larger than one binding): then each chunk multiplies its
/// column block of `a` and the products are summed.
pub fn matmul(gpu: &GpuBackend, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    let (n, k, m) = shape::matmul(&a.shape, &b.shape)?;
    let ah = a.handle("matmul")?;
    let b = in_weight_dtype(gpu, b)?;
    let y = GpuTensor::single(gpu.alloc("matmul", n * m)?, vec![n, m]);
    if n == 0 || m == 0 {
        return Ok(y);
    }
    if b.parts.len() == 1 {
        gemm(gpu, "matmul", (ah, [n, k], [k, 1]), (b.parts[0].clone(), [k, m], [m, 1]), b.dtype, y.parts[0].clone())?;
        return Ok(y);
    }
    let mut sum: Option<GpuTensor> = None;
    for (lo, rows, handle) in b.chunks() {
        let a_block = take_columns(gpu, a, lo, rows)?;
        let part = GpuTensor::single(gpu.alloc("matmul", n * m)?, vec![n, m]);
        gemm(gpu, "matmul", (a_block.parts[0].clone(), [n, rows], [rows, 1]), (handle.clone(), [rows, m], [m, 1]), b.dtype, part.parts[0].clone())?;
        sum = Some(match sum {
            None => part,
            Some(s) => add(gpu, &s, &part)?,
        });
    }
    Ok(sum.unwrap_or(y))
}

/// aᵀ · b: a [N, M], b [N, K] → [M, K], f32, with aᵀ a strided view of a. An output larger than one
/// binding is returned in the row chunks `upload` would use for that shape, each chunk computed
/// from its column block of `a`.
pub fn matmul_tn(gpu: &GpuBackend, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    let (n, m, k) = shape::matmul_tn(&a.shape, &b.shape)?;
    let ah = a.handle("matmul_tn")?;
    let bh = b.handle("matmul_tn")?;
    let y = gpu.alloc_parts("matmul_tn", &[m, k])?;
    if m == 0 || k == 0 {
        return Ok(y);
    }
    if y.parts.len() == 1 {
        gemm(gpu, "matmul_tn", (ah, [m, n], [1, m]), (bh, [n, k], [k, 1]), DType::F32, y.parts[0].clone())?;
        return Ok(y);
    }
    for (lo, rows, handle) in y.chunks() {
        let a_block = take_columns(gpu, a, lo, rows)?;
        gemm(gpu, "matmul_tn", (a_block.parts[0].clone(), [rows, n], [1, rows]), (bh.clone(), [n, k], [k, 1]), DType::F32, handle.clone())?;
    }
    Ok(y)
}
