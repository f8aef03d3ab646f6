//! Flash-style attention on the CPU: per (sequence, head), query blocks of `BQ` rows walk the key
//! blocks of `BK` rows that intersect their window, keeping a running max and sum per row
//! (online softmax). No score matrix larger than BQ × BK ever exists, and a local layer touches
//! only the key blocks within ±window of its query block: O(S · window) work.
//!
//! With AVX-512 both products (Q·Kᵀ and P·V) run on the GEMM microkernels: K is packed into
//! panels of 32 keys, V into panels of 32 head dimensions, once per (sequence, head).

use rayon::prelude::*;

use super::gemm::{tile_bf16_acc_dispatch, tile_bf16_dispatch, tile_f32_acc_dispatch, tile_f32_dispatch, Packed, MR, NR};
use super::isa::Isa;
use super::math;

const BQ: usize = 64;
const BK: usize = 256;

/// Query rows per block on the microkernel path (four tiles).
const BQ_FAST: usize = 4 * MR;
/// Keys per block on the microkernel path (four panels).
const BK_FAST: usize = 8 * NR;

/// qkv [T, 3H], cu_seqlens [B+1] → (out [T, H], lse [T, nh]). With `bf16`, both products take
/// their inputs rounded to bf16 (accumulating in f32), at twice the f32 rate.
pub fn forward(qkv: &[f32], cu_seqlens: &[u32], nh: usize, hd: usize, window: Option<usize>, bf16: bool) -> (Vec<f32>, Vec<f32>) {
    let h = nh * hd;
    let t = *cu_seqlens.last().unwrap() as usize;
    let scale = 1.0 / (hd as f32).sqrt();
    let jobs: Vec<(usize, usize, usize)> = cu_seqlens
        .windows(2)
        .flat_map(|w| (0..nh).map(move |head| (w[0] as usize, w[1] as usize, head)))
        .collect();
    // Each job returns its sequence's output [S, hd] and lse [S] for one head.
    let results: Vec<(Vec<f32>, Vec<f32>)> = jobs
        .par_iter()
        .map(|&(start, end, head)| {
            let s = end - start;
            let gather = |which: usize| -> Vec<f32> {
                let mut m = Vec::with_capacity(s * hd);
                for tok in start..end {
                    let base = tok * 3 * h + which * h + head * hd;
                    m.extend_from_slice(&qkv[base..base + hd]);
                }
                m
            };
            let (q, k, v) = (gather(0), gather(1), gather(2));
            let isa = Isa::get();
            if bf16 && isa.avx512_bf16 {
                head_forward_bf16(q, &k, &v, s, hd, scale, window)
            } else if isa.avx512 {
                head_forward_panels(q, &k, &v, s, hd, scale, window)
            } else {
                head_forward(&q, &k, &v, s, hd, scale, window)
            }
        })
        .collect();
    let mut out = vec![0f32; t * h];
    let mut lse = vec![0f32; t * nh];
    for (&(start, end, head), (o, l)) in jobs.iter().zip(results) {
        for i in 0..end - start {
            out[(start + i) * h + head * hd..][..hd].copy_from_slice(&o[i * hd..(i + 1) * hd]);
            lse[(start + i) * nh + head] = l[i];
        }
    }
    (out, lse)
}

