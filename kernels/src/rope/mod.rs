//! Rotary position embedding, rotate-half (GPT-NeoX) pairing (j, j + hd/2), on the q and k
//! blocks of a fused qkv activation; positions restart at 0 in every sequence.
//!
//! The cos/sin tables are computed on the host in float32 exactly like transformers
//! ([`rope_tables`]): GPU `sin`/`cos` lose accuracy on large angles (8,192 radians at the end of
//! a long document), a table does not.

use cubecl::prelude::*;

use crate::backend::RopeOps;
use crate::gpu::tensor::{launch_pair, GpuBackend, GpuSeqs, GpuTensor, ELEMWISE_UNITS};
use crate::{Error, Result};

#[cfg(any(test, all(feature = "testing", not(target_family = "wasm"))))]
mod tests;

impl RopeOps for GpuBackend {
    fn rope(&self, qkv: &GpuTensor, seqs: &GpuSeqs, cos: &GpuTensor, sin: &GpuTensor, nh: usize) -> Result<GpuTensor> {
        rope(self, qkv, seqs, cos, sin, nh)
    }

    fn rope_backward(&self, dqkv: &GpuTensor, seqs: &GpuSeqs, cos: &GpuTensor, sin: &GpuTensor, nh: usize) -> Result<GpuTensor> {
        rope_backward(self, dqkv, seqs, cos, sin, nh)
    }
}

/// This family's shape rules, checked by the GPU launchers below and by the CPU backend alike.
pub(crate) mod shape {
    use crate::shapes::{matrix, qkv};
    use crate::{Error, Result};

    /// RoPE on qkv [T, 3H] (an even head dim) with cos, sin [P, hd/2] → (T, H, head dim, P).
    pub(crate) fn rope(op: &'static str, q: &[usize], nh: usize, tokens: usize, cos: &[usize], sin: &[usize]) -> Result<(usize, usize, usize, usize)> {
        let (t, h, hd) = qkv(op, q, nh, tokens)?;
        if hd == 0 || hd % 2 != 0 {
            return Err(Error::shape(op, format!("qkv {q:?} with {nh} heads over {tokens} tokens")));
        }
        let (positions, half) = matrix(cos);
        if half != hd / 2 || sin != cos {
            return Err(Error::shape(op, format!("tables {cos:?} / {sin:?} for head dim {hd}")));
        }
        Ok((t, h, hd, positions))
    }
}

/// cos and sin tables [positions, hd/2] for one RoPE base θ, in float32 as transformers computes
/// them: inv_freq[j] = 1 / θ^(2j/hd), angle = p · inv_freq[j] (one f32 product), then cos/sin.
pub fn rope_tables(theta: f64, hd: usize, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let half = hd / 2;
    let inv_freq: Vec<f32> = (0..half).map(|j| 1.0f32 / (theta as f32).powf((2 * j) as f32 / hd as f32)).collect();
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for &f in &inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// One invocation per element of qkv [T, 3H]: q and k elements are rotated, v is copied.
/// `inverse` rotates by the negated angle (the backward: the rotation's transpose).
#[cube(launch_unchecked)]
fn rope_kernel<F: Float, T: Float>(
    qkv: &[F],
    positions: &[u32],
    cos: &[T],
    sin: &[T],
    out: &mut [F],
    n: usize,
    h: usize,
    hd: usize,
    #[comptime] inverse: bool,
) {
    let i = ABSOLUTE_POS;
    if i < n {
        let three_h = 3 * h;
        let row = i / three_h;
        let col = i % three_h;
        if col < 2 * h {
            let half = hd / 2;
            let d = col % hd;
            let p = positions[row] as usize;
            let x = f32::cast_from(qkv[i]);
            if d < half {
                let c = f32::cast_from(cos[p * half + d]);
                let mut s = f32::cast_from(sin[p * half + d]);
                if inverse {
                    s = -s;
                }
                out[i] = F::cast_from(x * c - f32::cast_from(qkv[i + half]) * s);
            } else {
                let c = f32::cast_from(cos[p * half + d - half]);
                let mut s = f32::cast_from(sin[p * half + d - half]);
                if inverse {
                    s = -s;
                }
                out[i] = F::cast_from(x * c + f32::cast_from(qkv[i - half]) * s);
            }
        } else {
            out[i] = qkv[i];
        }
    }
}

/// qkv [T, 3H], cos/sin [P, hd/2] → qkv with q, k rotated [T, 3H].
pub fn rope(gpu: &GpuBackend, qkv: &GpuTensor, seqs: &GpuSeqs, cos: &GpuTensor, sin: &GpuTensor, nh: usize) -> Result<GpuTensor> {
    rotate(gpu, "rope", qkv, seqs, cos, sin, nh, false)
}

/// Backward of `rope`: dqkv [T, 3H] → the q and k blocks rotated back (angle negated), v copied.
pub fn rope_backward(gpu: &GpuBackend, dqkv: &GpuTensor, seqs: &GpuSeqs, cos: &GpuTensor, sin: &GpuTensor, nh: usize) -> Result<GpuTensor> {
    rotate(gpu, "rope_backward", dqkv, seqs, cos, sin, nh, true)
}

#[allow(clippy::too_many_arguments)]
fn rotate(gpu: &GpuBackend, op: &'static str, qkv: &GpuTensor, seqs: &GpuSeqs, cos: &GpuTensor, sin: &GpuTensor, nh: usize, inverse: bool) -> Result<GpuTensor> {
    let (t, h, hd, p_max) = shape::rope(op, &qkv.shape, nh, seqs.tokens, &cos.shape, &sin.shape)?;
    let (three_h, half) = (3 * h, hd / 2);
    if seqs.longest > p_max {
        return Err(Error::limit(op, format!("a sequence of {} tokens needs tables of that many positions, have {p_max}", seqs.longest)));
    }
    let n = t * three_h;
    let ((qh, ad), (ch, cd), (sh, sd)) = (qkv.act(op)?, cos.act(op)?, sin.act(op)?);
    if cd != sd {
        return Err(Error::shape(op, "cos and sin tables stored in different dtypes"));
    }
    let out = gpu.alloc_as(op, n, ad)?;
    let (count, dim) = gpu.elementwise(op, n, ELEMWISE_UNITS)?;
    launch_pair!(ad, cd, rope_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(qh, n),
            BufferArg::from_raw_parts(seqs.positions.clone(), t),
            BufferArg::from_raw_parts(ch, p_max * half),
            BufferArg::from_raw_parts(sh, p_max * half),
            BufferArg::from_raw_parts(out.clone(), n),
            n, h, hd, inverse,
        ));
    Ok(GpuTensor::of(out, qkv.shape.clone(), ad))
}
