//! Attention forward, flash style, over unpadded variable-length batches.
//!
//! One workgroup handles one block of `BQ` consecutive queries of one sequence and one head; each
//! invocation owns one query row. The workgroup walks the key tiles of `bk` rows that intersect
//! the block's visible range, loading K and V tiles into workgroup memory, and keeps for each
//! row a running max `m`, running sum `l` and an unnormalised output (online softmax). A local
//! layer (|i − j| ≤ w) visits only the tiles within ±w of its block, so its cost is
//! O(S · window); nothing of size S × S ever exists. The per-row log-sum-exp is written out for
//! the backward pass.
//!
//! Backward (flash-attention-2 style, nothing S × S either): a kernel computes
//! δ[t, head] = dout·out per row; then one workgroup per block of `BQ` keys and head owns one key
//! row per invocation and walks the query tiles that can see the block (the whole sequence, or
//! ±window like the forward), recomputing P = exp(scale·q·k − lse) to accumulate dK and dV; and one
//! workgroup per block of `BQ` queries and head walks the key tiles to accumulate dQ. Every
//! gradient row has one owner that sums in a fixed order: deterministic, no atomics. Key blocks
//! and query blocks are both 64 rows, so both kernels run over the forward's work list.

use cubecl::prelude::*;

use crate::backend::{AttentionOps, DType};
use crate::gpu::tensor::{launch_float, GpuBackend, GpuSeqs, GpuTensor};
use crate::shapes;
use crate::{Error, Result};

#[cfg(any(test, all(feature = "testing", not(target_family = "wasm"))))]
mod tests;

impl AttentionOps for GpuBackend {
    fn attention(&self, qkv: &GpuTensor, seqs: &GpuSeqs, nh: usize, window: Option<usize>) -> Result<(GpuTensor, GpuTensor)> {
        attention(self, qkv, seqs, nh, window)
    }

    fn attention_backward(
        &self,
        qkv: &GpuTensor,
        out: &GpuTensor,
        lse: &GpuTensor,
        dout: &GpuTensor,
        seqs: &GpuSeqs,
        nh: usize,
        window: Option<usize>,
    ) -> Result<GpuTensor> {
        attention_backward(self, qkv, out, lse, dout, seqs, nh, window)
    }
}

/// This family's shape rules, checked by the GPU launchers below and by the CPU backend alike.
pub(crate) mod shape {
    use crate::shapes::qkv;
    use crate::{Error, Result};

    /// The backward of attention: qkv [T, 3H] (2-D), out and dout [T, H], lse [T, nh] → (T, H, head dim).
    pub(crate) fn attention_backward(q: &[usize], out: &[usize], lse: &[usize], dout: &[usize], nh: usize, tokens: usize) -> Result<(usize, usize, usize)> {
        let op = "attention_backward";
        let (t, h, hd) = qkv(op, q, nh, tokens)?;
        if q.len() != 2 {
            return Err(Error::shape(op, format!("qkv {q:?} with {nh} heads over {tokens} tokens")));
        }
        if out != [t, h] || dout != [t, h] || lse != [t, nh] {
            return Err(Error::shape(op, format!("out {out:?}, dout {dout:?}, lse {lse:?} for qkv {q:?} with {nh} heads")));
        }
        Ok((t, h, hd))
    }
}

/// Queries per workgroup (= invocations per workgroup).
pub const BQ: usize = 64;

/// Keys per tile for head dim `hd`: K and V tiles together stay within 16 KiB of workgroup
/// memory (WebGPU's guaranteed minimum).
pub fn key_tile(hd: usize) -> usize {
    (16 * 1024 / (2 * 4 * hd.max(1))).clamp(1, 64)
}

/// The work list: one (seq_start, seq_end, first_query) triple per block of `BQ` queries.
pub fn query_blocks(cu_seqlens: &[u32]) -> Vec<u32> {
    let mut blocks = Vec::new();
    for w in cu_seqlens.windows(2) {
        let mut q0 = w[0];
        while q0 < w[1] {
            blocks.extend_from_slice(&[w[0], w[1], q0]);
            q0 += BQ as u32;
        }
    }
    blocks
}

