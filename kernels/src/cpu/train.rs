//! The CPU backend's training ops: GEMMs in the two layouts a backward pass needs (the `gemm`
//! crate, strided views, no transposed copies), a flash-style attention backward that recomputes
//! the probabilities from the saved log-sum-exp one (sequence, head) per task, and the optimizer
//! steps. Reductions run in a fixed order, so results are deterministic for a given thread count.

use rayon::prelude::*;

use crate::optim::{AdamStep, Rule};

/// dst [m, n] = a · b with a given as (pointer, column stride, row stride) of an [m, k] view and
/// b of a [k, n] view.
///
/// # Safety
/// The views must lie inside their buffers.
unsafe fn gemm_view(m: usize, n: usize, k: usize, dst: &mut [f32], a: (*const f32, isize, isize), b: (*const f32, isize, isize)) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(0.0);
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k > 1 << 16 { ::gemm::Parallelism::Rayon(threads) } else { ::gemm::Parallelism::None };
    ::gemm::gemm(m, n, k, dst.as_mut_ptr(), 1, n as isize, false, a.0, a.1, a.2, b.0, b.1, b.2, 0.0, 1.0, false, false, false, par);
}

/// y [n, m] = x [n, k] · wᵀ (w [m, k]): the packed AVX-512 microkernels when the machine has
/// them (w packed on the fly: O(m·k) against the product's O(n·m·k)), else the `gemm` crate.
pub fn matmul_nt(x: &[f32], w: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    assert!(x.len() == n * k && w.len() == m * k);
    let mut y = vec![0f32; n * m];
    if super::gemm::packed_f32_available() && n > 0 && m > 0 && k > 0 {
        let p = super::gemm::Packed::f32(w, m, k);
        super::gemm::matmul(x, n, &p, &mut y, m);
    } else {
        // SAFETY: x is [n, k] row-major; wᵀ viewed as [k, m]: element (p, o) = w[o·k + p].
        unsafe { gemm_view(n, m, k, &mut y, (x.as_ptr(), 1, k as isize), (w.as_ptr(), k as isize, 1)) };
    }
    y
}

/// `matmul_nt` with bf16 operands (f32 accumulation) when `bf16`: mixed-precision training keeps
/// f32 master weights and rounds both operands where they enter the product (twice the f32 rate
/// with AVX512-BF16; rounded and multiplied in f32 elsewhere, the same numbers up to summation
/// order).
pub fn matmul_nt_as(x: &[f32], w: &[f32], n: usize, k: usize, m: usize, bf16: bool) -> Vec<f32> {
    if !bf16 {
        return matmul_nt(x, w, n, k, m);
    }
    if super::isa::Isa::get().avx512_bf16 && n > 0 && m > 0 && k > 0 {
        let mut y = vec![0f32; n * m];
        super::gemm::matmul(x, n, &super::gemm::Packed::bf16(w, m, k), &mut y, m);
        return y;
    }
    let round = |v: &[f32]| -> Vec<f32> { v.iter().map(|&a| half::bf16::from_f32(a).to_f32()).collect() };
    matmul_nt(&round(x), &round(w), n, k, m)
}

/// aᵀ: a [rows, cols] → [cols, rows], in cache-sized blocks.
pub fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 32;
    let mut t = vec![0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return t;
    }
    t.par_chunks_mut(rows * B).enumerate().for_each(|(cb, out)| {
        let c0 = cb * B;
        let cn = B.min(cols - c0);
        for r0 in (0..rows).step_by(B) {
            for c in 0..cn {
                for r in r0..(r0 + B).min(rows) {
                    out[c * rows + r] = a[r * cols + c0 + c];
                }
            }
        }
    });
    t
}

/// a [n, k] · b [k, m] → [n, m] (operands rounded to bf16 when `bf16`).
pub fn matmul(a: &[f32], b: &[f32], n: usize, k: usize, m: usize, bf16: bool) -> Vec<f32> {
    assert!(a.len() == n * k && b.len() == k * m);
    if super::gemm::packed_f32_available() || bf16 {
        return matmul_nt_as(a, &transpose(b, k, m), n, k, m, bf16);
    }
    let mut y = vec![0f32; n * m];
    // SAFETY: a is [n, k] row-major (column stride 1, row stride k), b is [k, m] row-major.
    unsafe { gemm_view(n, m, k, &mut y, (a.as_ptr(), 1, k as isize), (b.as_ptr(), 1, m as isize)) };
    y
}

/// aᵀ · b: a [n, m], b [n, k] → [m, k] (operands rounded to bf16 when `bf16`).
pub fn matmul_tn(a: &[f32], b: &[f32], n: usize, m: usize, k: usize, bf16: bool) -> Vec<f32> {
    assert!(a.len() == n * m && b.len() == n * k);
    if super::gemm::packed_f32_available() || bf16 {
        return matmul_nt_as(&transpose(a, n, m), &transpose(b, n, k), m, n, k, bf16);
    }
    let mut y = vec![0f32; m * k];
    // SAFETY: aᵀ viewed as [m, n]: element (i, j) = a[j·m + i] (column stride m, row stride 1);
    // b is [n, k] row-major.
    unsafe { gemm_view(m, k, n, &mut y, (a.as_ptr(), m as isize, 1), (b.as_ptr(), 1, k as isize)) };
    y
}