/// One head of one sequence: q, k, v [S, hd] → (o [S, hd], lse [S]). Both products of a block
/// (S = Q·Kᵀ and O += P·V) run on the `gemm` crate, which has AVX2/FMA and WebAssembly SIMD128
/// microkernels: this is the path of machines without AVX-512 and of the browser.
fn head_forward(q: &[f32], k: &[f32], v: &[f32], s: usize, hd: usize, scale: f32, window: Option<usize>) -> (Vec<f32>, Vec<f32>) {
    let mut o = vec![0f32; s * hd];
    let mut lse = vec![0f32; s];
    let mut scores = vec![0f32; BQ * BK];
    for q0 in (0..s).step_by(BQ) {
        let q1 = (q0 + BQ).min(s);
        let nq = q1 - q0;
        let (k_lo, k_hi) = match window {
            Some(w) => (q0.saturating_sub(w), (q1 - 1 + w + 1).min(s)),
            None => (0, s),
        };
        let mut m = [f32::NEG_INFINITY; BQ];
        let mut l = [0f32; BQ];
        let acc = &mut o[q0 * hd..q1 * hd];
        let mut k0 = k_lo;
        while k0 < k_hi {
            let k1 = (k0 + BK).min(k_hi);
            let nk = k1 - k0;
            // scores[r, jj] = scale · q[q0 + r] · k[k0 + jj], row stride BK.
            // SAFETY: dst [nq, nk] (row stride BK) lies in `scores` (nq ≤ BQ, nk ≤ BK); lhs
            // [nq, hd] is q's rows q0..q1; rhs = Kᵀ [hd, nk] with element (d, jj) at
            // k[(k0 + jj)·hd + d], rows k0..k1 of k.
            unsafe {
                ::gemm::gemm(
                    nq, nk, hd,
                    scores.as_mut_ptr(), 1, BK as isize, false,
                    q[q0 * hd..].as_ptr(), 1, hd as isize,
                    k[k0 * hd..].as_ptr(), hd as isize, 1,
                    0.0, scale, false, false, false, ::gemm::Parallelism::None,
                );
            }
            for r in 0..nq {
                let i = q0 + r;
                let row = &mut scores[r * BK..r * BK + nk];
                if let Some(w) = window {
                    for (jj, sc) in row.iter_mut().enumerate() {
                        if i.abs_diff(k0 + jj) > w {
                            *sc = f32::NEG_INFINITY;
                        }
                    }
                }
                let block_max = math::max(row);
                if block_max == f32::NEG_INFINITY {
                    row.fill(0.0); // no visible key in this block for this row: P = 0
                    continue;
                }
                let m_new = m[r].max(block_max);
                let correction = (m[r] - m_new).exp();
                acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= correction);
                l[r] = l[r] * correction + math::exp_shifted_sum(row, m_new);
                m[r] = m_new;
            }
            // acc[r] += Σ_jj P[r, jj] · v[k0 + jj].
            // SAFETY: dst [nq, hd] is `acc`; lhs P [nq, nk] (row stride BK) lies in `scores`;
            // rhs [nk, hd] is v's rows k0..k1.
            unsafe {
                ::gemm::gemm(
                    nq, hd, nk,
                    acc.as_mut_ptr(), 1, hd as isize, true,
                    scores.as_ptr(), 1, BK as isize,
                    v[k0 * hd..].as_ptr(), 1, hd as isize,
                    1.0, 1.0, false, false, false, ::gemm::Parallelism::None,
                );
            }
            k0 = k1;
        }
        for r in 0..nq {
            let inv = 1.0 / l[r];
            acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= inv);
            lse[q0 + r] = m[r] + l[r].ln();
        }
    }
    (o, lse)
}