#[cube(launch_unchecked)]
fn attention_kernel<F: Float>(
    qkv: &[F],
    blocks: &[u32],
    out: &mut [F],
    lse: &mut [F],
    h: usize,
    nh: usize,
    window: usize,
    scale: f32,
    #[comptime] hd: usize,
    #[comptime] bk: usize,
    #[comptime] windowed: bool,
) {
    // Tiles in the storage type; everything computed in f32.
    let mut k_tile = Shared::<[F]>::new_slice(comptime!(bk * hd));
    let mut v_tile = Shared::<[F]>::new_slice(comptime!(bk * hd));
    let mut q = Array::<f32>::new(hd);
    let mut acc = Array::<f32>::new(hd);
    let mut s = Array::<f32>::new(bk);

    let block = CUBE_POS_X as usize;
    let head = CUBE_POS_Y as usize;
    let seq_start = blocks[block * 3] as usize;
    let seq_end = blocks[block * 3 + 1] as usize;
    let q0 = blocks[block * 3 + 2] as usize;
    let r = UNIT_POS as usize;
    let i = q0 + r;
    let valid = i < seq_end;
    let three_h = 3 * h;
    if valid {
        for d in 0..hd {
            q[d] = f32::cast_from(qkv[i * three_h + head * hd + d]);
        }
    }
    let mut m = f32::min_value();
    let mut l = 0.0f32;

    // Keys this block can see: the whole sequence, or ±window around its queries.
    let q_last = min(q0 + BQ, seq_end) - 1;
    let mut k_lo = seq_start;
    let mut k_hi = seq_end;
    if windowed {
        if q0 >= seq_start + window {
            k_lo = q0 - window;
        }
        k_hi = min(seq_end, q_last + window + 1);
    }

    let mut k0 = k_lo;
    while k0 < k_hi {
        // Cooperative load of the K and V tiles (zeros past the end).
        let mut idx = r;
        while idx < comptime!(bk * hd) {
            let j = k0 + idx / hd;
            let d = idx % hd;
            if j < k_hi {
                let base = j * three_h + head * hd + d;
                k_tile[idx] = qkv[base + h];
                v_tile[idx] = qkv[base + 2 * h];
            } else {
                k_tile[idx] = F::new(0.0);
                v_tile[idx] = F::new(0.0);
            }
            idx += BQ;
        }
        sync_cube();

        if valid {
            let n_keys = min(bk, k_hi - k0);
            let mut tile_max = f32::min_value();
            for kr in 0..n_keys {
                let j = k0 + kr;
                let mut dot = 0.0f32;
                for d in 0..hd {
                    dot += q[d] * f32::cast_from(k_tile[kr * hd + d]);
                }
                let mut score = dot * scale;
                if windowed {
                    let dist = if i > j { i - j } else { j - i };
                    score = select(dist <= window, score, f32::min_value());
                }
                s[kr] = score;
                tile_max = max(tile_max, score);
            }
            if tile_max > f32::min_value() {
                let m_new = max(m, tile_max);
                let correction = (m - m_new).exp();
                l *= correction;
                for d in 0..hd {
                    acc[d] *= correction;
                }
                for kr in 0..n_keys {
                    let p = (s[kr] - m_new).exp();
                    l += p;
                    for d in 0..hd {
                        acc[d] += p * f32::cast_from(v_tile[kr * hd + d]);
                    }
                }
                m = m_new;
            }
        }
        sync_cube();
        k0 += bk;
    }

    if valid {
        let inv = 1.0f32 / l;
        for d in 0..hd {
            out[i * h + head * hd + d] = F::cast_from(acc[d] * inv);
        }
        lse[i * nh + head] = F::cast_from(m + l.ln());
    }
}