/// Column sums of x [n, c] → [c], in f64 per column block of rows, blocks added in order.
pub fn sum_rows(x: &[f32], c: usize) -> Vec<f32> {
    if c == 0 {
        return Vec::new();
    }
    const ROWS: usize = 256;
    let partial: Vec<Vec<f64>> = x
        .par_chunks(c * ROWS)
        .map(|block| {
            let mut acc = vec![0f64; c];
            for row in block.chunks(c) {
                acc.iter_mut().zip(row).for_each(|(a, v)| *a += *v as f64);
            }
            acc
        })
        .collect();
    let mut total = vec![0f64; c];
    for p in partial {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total.into_iter().map(|v| v as f32).collect()
}

/// Σ x² in f64, blocks added in order.
pub fn sum_squares(x: &[f32]) -> f64 {
    x.par_chunks(1 << 14).map(|b| b.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>()).collect::<Vec<_>>().into_iter().sum()
}

/// LayerNorm backward: x [n, h], w [h], dy [n, h] → (dx [n, h], dw [h]).
pub fn layer_norm_backward(x: &[f32], w: &[f32], dy: &[f32], eps: f32, h: usize) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f32; x.len()];
    // dy ⊙ x̂ per row, summed over rows for dw.
    let mut dyx = vec![0f32; x.len()];
    dx.par_chunks_mut(h)
        .zip(dyx.par_chunks_mut(h))
        .zip(x.par_chunks(h).zip(dy.par_chunks(h)))
        .for_each(|((dxr, dyxr), (xr, dyr))| {
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
            let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
            let r = (1.0 / (var + eps as f64).sqrt()) as f32;
            let mean = mean as f32;
            let (mut sum_g, mut sum_gx) = (0f32, 0f32);
            for j in 0..h {
                let xhat = (xr[j] - mean) * r;
                let g = dyr[j] * w[j];
                sum_g += g;
                sum_gx += g * xhat;
                dyxr[j] = dyr[j] * xhat;
            }
            let (mean_g, mean_gx) = (sum_g / h as f32, sum_gx / h as f32);
            for j in 0..h {
                let xhat = (xr[j] - mean) * r;
                dxr[j] = r * (dyr[j] * w[j] - mean_g - xhat * mean_gx);
            }
        });
    (dx, sum_rows(&dyx, h))
}

