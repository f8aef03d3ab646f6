/// Bidirectional multi-head attention over an unpadded batch, with an optional sliding window.
///
/// qkv [T, 3H] (q, k, v blocks of H, head-major inside each), cu_seqlens [B+1];
/// `window = Some(w)`: key j is visible from query i iff |i − j| ≤ w (ModernBERT's local layers,
/// w = local_attention / 2); `None`: every key of the same sequence is visible.
/// Returns (out [T, H], lse [T, nh]) where lse is the natural-log sum of exp of the scaled scores
/// over the visible keys (the row statistic a backward pass needs).
///
/// Written the obvious way: all scores of a row, then max, exp, sum, weighted sum of v.
pub fn attention(
    qkv: &[f32],
    cu_seqlens: &[u32],
    nh: usize,
    hd: usize,
    window: Option<usize>,
) -> (Vec<f32>, Vec<f32>) {
    let h = nh * hd;
    let t_total = *cu_seqlens.last().unwrap() as usize;
    assert_eq!(qkv.len(), t_total * 3 * h);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0f32; t_total * h];
    let mut lse = vec![0f32; t_total * nh];
    let at = |t: usize, which: usize, head: usize, d: usize| qkv[t * 3 * h + which * h + head * hd + d] as f64;
    for seq in cu_seqlens.windows(2) {
        let (start, end) = (seq[0] as usize, seq[1] as usize);
        for head in 0..nh {
            for i in start..end {
                let visible: Vec<usize> =
                    (start..end).filter(|&j| window.is_none_or(|w| i.abs_diff(j) <= w)).collect();
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| (0..hd).map(|d| at(i, 0, head, d) * at(j, 1, head, d)).sum::<f64>() * scale)
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = weights.iter().sum();
                for d in 0..hd {
                    let o: f64 = visible.iter().zip(&weights).map(|(&j, w)| w * at(j, 2, head, d)).sum();
                    out[i * h + head * hd + d] = (o / sum) as f32;
                }
                lse[i * nh + head] = (max + sum.ln()) as f32;
            }
        }
    }
    (out, lse)
}

/// Backward of `attention`: qkv [T, 3H] (the rotated q and k, and v), dout [T, H] → dqkv [T, 3H].
///
/// Per row, with P the softmax of the scaled scores over the visible keys:
/// dv_j = Σ_i P_ij do_i, dP_ij = do_i · v_j, dS_ij = P_ij (dP_ij − Σ_k P_ik dP_ik),
/// dq_i = scale Σ_j dS_ij k_j, dk_j = scale Σ_i dS_ij q_i. (Σ_k P_ik dP_ik = do_i · o_i.)
pub fn attention_backward(
    qkv: &[f32],
    cu_seqlens: &[u32],
    nh: usize,
    hd: usize,
    window: Option<usize>,
    dout: &[f32],
) -> Vec<f32> {
    let h = nh * hd;
    let t_total = *cu_seqlens.last().unwrap() as usize;
    assert_eq!(qkv.len(), t_total * 3 * h);
    assert_eq!(dout.len(), t_total * h);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut grad = vec![0f64; t_total * 3 * h];
    let at = |t: usize, which: usize, head: usize, d: usize| qkv[t * 3 * h + which * h + head * hd + d] as f64;
    let idx = |t: usize, which: usize, head: usize, d: usize| t * 3 * h + which * h + head * hd + d;
    for seq in cu_seqlens.windows(2) {
        let (start, end) = (seq[0] as usize, seq[1] as usize);
        for head in 0..nh {
            for i in start..end {
                let visible: Vec<usize> =
                    (start..end).filter(|&j| window.is_none_or(|w| i.abs_diff(j) <= w)).collect();
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| (0..hd).map(|d| at(i, 0, head, d) * at(j, 1, head, d)).sum::<f64>() * scale)
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|v| v / sum).collect();
                let dp: Vec<f64> =
                    visible.iter().map(|&j| (0..hd).map(|d| dout[i * h + head * hd + d] as f64 * at(j, 2, head, d)).sum()).collect();
                let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for (n, &j) in visible.iter().enumerate() {
                    let ds = p[n] * (dp[n] - delta);
                    for d in 0..hd {
                        grad[idx(j, 2, head, d)] += p[n] * dout[i * h + head * hd + d] as f64;
                        grad[idx(i, 0, head, d)] += scale * ds * at(j, 1, head, d);
                        grad[idx(j, 1, head, d)] += scale * ds * at(i, 0, head, d);
                    }
                }
            }
        }
    }
    grad.into_iter().map(|v| v as f32).collect()
}
