//! Optimizer steps as kernels: AdamW (PyTorch's) and StableAdamW (optimi's, as used by ModernBERT
//! and BioClinical ModernBERT), one parameter tensor per launch, and the squared-sum reduction
//! behind gradient-norm clipping.
//!
//! AdamW, step t (from 1), per element:
//!   p ← p·(1 − lr·wd);  m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;
//!   p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
//! StableAdamW, step t, with debiased betas β̂ = β(1 − βᵗ⁻¹)/(1 − βᵗ) so that m, v are the
//! bias-corrected moments:
//!   m ← m + (1 − β̂₁)(g − m);  v ← β̂₂v + (1 − β̂₂)g²;
//!   rms = sqrt(mean(g² / max(v, ε²)))  over the whole tensor;  η = lr / max(1, rms);
//!   p ← p·(1 − η/lr_max·wd) − η·m / (√v + ε)
//! Weight decay is the caller's choice per tensor (0 for norms and biases).
//!
//! On the GPU, AdamW is one element-wise kernel. StableAdamW needs the tensor's RMS after m, v are
//! updated and before p is: a first kernel updates m, v and writes one partial sum of
//! g²/max(v, ε²) per workgroup, the partial sums are reduced in a fixed order (deterministic) to
//! rms [1], and a second element-wise kernel updates p reading rms. Scalars (bias corrections,
//! debiased betas) are computed on the host in f64. Tensors in row chunks are updated part by part.

use cubecl::prelude::*;
use cubecl::server::Handle;

pub use crate::backend::{AdamStep, Rule};
use crate::backend::{AdamUpdate, DType, OptimOps};
use crate::gpu::tensor::{launch_float, GpuBackend, GpuTensor, ELEMWISE_UNITS};
use crate::reduce::{block_sum, fill, flat_total, SUM_CHUNK};
use crate::{Error, Result};

#[cfg(any(test, all(feature = "testing", not(target_family = "wasm"))))]
mod tests;

impl OptimOps for GpuBackend {
    fn adam_step(
        &self,
        p: &GpuTensor,
        g: &GpuTensor,
        m: &GpuTensor,
        v: &GpuTensor,
        step: &crate::backend::AdamStep,
    ) -> Result<crate::backend::AdamUpdate<GpuTensor>> {
        adam_step(self, p, g, m, v, step)
    }
}

/// This family's shape rules, checked by the GPU launchers below and by the CPU backend alike.
pub(crate) mod shape {
    use crate::{Error, Result};

    /// A parameter p and its gradient and moments, of one shape; steps count from 1.
    pub(crate) fn adam(p: &[usize], g: &[usize], m: &[usize], v: &[usize], step: u64) -> Result<()> {
        for (name, x) in [("g", g), ("m", m), ("v", v)] {
            if x != p {
                return Err(Error::shape("adam_step", format!("{name} {x:?} for a parameter {p:?}")));
            }
        }
        if step == 0 {
            return Err(Error::shape("adam_step", "steps count from 1"));
        }
        Ok(())
    }
}

/// Invocations per workgroup of the StableAdamW moment kernel (a power of two; it handles
/// `SUM_CHUNK` elements, like the flat sums that finish its partial sums).
const MOMENT_UNITS: usize = 256;

/// AdamW, element-wise, out of place: (p, g, m, v) → (p', m', v').
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn adamw_kernel<F: Float>(
    p: &[F],
    g: &[F],
    m: &[F],
    v: &[F],
    p_out: &mut [F],
    m_out: &mut [F],
    v_out: &mut [F],
    n: usize,
    keep: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    step_size: f32,
    inv_sqrt_c2: f32,
    eps: f32,
) {
    let i = ABSOLUTE_POS;
    if i < n {
        let gi = f32::cast_from(g[i]);
        let mi = beta1 * f32::cast_from(m[i]) + one_minus_beta1 * gi;
        let vi = beta2 * f32::cast_from(v[i]) + one_minus_beta2 * gi * gi;
        let pi = f32::cast_from(p[i]) * keep - step_size * mi / (vi.sqrt() * inv_sqrt_c2 + eps);
        p_out[i] = F::cast_from(pi);
        m_out[i] = F::cast_from(mi);
        v_out[i] = F::cast_from(vi);
    }
}