/// Attention backward over qkv [t, 3h] (rotated), out [t, h], lse [t, nh], dout [t, h] →
/// dqkv [t, 3h]. One task per (sequence, head), flash-attention-2 style over 64 × 64 tiles: the
/// probabilities of a tile are recomputed from lse, the five products of a tile are GEMMs, and
/// local layers visit only the key tiles that meet the window.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(qkv: &[f32], out: &[f32], lse: &[f32], dout: &[f32], cu: &[u32], nh: usize, hd: usize, window: Option<usize>) -> Vec<f32> {
    const BT: usize = 64;
    let h = nh * hd;
    let t = *cu.last().unwrap() as usize;
    let scale = 1.0 / (hd as f32).sqrt();
    let tasks: Vec<(usize, usize, usize)> = cu.windows(2).flat_map(|w| (0..nh).map(move |head| (w[0] as usize, w[1] as usize, head))).collect();
    // Each task returns (dq, dk, dv) for its rows, [len, hd] each.
    let results: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = tasks
        .par_iter()
        .map(|&(start, end, head)| {
            let len = end - start;
            // This head's rows of a matrix, [len, hd].
            let rows = |src: &[f32], stride: usize, offset: usize| -> Vec<f32> {
                let mut m = Vec::with_capacity(len * hd);
                for r in start..end {
                    m.extend_from_slice(&src[r * stride + offset + head * hd..][..hd]);
                }
                m
            };
            let q = rows(qkv, 3 * h, 0);
            let k = rows(qkv, 3 * h, h);
            let v = rows(qkv, 3 * h, 2 * h);
            let o = rows(out, h, 0);
            let d_o = rows(dout, h, 0);
            let l: Vec<f32> = (start..end).map(|r| lse[r * nh + head]).collect();
            let delta: Vec<f32> = (0..len).map(|i| o[i * hd..(i + 1) * hd].iter().zip(&d_o[i * hd..(i + 1) * hd]).map(|(a, b)| a * b).sum()).collect();
            let (mut dq, mut dk, mut dv) = (vec![0f32; len * hd], vec![0f32; len * hd], vec![0f32; len * hd]);
            for q0 in (0..len).step_by(BT) {
                let bq = BT.min(len - q0);
                let (k_lo, k_hi) = match window {
                    Some(w) => (q0.saturating_sub(w) / BT * BT, (q0 + bq + w).min(len)),
                    None => (0, len),
                };
                let qb = &q[q0 * hd..(q0 + bq) * hd];
                let dob = &d_o[q0 * hd..(q0 + bq) * hd];
                let (qbt, dobt) = (transpose(qb, bq, hd), transpose(dob, bq, hd));
                for k0 in (k_lo..k_hi).step_by(BT) {
                    let bk = BT.min(len - k0);
                    let kb = &k[k0 * hd..(k0 + bk) * hd];
                    let vb = &v[k0 * hd..(k0 + bk) * hd];
                    let s = matmul_nt(qb, kb, bq, hd, bk); // [bq, bk]
                    let dp = matmul_nt(dob, vb, bq, hd, bk); // [bq, bk]
                    let mut p = s;
                    let mut ds = dp;
                    for i in 0..bq {
                        for j in 0..bk {
                            let (qi, kj) = (q0 + i, k0 + j);
                            let visible = window.is_none_or(|w| qi.abs_diff(kj) <= w);
                            let e = if visible { (p[i * bk + j] * scale - l[qi]).exp() } else { 0.0 };
                            p[i * bk + j] = e;
                            ds[i * bk + j] = e * (ds[i * bk + j] - delta[qi]) * scale;
                        }
                    }
                    let (pt, dst) = (transpose(&p, bq, bk), transpose(&ds, bq, bk));
                    let add = |acc: &mut [f32], x: Vec<f32>| acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
                    add(&mut dv[k0 * hd..(k0 + bk) * hd], matmul_nt(&pt, &dobt, bk, bq, hd)); // Pᵀ·dO
                    add(&mut dk[k0 * hd..(k0 + bk) * hd], matmul_nt(&dst, &qbt, bk, bq, hd)); // dSᵀ·Q
                    add(&mut dq[q0 * hd..(q0 + bq) * hd], matmul_nt(&ds, &transpose(kb, bk, hd), bq, bk, hd)); // dS·K
                }
            }
            (dq, dk, dv)
        })
        .collect();
    let mut dqkv = vec![0f32; t * 3 * h];
    for (&(start, end, head), (dq, dk, dv)) in tasks.iter().zip(results) {
        for i in 0..end - start {
            let row = &mut dqkv[(start + i) * 3 * h..(start + i + 1) * 3 * h];
            row[head * hd..][..hd].copy_from_slice(&dq[i * hd..(i + 1) * hd]);
            row[h + head * hd..][..hd].copy_from_slice(&dk[i * hd..(i + 1) * hd]);
            row[2 * h + head * hd..][..hd].copy_from_slice(&dv[i * hd..(i + 1) * hd]);
        }
    }
    dqkv
}

/// One AdamW / StableAdamW step in f32 (formulas in `crate::optim`); returns StableAdamW's RMS.
pub fn adam_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) -> f32 {
    let t = s.step as i32;
    let (b1, b2, eps) = (s.beta1, s.beta2, s.eps as f32);
    const CHUNK: usize = 1 << 14;
    match s.rule {
        Rule::AdamW => {
            let keep = (1.0 - s.lr * s.weight_decay) as f32;
            let step_size = (s.lr / (1.0 - b1.powi(t))) as f32;
            let c2_sqrt = (1.0 - b2.powi(t)).sqrt() as f32;
            let (b1, b2) = (b1 as f32, b2 as f32);
            p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK))).for_each(|((p, g), (m, v))| {
                for n in 0..p.len() {
                    p[n] *= keep;
                    m[n] += (g[n] - m[n]) * (1.0 - b1);
                    v[n] = b2 * v[n] + (1.0 - b2) * g[n] * g[n];
                    p[n] -= step_size * m[n] / (v[n].sqrt() / c2_sqrt + eps);
                }
            });
            0.0
        }
        Rule::StableAdamW { max_lr } => {
            let b1t = ((b1.powi(t) - b1) / (b1.powi(t) - 1.0)) as f32;
            let b2t = ((b2.powi(t) - b2) / (b2.powi(t) - 1.0)) as f32;
            let partial: Vec<f64> = g
                .par_chunks(CHUNK)
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .map(|(g, (m, v))| {
                    let mut acc = 0f64;
                    for n in 0..g.len() {
                        m[n] += (g[n] - m[n]) * (1.0 - b1t);
                        v[n] = b2t * v[n] + (1.0 - b2t) * g[n] * g[n];
                        acc += (g[n] * g[n] / v[n].max(eps * eps)) as f64;
                    }
                    acc
                })
                .collect();
            let rms = if g.is_empty() { 0.0 } else { (partial.into_iter().sum::<f64>() / g.len() as f64).sqrt() };
            let eta = s.lr / rms.max(1.0);
            let keep = (1.0 - eta / max_lr * s.weight_decay) as f32;
            let eta = eta as f32;
            p.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK))).for_each(|(p, (m, v))| {
                for n in 0..p.len() {
                    p[n] = p[n] * keep - eta * m[n] / (v[n].sqrt() + eps);
                }
            });
            rms as f32
        }
    }
}