/// qkv [T, 3H] (RoPE applied), `nh` heads, window Some(w) for |i − j| ≤ w
/// → (out [T, H], lse [T, nh]).
pub fn attention(gpu: &GpuBackend, qkv: &GpuTensor, seqs: &GpuSeqs, nh: usize, window: Option<usize>) -> Result<(GpuTensor, GpuTensor)> {
    let (t, h, _) = shapes::qkv("attention", &qkv.shape, nh, seqs.tokens)?;
    let three_h = 3 * h;
    let hd = h / nh;
    let bk = key_tile(hd);
    let limits = gpu.limits();
    let (qh, ad) = qkv.act("attention")?;
    if 2 * bk * hd * ad.size() > limits.max_shared_bytes || BQ as u32 > limits.max_units_per_cube {
        return Err(Error::limit("attention", format!("head dim {hd} needs more workgroup memory or invocations than the device has")));
    }
    let max_count = limits.max_cube_count as usize;
    if seqs.n_attn_blocks > max_count || nh > max_count {
        return Err(Error::limit("attention", format!("{} query blocks × {nh} heads exceed the device's grid", seqs.n_attn_blocks)));
    }
    let out = gpu.alloc_as("attention", t * h, ad)?;
    let lse = gpu.alloc_as("attention", t * nh, ad)?;
    launch_float!(ad, attention_kernel(
            gpu.client(),
            CubeCount::Static(seqs.n_attn_blocks as u32, nh as u32, 1),
            CubeDim::new_1d(BQ as u32),
            BufferArg::from_raw_parts(qh, t * three_h),
            BufferArg::from_raw_parts(seqs.attn_blocks.clone(), seqs.n_attn_blocks * 3),
            BufferArg::from_raw_parts(out.clone(), t * h),
            BufferArg::from_raw_parts(lse.clone(), t * nh),
            h,
            nh,
            // A window wider than the longest sequence means the same and keeps the u32 maths safe.
            window.map_or(0, |w| w.min(seqs.longest)),
            (hd as f32).powf(-0.5),
            hd,
            bk,
            window.is_some(),
        ));
    Ok((GpuTensor::of(out, vec![t, h], ad), GpuTensor::of(lse, vec![t, nh], ad)))
}

/// δ[t, head] = Σ_d dout[t, head·hd + d] · out[t, head·hd + d], over n = T·nh rows.
#[cube(launch_unchecked)]
fn attention_delta_kernel<F: Float>(out: &[F], dout: &[F], delta: &mut [F], n: usize, hd: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        let base = i * hd;
        let mut acc = 0.0f32;
        for d in 0..hd {
            acc += f32::cast_from(dout[base + d]) * f32::cast_from(out[base + d]);
        }
        delta[i] = F::cast_from(acc);
    }
}

/// dK and dV of one block of `BQ` keys (one per invocation) and one head: walks the query tiles of
/// `bq` rows that see the block, with Q and dO tiles in workgroup memory.
#[cube(launch_unchecked)]
fn attention_dkv_kernel<F: Float>(
    qkv: &[F],
    dout: &[F],
    lse: &[F],
    delta: &[F],
    blocks: &[u32],
    dqkv: &mut [F],
    h: usize,
    nh: usize,
    window: usize,
    scale: f32,
    #[comptime] hd: usize,
    #[comptime] bq: usize,
    #[comptime] windowed: bool,
) {
    let mut q_tile = Shared::<[F]>::new_slice(comptime!(bq * hd));
    let mut do_tile = Shared::<[F]>::new_slice(comptime!(bq * hd));
    let mut k = Array::<f32>::new(hd);
    let mut v = Array::<f32>::new(hd);
    let mut dk = Array::<f32>::new(hd);
    let mut dv = Array::<f32>::new(hd);

    let block = CUBE_POS_X as usize;
    let head = CUBE_POS_Y as usize;
    let seq_start = blocks[block * 3] as usize;
    let seq_end = blocks[block * 3 + 1] as usize;
    let k0 = blocks[block * 3 + 2] as usize;
    let r = UNIT_POS as usize;
    let j = k0 + r;
    let valid = j < seq_end;
    let three_h = 3 * h;
    for d in 0..hd {
        dk[d] = 0.0f32;
        dv[d] = 0.0f32;
        k[d] = 0.0f32;
        v[d] = 0.0f32;
    }
    if valid {
        for d in 0..hd {
            k[d] = f32::cast_from(qkv[j * three_h + h + head * hd + d]);
            v[d] = f32::cast_from(qkv[j * three_h + 2 * h + head * hd + d]);
        }
    }

    // Queries that see this block: the whole sequence, or ±window around its keys.
    let k_last = min(k0 + BQ, seq_end) - 1;
    let mut q_lo = seq_start;
    let mut q_hi = seq_end;
    if windowed {
        if k0 >= seq_start + window {
            q_lo = k0 - window;
        }
        q_hi = min(seq_end, k_last + window + 1);
    }

    let mut q0 = q_lo;
    while q0 < q_hi {
        let mut idx = r;
        while idx < comptime!(bq * hd) {
            let i = q0 + idx / hd;
            let d = idx % hd;
            if i < q_hi {
                q_tile[idx] = qkv[i * three_h + head * hd + d];
                do_tile[idx] = dout[i * h + head * hd + d];
            } else {
                q_tile[idx] = F::new(0.0);
                do_tile[idx] = F::new(0.0);
            }
            idx += BQ;
        }
        sync_cube();

        if valid {
            let n_q = min(bq, q_hi - q0);
            for qr in 0..n_q {
                let i = q0 + qr;
                let mut visible = true;
                if windowed {
                    let dist = max(i, j) - min(i, j);
                    visible = dist <= window;
                }
                if visible {
                    let mut dot = 0.0f32;
                    let mut dp = 0.0f32;
                    for d in 0..hd {
                        dot += f32::cast_from(q_tile[qr * hd + d]) * k[d];
                        dp += f32::cast_from(do_tile[qr * hd + d]) * v[d];
                    }
                    let p = (dot * scale - f32::cast_from(lse[i * nh + head])).exp();
                    let ds = p * (dp - f32::cast_from(delta[i * nh + head])) * scale;
                    for d in 0..hd {
                        dv[d] += p * f32::cast_from(do_tile[qr * hd + d]);
                        dk[d] += ds * f32::cast_from(q_tile[qr * hd + d]);
                    }
                }
            }
        }
        sync_cube();
        q0 += bq;
    }

    if valid {
        for d in 0..hd {
            dqkv[j * three_h + h + head * hd + d] = F::cast_from(dk[d]);
            dqkv[j * three_h + 2 * h + head * hd + d] = F::cast_from(dv[d]);
        }
    }
}