/// StableAdamW, first pass: the debiased moments, and per workgroup (`SUM_CHUNK` elements) the
/// partial sum of g² / max(v', ε²) at partial[offset + CUBE_POS].
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn stable_moments_kernel<F: Float>(
    g: &[F],
    m: &[F],
    v: &[F],
    m_out: &mut [F],
    v_out: &mut [F],
    partial: &mut [F],
    n: usize,
    blocks: usize,
    offset: usize,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps_sq: f32,
) {
    let mut s = Shared::<[f32]>::new_slice(MOMENT_UNITS);
    let tid = UNIT_POS as usize;
    let block = CUBE_POS;
    let end = min(block * SUM_CHUNK + SUM_CHUNK, n);
    let mut acc = 0.0f32;
    let mut i = block * SUM_CHUNK + tid;
    while i < end {
        let gi = f32::cast_from(g[i]);
        let mi = f32::cast_from(m[i]);
        let mi = mi + one_minus_beta1 * (gi - mi);
        let vi = beta2 * f32::cast_from(v[i]) + one_minus_beta2 * gi * gi;
        m_out[i] = F::cast_from(mi);
        v_out[i] = F::cast_from(vi);
        acc += gi * gi / max(vi, eps_sq);
        i += MOMENT_UNITS;
    }
    s[tid] = acc;
    block_sum(&mut s);
    if tid == 0 && block < blocks {
        partial[offset + block] = F::cast_from(s[0]);
    }
}

/// rms[0] = sqrt(total[0] / n).
#[cube(launch_unchecked)]
fn stable_rms_kernel<F: Float>(total: &[F], rms: &mut [F], n: f32) {
    if ABSOLUTE_POS == 0 {
        rms[0] = F::cast_from((f32::cast_from(total[0]) / n).sqrt());
    }
}

/// StableAdamW, second pass: η = lr / max(1, rms), p' = p·(1 − η·wd/lr_max) − η·m / (√v + ε).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn stable_params_kernel<F: Float>(p: &[F], m: &[F], v: &[F], rms: &[F], p_out: &mut [F], n: usize, lr: f32, wd_over_max_lr: f32, eps: f32) {
    let i = ABSOLUTE_POS;
    if i < n {
        let eta = lr / max(1.0f32, f32::cast_from(rms[0]));
        let keep = 1.0f32 - eta * wd_over_max_lr;
        let pi = f32::cast_from(p[i]) * keep - eta * f32::cast_from(m[i]) / (f32::cast_from(v[i]).sqrt() + eps);
        p_out[i] = F::cast_from(pi);
    }
}

