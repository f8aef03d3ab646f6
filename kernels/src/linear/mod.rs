//! Linear layers: y = x·Wᵀ (+ b) through cubek-matmul, with W given as a transposed view (no
//! copy) and the bias added by a separate element-wise kernel. A weight stored in row chunks
//! (a vocabulary projection larger than one binding) is multiplied chunk by chunk, each result
//! copied into its column block of the output.

use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl::zspace::{Shape, Strides, Tiling};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::launch_ref;
use cubek::matmul::strategy::Strategy;
use cubek::std::InputBinding;

use crate::backend::DType;
use crate::elementwise::{add_bias_in_place, copy_columns};
use crate::gpu::{GpuBackend, GpuTensor};
use crate::{Error, Result};

#[cfg(test)]
mod tests;

fn binding(handle: Handle, shape: [usize; 2], strides: [usize; 2]) -> TensorBinding {
    TensorBinding {
        handle: handle.binding(),
        shape: Shape::from(shape.to_vec()),
        strides: Strides::from(strides.to_vec()),
        tiling: Tiling::UNTILED,
    }
}

/// The GEMM strategy. cubecl's WGSL compiler has no cooperative-matrix path, so on wgpu
/// `Strategy::Auto` always resolves to SimpleUnit; asking for it explicitly makes a bad layout an
/// error instead of a panic.
fn strategy() -> Strategy {
    Strategy::MultiLevel(cubek::matmul::multi_level::Strategy::SimpleUnit(Default::default()))
}

fn elem(d: DType) -> cubecl::ir::ElemType {
    match d {
        DType::F32 => f32::elem_type_native(),
        DType::F16 => half::f16::elem_type_native(),
        DType::BF16 => half::bf16::elem_type_native(),
    }
}

/// y [n, m] (f32) = x [n, k] (f32) · w[m, k]ᵀ (stored as `wd`), accumulated in f32.
fn matmul_nt(gpu: &GpuBackend, x: Handle, w: Handle, wd: DType, y: Handle, n: usize, k: usize, m: usize) -> Result<()> {
    let lhs = InputBinding::Normal(binding(x, [n, k], [k, 1]), elem(DType::F32));
    let rhs = InputBinding::Normal(binding(w, [k, m], [1, k]), elem(wd));
    let out = binding(y, [n, m], [m, 1]);
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems { lhs: elem(DType::F32), rhs: elem(wd), out: elem(DType::F32) });
    launch_ref(&strategy(), gpu.client(), lhs, rhs, out, &mut dtypes).map_err(|e| Error::launch("linear", e))
}

/// x [N, K] (f32), w [M, K] (a weight, possibly in row chunks), b [M] → x·wᵀ + b [N, M] (f32).
pub fn linear(gpu: &GpuBackend, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>) -> Result<GpuTensor> {
    let (n, k) = x.matrix();
    let (m, kw) = w.matrix();
    if kw != k || w.shape.len() != 2 {
        return Err(Error::shape("linear", format!("x {:?} · wᵀ with w {:?}: inner sizes differ", x.shape, w.shape)));
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().unwrap() = m;
    let y = GpuTensor::single(gpu.alloc("linear", n * m)?, shape);
    if n > 0 && m > 0 {
        let xh = x.handle("linear")?;
        if w.parts.len() == 1 {
            matmul_nt(gpu, xh, w.parts[0].clone(), w.dtype, y.parts[0].clone(), n, k, m)?;
        } else {
            for (lo, rows, handle) in w.chunks() {
                let part = GpuTensor::single(gpu.alloc("linear", n * rows)?, vec![n, rows]);
                matmul_nt(gpu, xh.clone(), handle.clone(), w.dtype, part.parts[0].clone(), n, k, rows)?;
                copy_columns(gpu, &part, &y, lo)?;
            }
        }
    }
    if let Some(b) = b {
        add_bias_in_place(gpu, &y, b)?;
    }
    Ok(y)
}