/// dQ of one block of `BQ` queries (one per invocation) and one head: walks the key tiles of `bk`
/// rows it sees, like the forward, with K and V tiles in workgroup memory.
#[cube(launch_unchecked)]
fn attention_dq_kernel<F: Float>(
    qkv: &[F],
    dout: &[F],
    lse: &[F],
    delta: &[F],
    blocks: &[u32],
    dqkv: &mut [F],
    h: usize,
    nh: usize,
    window: usize,
    scale: f32,
    #[comptime] hd: usize,
    #[comptime] bk: usize,
    #[comptime] windowed: bool,
) {
    let mut k_tile = Shared::<[F]>::new_slice(comptime!(bk * hd));
    let mut v_tile = Shared::<[F]>::new_slice(comptime!(bk * hd));
    let mut q = Array::<f32>::new(hd);
    let mut d_o = Array::<f32>::new(hd);
    let mut dq = Array::<f32>::new(hd);

    let block = CUBE_POS_X as usize;
    let head = CUBE_POS_Y as usize;
    let seq_start = blocks[block * 3] as usize;
    let seq_end = blocks[block * 3 + 1] as usize;
    let q0 = blocks[block * 3 + 2] as usize;
    let r = UNIT_POS as usize;
    let i = q0 + r;
    let valid = i < seq_end;
    let three_h = 3 * h;
    let mut row_lse = 0.0f32;
    let mut row_delta = 0.0f32;
    for d in 0..hd {
        q[d] = 0.0f32;
        d_o[d] = 0.0f32;
        dq[d] = 0.0f32;
    }
    if valid {
        for d in 0..hd {
            q[d] = f32::cast_from(qkv[i * three_h + head * hd + d]);
            d_o[d] = f32::cast_from(dout[i * h + head * hd + d]);
        }
        row_lse = f32::cast_from(lse[i * nh + head]);
        row_delta = f32::cast_from(delta[i * nh + head]);
    }

    let q_last = min(q0 + BQ, seq_end) - 1;
    let mut k_lo = seq_start;
    let mut k_hi = seq_end;
    if windowed {
        if q0 >= seq_start + window {
            k_lo = q0 - window;
        }
        k_hi = min(seq_end, q_last + window + 1);
    }

    let mut k0 = k_lo;
    while k0 < k_hi {
        let mut idx = r;
        while idx < comptime!(bk * hd) {
            let j = k0 + idx / hd;
            let d = idx % hd;
            if j < k_hi {
                let base = j * three_h + head * hd + d;
                k_tile[idx] = qkv[base + h];
                v_tile[idx] = qkv[base + 2 * h];
            } else {
                k_tile[idx] = F::new(0.0);
                v_tile[idx] = F::new(0.0);
            }
            idx += BQ;
        }
        sync_cube();

        if valid {
            let n_keys = min(bk, k_hi - k0);
            for kr in 0..n_keys {
                let j = k0 + kr;
                let mut visible = true;
                if windowed {
                    let dist = max(i, j) - min(i, j);
                    visible = dist <= window;
                }
                if visible {
                    let mut dot = 0.0f32;
                    let mut dp = 0.0f32;
                    for d in 0..hd {
                        dot += q[d] * f32::cast_from(k_tile[kr * hd + d]);
                        dp += d_o[d] * f32::cast_from(v_tile[kr * hd + d]);
                    }
                    let p = (dot * scale - row_lse).exp();
                    let ds = p * (dp - row_delta) * scale;
                    for d in 0..hd {
                        dq[d] += ds * f32::cast_from(k_tile[kr * hd + d]);
                    }
                }
            }
        }
        sync_cube();
        k0 += bk;
    }

    if valid {
        for d in 0..hd {
            dqkv[i * three_h + head * hd + d] = F::cast_from(dq[d]);
        }
    }
}