/// One AdamW or StableAdamW step of a parameter: p, g, m, v of one shape (f32, one buffer or the
/// same row chunks) → (p', m', v') laid out alike and, for StableAdamW, the update RMS [1].
/// Hyper-parameters and bias corrections are computed on the host in f64.
pub fn adam_step(gpu: &GpuBackend, p: &GpuTensor, g: &GpuTensor, m: &GpuTensor, v: &GpuTensor, s: &AdamStep) -> Result<AdamUpdate<GpuTensor>> {
    let op = "adam_step";
    shape::adam(&p.shape, &g.shape, &m.shape, &v.shape, s.step)?;
    for (name, x) in [("g", g), ("m", m), ("v", v)] {
        if !x.same_layout(p) {
            return Err(Error::limit(op, format!("{name} is stored in {} row chunks, the parameter {:?} in {}", x.parts.len(), p.shape, p.parts.len())));
        }
    }
    let (p_out, m_out, v_out) = (gpu.alloc_parts(op, &p.shape)?, gpu.alloc_parts(op, &p.shape)?, gpu.alloc_parts(op, &p.shape)?);
    if !p_out.same_layout(p) {
        return Err(Error::limit(op, format!("the parameter {:?} is split differently from a new tensor of its shape", p.shape)));
    }
    // Per part: its element count and the buffers of p, g, m, v, p', m', v' in that order.
    let tensors: Vec<_> = [p, g, m, v, &p_out, &m_out, &v_out].iter().map(|x| x.f32_parts(op)).collect::<Result<_>>()?;
    let parts: Vec<(usize, [Handle; 7])> = (0..p.parts.len()).map(|k| (tensors[0][k].1, std::array::from_fn(|i| tensors[i][k].0.clone()))).collect();
    let t = s.step as i32;
    let (b1, b2) = (s.beta1, s.beta2);
    match s.rule {
        Rule::AdamW => {
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            for (n, hs) in &parts {
                let n = *n;
                // SAFETY: every part holds n f32 values (same layout checked above).
                let h = |i: usize| unsafe { BufferArg::from_raw_parts(hs[i].clone(), n) };
                let (count, dim) = gpu.elementwise(op, n, ELEMWISE_UNITS)?;
                launch_float!(DType::F32, adamw_kernel(
                        gpu.client(), count, dim,
                        h(0), h(1), h(2), h(3), h(4), h(5), h(6),
                        n,
                        (1.0 - s.lr * s.weight_decay) as f32,
                        b1 as f32,
                        (1.0 - b1) as f32,
                        b2 as f32,
                        (1.0 - b2) as f32,
                        (s.lr / c1) as f32,
                        (1.0 / c2.sqrt()) as f32,
                        s.eps as f32,
                    ));
            }
            Ok(AdamUpdate { param: p_out, m: m_out, v: v_out, rms: None })
        }
        Rule::StableAdamW { max_lr } => {
            // Debiased betas β̂ = β(1 − βᵗ⁻¹)/(1 − βᵗ); 1 − β̂ computed here, in f64.
            let debiased = |b: f64| (b.powi(t) - b) / (b.powi(t) - 1.0);
            let (b1t, b2t) = (debiased(b1), debiased(b2));
            let total_len = p.len();
            let blocks: usize = parts.iter().map(|(n, _)| n.div_ceil(SUM_CHUNK)).sum();
            let rms = gpu.alloc(op, 1)?;
            if blocks == 0 {
                fill(gpu, &rms, 1, 0.0)?;
                return Ok(AdamUpdate { param: p_out, m: m_out, v: v_out, rms: Some(GpuTensor::single(rms, vec![1])) });
            }
            let partial = gpu.alloc(op, blocks)?;
            let mut offset = 0;
            for (n, hs) in &parts {
                let n = *n;
                let part_blocks = n.div_ceil(SUM_CHUNK);
                if part_blocks == 0 {
                    continue;
                }
                // SAFETY: every part holds n f32 values (same layout checked above).
                let h = |i: usize| unsafe { BufferArg::from_raw_parts(hs[i].clone(), n) };
                launch_float!(DType::F32, stable_moments_kernel(
                        gpu.client(), gpu.grid(op, part_blocks)?, CubeDim::new_1d(MOMENT_UNITS as u32),
                        h(1), h(2), h(3), h(5), h(6),
                        BufferArg::from_raw_parts(partial.clone(), blocks),
                        n, part_blocks, offset,
                        (1.0 - b1t) as f32,
                        b2t as f32,
                        (1.0 - b2t) as f32,
                        (s.eps * s.eps) as f32,
                    ));
                offset += part_blocks;
            }
            let total = flat_total(gpu, op, partial, blocks)?;
            launch_float!(DType::F32, stable_rms_kernel(
                    gpu.client(), CubeCount::Static(1, 1, 1), CubeDim::new_1d(1),
                    BufferArg::from_raw_parts(total, 1),
                    BufferArg::from_raw_parts(rms.clone(), 1),
                    total_len as f32,
                ));
            for (n, hs) in &parts {
                let n = *n;
                // SAFETY: every part holds n f32 values (same layout checked above).
                let h = |i: usize| unsafe { BufferArg::from_raw_parts(hs[i].clone(), n) };
                let (count, dim) = gpu.elementwise(op, n, ELEMWISE_UNITS)?;
                launch_float!(DType::F32, stable_params_kernel(
                        gpu.client(), count, dim,
                        h(0), h(5), h(6),
                        BufferArg::from_raw_parts(rms.clone(), 1),
                        h(4),
                        n,
                        s.lr as f32,
                        (s.weight_decay / max_lr) as f32,
                        s.eps as f32,
                    ));
            }
            Ok(AdamUpdate { param: p_out, m: m_out, v: v_out, rms: Some(GpuTensor::single(rms, vec![1])) })
        }
    }
}
