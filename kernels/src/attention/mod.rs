//! Attention forward, flash style, over unpadded variable-length batches.
//!
//! One workgroup handles one block of `BQ` consecutive queries of one sequence and one head; each
//! invocation owns one query row. The workgroup walks the key tiles of `bk` rows that intersect
//! the block's visible range, loading K and V tiles into workgroup memory, and keeps for each
//! row a running max `m`, running sum `l` and an unnormalised output (online softmax). A local
//! layer (|i − j| ≤ w) visits only the tiles within ±w of its block, so its cost is
//! O(S · window); nothing of size S × S ever exists. The per-row log-sum-exp is written out for
//! the backward pass.

use cubecl::prelude::*;

use crate::backend::DType;
use crate::gpu::{launch_float, GpuBackend, GpuSeqs, GpuTensor};
use crate::{Error, Result};

#[cfg(test)]
mod tests;

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
    let (t, three_h) = qkv.matrix();
    let h = three_h / 3;
    if three_h % 3 != 0 || nh == 0 || h % nh != 0 || t != seqs.tokens {
        return Err(Error::shape("attention", format!("qkv {:?} with {nh} heads over {} tokens", qkv.shape, seqs.tokens)));
    }
    let hd = h / nh;
    let bk = key_tile(hd);
    let limits = gpu.limits();
    if 2 * bk * hd * gpu.dtype.size() > limits.max_shared_bytes || BQ as u32 > limits.max_units_per_cube {
        return Err(Error::limit("attention", format!("head dim {hd} needs more workgroup memory or invocations than the device has")));
    }
    let max_count = limits.max_cube_count as usize;
    if seqs.n_attn_blocks > max_count || nh > max_count {
        return Err(Error::limit("attention", format!("{} query blocks × {nh} heads exceed the device's grid", seqs.n_attn_blocks)));
    }
    let out = gpu.alloc("attention", t * h)?;
    let lse = gpu.alloc("attention", t * nh)?;
    launch_float!(DType::F32, attention_kernel(
            gpu.client(),
            CubeCount::Static(seqs.n_attn_blocks as u32, nh as u32, 1),
            CubeDim::new_1d(BQ as u32),
            BufferArg::from_raw_parts(qkv.handle("attention")?, t * three_h),
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
    Ok((GpuTensor::single(out, vec![t, h]), GpuTensor::single(lse, vec![t, nh])))
}
