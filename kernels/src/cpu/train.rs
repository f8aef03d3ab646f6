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

/// a [n, k] · b [k, m] → [n, m].
pub fn matmul(a: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    assert!(a.len() == n * k && b.len() == k * m);
    let mut y = vec![0f32; n * m];
    // SAFETY: a is [n, k] row-major (column stride 1, row stride k), b is [k, m] row-major.
    unsafe { gemm_view(n, m, k, &mut y, (a.as_ptr(), 1, k as isize), (b.as_ptr(), 1, m as isize)) };
    y
}

/// aᵀ · b: a [n, m], b [n, k] → [m, k].
pub fn matmul_tn(a: &[f32], b: &[f32], n: usize, m: usize, k: usize) -> Vec<f32> {
    assert!(a.len() == n * m && b.len() == n * k);
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
/// dqkv [t, 3h]. One task per (sequence, head); within it, each query row recomputes its
/// probabilities over the visible keys from lse.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(qkv: &[f32], out: &[f32], lse: &[f32], dout: &[f32], cu: &[u32], nh: usize, hd: usize, window: Option<usize>) -> Vec<f32> {
    let h = nh * hd;
    let t = *cu.last().unwrap() as usize;
    let scale = 1.0 / (hd as f32).sqrt();
    let tasks: Vec<(usize, usize, usize)> = cu.windows(2).flat_map(|w| (0..nh).map(move |head| (w[0] as usize, w[1] as usize, head))).collect();
    // Each task returns (dq, dk, dv) for its rows [len, hd] each.
    let results: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = tasks
        .par_iter()
        .map(|&(start, end, head)| {
            let len = end - start;
            let q = |i: usize| &qkv[(start + i) * 3 * h + head * hd..][..hd];
            let k = |j: usize| &qkv[(start + j) * 3 * h + h + head * hd..][..hd];
            let v = |j: usize| &qkv[(start + j) * 3 * h + 2 * h + head * hd..][..hd];
            let o = |i: usize| &out[(start + i) * h + head * hd..][..hd];
            let d_o = |i: usize| &dout[(start + i) * h + head * hd..][..hd];
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
            let (mut dq, mut dk, mut dv) = (vec![0f32; len * hd], vec![0f32; len * hd], vec![0f32; len * hd]);
            for i in 0..len {
                let (lo, hi) = match window {
                    Some(w) => (i.saturating_sub(w), (i + w + 1).min(len)),
                    None => (0, len),
                };
                let l = lse[(start + i) * nh + head];
                let delta = dot(d_o(i), o(i));
                let dqi = &mut dq[i * hd..(i + 1) * hd];
                for j in lo..hi {
                    let p = (dot(q(i), k(j)) * scale - l).exp();
                    let ds = p * (dot(d_o(i), v(j)) - delta) * scale;
                    dqi.iter_mut().zip(k(j)).for_each(|(a, b)| *a += ds * b);
                    dk[j * hd..(j + 1) * hd].iter_mut().zip(q(i)).for_each(|(a, b)| *a += ds * b);
                    dv[j * hd..(j + 1) * hd].iter_mut().zip(d_o(i)).for_each(|(a, b)| *a += p * b);
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