/// One head of one sequence on the GEMM microkernels: q, k, v [S, hd] → (o [S, hd], lse [S]).
fn head_forward_panels(mut q: Vec<f32>, k: &[f32], v: &[f32], s: usize, hd: usize, scale: f32, window: Option<usize>) -> (Vec<f32>, Vec<f32>) {
    q.iter_mut().for_each(|x| *x *= scale);
    // K as panels of 32 keys: panel p, dim d, lane j = K[32p + j, d].
    let kp = Packed::f32(k, s, hd);
    let Packed::F32 { data: kp, .. } = kp else { unreachable!() };
    // V as panels of 32 dims: panel p, key j, lane d = V[j, 32p + d].
    let vpanels = hd.div_ceil(NR);
    let mut vp = vec![0f32; vpanels * s * NR];
    for p in 0..vpanels {
        let dims = NR.min(hd - p * NR);
        for j in 0..s {
            vp[(p * s + j) * NR..(p * s + j) * NR + dims].copy_from_slice(&v[j * hd + p * NR..j * hd + p * NR + dims]);
        }
    }
    let mut o = vec![0f32; s * hd];
    let mut lse = vec![0f32; s];
    let mut scores = vec![0f32; BQ_FAST * BK_FAST];
    for q0 in (0..s).step_by(BQ_FAST) {
        let q1 = (q0 + BQ_FAST).min(s);
        let rows = q1 - q0;
        let (k_lo, k_hi) = match window {
            Some(w) => (q0.saturating_sub(w), (q1 - 1 + w + 1).min(s)),
            None => (0, s),
        };
        let mut m = [f32::NEG_INFINITY; BQ_FAST];
        let mut l = [0f32; BQ_FAST];
        // Key blocks start on panel boundaries; keys outside the range are masked.
        let mut k0 = k_lo / NR * NR;
        while k0 < k_hi {
            let k1 = (k0 + BK_FAST).min(k_hi);
            let nk = k1 - k0;
            // scores[r, c] = q[q0 + r] · K[k0 + c]
            for (pi, p) in (k0 / NR..k1.div_ceil(NR)).enumerate() {
                let cols = NR.min(k1 - p * NR);
                let mut r = 0;
                while r < rows {
                    let tile = MR.min(rows - r);
                    unsafe {
                        tile_f32_dispatch(tile, hd, q.as_ptr().add((q0 + r) * hd), hd, kp.as_ptr().add(p * hd * NR), scores.as_mut_ptr().add(r * BK_FAST + pi * NR), BK_FAST, cols);
                    }
                    r += tile;
                }
            }
            softmax_block(&mut scores, &mut o, &mut m, &mut l, (q0, rows), (k0, k1), (k_lo, k_hi), window, hd);
            // o[q0 + r] += P[r, :nk] · V[k0..k1]
            for p in 0..vpanels {
                let dims = NR.min(hd - p * NR);
                let mut r = 0;
                while r < rows {
                    let tile = MR.min(rows - r);
                    unsafe {
                        tile_f32_acc_dispatch(tile, nk, scores.as_ptr().add(r * BK_FAST), BK_FAST, vp.as_ptr().add((p * s + k0) * NR), o.as_mut_ptr().add((q0 + r) * hd + p * NR), hd, dims);
                    }
                    r += tile;
                }
            }
            k0 = k1;
        }
        for r in 0..rows {
            let inv = 1.0 / l[r];
            o[(q0 + r) * hd..(q0 + r + 1) * hd].iter_mut().for_each(|x| *x *= inv);
            lse[q0 + r] = m[r] + l[r].ln();
        }
    }
    (o, lse)
}

/// The online-softmax update for one block of scores [rows, k1 − k0] (row stride BK_FAST): mask
/// keys outside [k_lo, k_hi) and the window, replace the scores by exp(s − m_new) (the P of this
/// block), and rescale each row's running sum `l` and output `o` to the new running max `m`.
#[allow(clippy::too_many_arguments)]
fn softmax_block(
    scores: &mut [f32],
    o: &mut [f32],
    m: &mut [f32; BQ_FAST],
    l: &mut [f32; BQ_FAST],
    (q0, rows): (usize, usize),
    (k0, k1): (usize, usize),
    (k_lo, k_hi): (usize, usize),
    window: Option<usize>,
    hd: usize,
) {
    let nk = k1 - k0;
    for r in 0..rows {
        let i = q0 + r;
        let (lo, hi) = match window {
            Some(w) => (i.saturating_sub(w).max(k_lo).max(k0), (i + w + 1).min(k_hi).min(k1)),
            None => (k_lo.max(k0), k_hi.min(k1)),
        };
        let row = &mut scores[r * BK_FAST..r * BK_FAST + nk];
        if lo >= hi {
            row.fill(0.0);
            continue;
        }
        row[..lo - k0].fill(f32::NEG_INFINITY);
        row[hi - k0..].fill(f32::NEG_INFINITY);
        let block_max = math::max(&row[lo - k0..hi - k0]);
        let m_new = m[r].max(block_max);
        let correction = (m[r] - m_new).exp();
        let sum = math::exp_shifted_sum(row, m_new);
        l[r] = l[r] * correction + sum;
        m[r] = m_new;
        if correction != 1.0 {
            o[i * hd..(i + 1) * hd].iter_mut().for_each(|x| *x *= correction);
        }
    }
}

/// Rows of f32 values as bf16 pairs (u16 pairs, the count padded to even with zeros).
fn to_bf16_pairs(src: &[f32], rows: usize, cols: usize, ld_src: usize, dst: &mut [u16], ld_dst: usize) {
    let padded = cols.div_ceil(2) * 2;
    for r in 0..rows {
        let d = &mut dst[r * ld_dst..r * ld_dst + padded];
        math::to_bf16(&src[r * ld_src..r * ld_src + cols], d);
        d[cols..].fill(0);
    }
}