/// Backward of `attention`: qkv [T, 3H] (rotated), out [T, H] and lse [T, nh] from the forward,
/// dout [T, H] → dqkv [T, 3H]. Same `nh` and `window` as the forward.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    gpu: &GpuBackend,
    qkv: &GpuTensor,
    out: &GpuTensor,
    lse: &GpuTensor,
    dout: &GpuTensor,
    seqs: &GpuSeqs,
    nh: usize,
    window: Option<usize>,
) -> Result<GpuTensor> {
    let op = "attention_backward";
    let (t, h, hd) = shape::attention_backward(&qkv.shape, &out.shape, &lse.shape, &dout.shape, nh, seqs.tokens)?;
    let three_h = 3 * h;
    let tile = key_tile(hd);
    let limits = gpu.limits();
    if 2 * tile * hd * 4 > limits.max_shared_bytes || BQ as u32 > limits.max_units_per_cube {
        return Err(Error::limit(op, format!("head dim {hd} needs more workgroup memory or invocations than the device has")));
    }
    let max_count = limits.max_cube_count as usize;
    if seqs.n_attn_blocks > max_count || nh > max_count {
        return Err(Error::limit(op, format!("{} blocks × {nh} heads exceed the device's grid", seqs.n_attn_blocks)));
    }
    let (qkv_h, out_h, lse_h, dout_h) = (qkv.handle(op)?, out.handle(op)?, lse.handle(op)?, dout.handle(op)?);
    let dqkv = gpu.alloc(op, t * three_h)?;
    let delta = gpu.alloc(op, t * nh)?;
    let (count, dim) = gpu.elementwise(op, t * nh, 64)?;
    launch_float!(DType::F32, attention_delta_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(out_h, t * h),
            BufferArg::from_raw_parts(dout_h.clone(), t * h),
            BufferArg::from_raw_parts(delta.clone(), t * nh),
            t * nh,
            hd,
        ));
    let window_arg = window.map_or(0, |w| w.min(seqs.longest));
    let scale = (hd as f32).powf(-0.5);
    let grid = CubeCount::Static(seqs.n_attn_blocks as u32, nh as u32, 1);
    launch_float!(DType::F32, attention_dkv_kernel(
            gpu.client(),
            grid.clone(),
            CubeDim::new_1d(BQ as u32),
            BufferArg::from_raw_parts(qkv_h.clone(), t * three_h),
            BufferArg::from_raw_parts(dout_h.clone(), t * h),
            BufferArg::from_raw_parts(lse_h.clone(), t * nh),
            BufferArg::from_raw_parts(delta.clone(), t * nh),
            BufferArg::from_raw_parts(seqs.attn_blocks.clone(), seqs.n_attn_blocks * 3),
            BufferArg::from_raw_parts(dqkv.clone(), t * three_h),
            h,
            nh,
            window_arg,
            scale,
            hd,
            tile,
            window.is_some(),
        ));
    launch_float!(DType::F32, attention_dq_kernel(
            gpu.client(),
            grid,
            CubeDim::new_1d(BQ as u32),
            BufferArg::from_raw_parts(qkv_h, t * three_h),
            BufferArg::from_raw_parts(dout_h, t * h),
            BufferArg::from_raw_parts(lse_h, t * nh),
            BufferArg::from_raw_parts(delta, t * nh),
            BufferArg::from_raw_parts(seqs.attn_blocks.clone(), seqs.n_attn_blocks * 3),
            BufferArg::from_raw_parts(dqkv.clone(), t * three_h),
            h,
            nh,
            window_arg,
            scale,
            hd,
            tile,
            window.is_some(),
        ));
    Ok(GpuTensor::single(dqkv, vec![t, three_h]))
}