/// One head of one sequence with bf16 products: q, k, v [S, hd] → (o [S, hd], lse [S]).
fn head_forward_bf16(mut q: Vec<f32>, k: &[f32], v: &[f32], s: usize, hd: usize, scale: f32, window: Option<usize>) -> (Vec<f32>, Vec<f32>) {
    q.iter_mut().for_each(|x| *x *= scale);
    let hdp = hd.div_ceil(2) * 2;
    let mut qb = vec![0u16; s * hdp];
    to_bf16_pairs(&q, s, hd, hd, &mut qb, hdp);
    // K as bf16 pair panels over the head dimension: panel p, pair t, lane j.
    let Packed::Bf16 { data: kp, .. } = Packed::bf16(k, s, hd) else { unreachable!() };
    let dpairs = hdp / 2;
    // V as bf16 pair panels over keys: panel p (32 dims), key pair t, lane d, half h = V[2t + h, 32p + d].
    let vpanels = hd.div_ceil(NR);
    let kpairs = s.div_ceil(2);
    let mut vp = vec![0u16; vpanels * kpairs * NR * 2];
    let mut vb = vec![0u16; s * hd];
    math::to_bf16(v, &mut vb);
    for p in 0..vpanels {
        for j in 0..s {
            for d in 0..NR.min(hd - p * NR) {
                vp[((p * kpairs + j / 2) * NR + d) * 2 + j % 2] = vb[j * hd + p * NR + d];
            }
        }
    }
    let mut o = vec![0f32; s * hd];
    let mut lse = vec![0f32; s];
    let mut scores = vec![0f32; BQ_FAST * BK_FAST];
    let mut pb = vec![0u16; BQ_FAST * BK_FAST];
    for q0 in (0..s).step_by(BQ_FAST) {
        let q1 = (q0 + BQ_FAST).min(s);
        let rows = q1 - q0;
        let (k_lo, k_hi) = match window {
            Some(w) => (q0.saturating_sub(w), (q1 - 1 + w + 1).min(s)),
            None => (0, s),
        };
        let mut m = [f32::NEG_INFINITY; BQ_FAST];
        let mut l = [0f32; BQ_FAST];
        let mut k0 = k_lo / NR * NR;
        while k0 < k_hi {
            let k1 = (k0 + BK_FAST).min(k_hi);
            let nk = k1 - k0;
            for (pi, p) in (k0 / NR..k1.div_ceil(NR)).enumerate() {
                let cols = NR.min(k1 - p * NR);
                let mut r = 0;
                while r < rows {
                    let tile = MR.min(rows - r);
                    unsafe {
                        tile_bf16_dispatch(tile, dpairs, qb.as_ptr().add((q0 + r) * hdp) as *const u32, dpairs, kp.as_ptr().add(p * dpairs * NR * 2), scores.as_mut_ptr().add(r * BK_FAST + pi * NR), BK_FAST, cols);
                    }
                    r += tile;
                }
            }
            softmax_block(&mut scores, &mut o, &mut m, &mut l, (q0, rows), (k0, k1), (k_lo, k_hi), window, hd);
            // P to bf16 pairs (k0 is even, so key pairs line up with V's).
            let nkp = nk.div_ceil(2) * 2;
            to_bf16_pairs(&scores, rows, nk, BK_FAST, &mut pb, BK_FAST);
            for p in 0..vpanels {
                let dims = NR.min(hd - p * NR);
                let mut r = 0;
                while r < rows {
                    let tile = MR.min(rows - r);
                    unsafe {
                        tile_bf16_acc_dispatch(tile, nkp / 2, pb.as_ptr().add(r * BK_FAST) as *const u32, BK_FAST / 2, vp.as_ptr().add((p * kpairs + k0 / 2) * NR * 2), o.as_mut_ptr().add((q0 + r) * hd + p * NR), hd, dims);
                    }
                    r += tile;
                }
            }
            k0 = k1;
        }
        for r in 0..rows {
            let inv = 1.0 / l[r];
            o[(q0 + r) * hd..(q0 + r + 1) * hd].iter_mut().for_each(|x| *x *= inv);
            lse[q0 + r] = m[r] + l[r].ln();
        }
    }
    (o, lse)
}
