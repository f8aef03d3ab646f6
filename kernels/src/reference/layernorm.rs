/// LayerNorm over the last axis: y = (x − μ) / sqrt(σ² + ε) ⊙ w (+ b), biased variance.
///
/// x [N, H], w [H], b [H] or none → y [N, H].
pub fn layer_norm(x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, h: usize) -> Vec<f32> {
    assert_eq!(w.len(), h);
    assert_eq!(x.len() % h, 0);
    let mut y = vec![0f32; x.len()];
    for (row, out) in x.chunks(h).zip(y.chunks_mut(h)) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for j in 0..h {
            let mut v = (row[j] as f64 - mean) * rstd * w[j] as f64;
            if let Some(b) = b {
                v += b[j] as f64;
            }
            out[j] = v as f32;
        }
    }
    y
}

/// Residual add fused with the next LayerNorm: s = x + y, then LayerNorm(s).
///
/// x [N, H], y [N, H], w [H], b [H] or none → (s [N, H], LayerNorm(s) [N, H]).
pub fn add_layer_norm(x: &[f32], y: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, h: usize) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), y.len());
    let s: Vec<f32> = x.iter().zip(y).map(|(a, b)| a + b).collect();
    let n = layer_norm(&s, w, b, eps, h);
    (s, n)
}

/// Backward of `layer_norm` (the bias does not enter it). With x̂ = (x − μ)·r, r = 1/sqrt(σ² + ε)
/// and g = dy ⊙ w: dx = r·(g − mean(g) − x̂·mean(g ⊙ x̂)), dw = Σ_rows dy ⊙ x̂, db = Σ_rows dy.
///
/// x [N, H], w [H], dy [N, H] → (dx [N, H], dw [H], db [H]).
pub fn layer_norm_backward(x: &[f32], w: &[f32], dy: &[f32], eps: f32, h: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(w.len(), h);
    assert_eq!(x.len(), dy.len());
    let mut dx = vec![0f32; x.len()];
    let mut dw = vec![0f64; h];
    let mut db = vec![0f64; h];
    for ((row, drow), out) in x.chunks(h).zip(dy.chunks(h)).zip(dx.chunks_mut(h)) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
        let r = 1.0 / (var + eps as f64).sqrt();
        let xhat: Vec<f64> = row.iter().map(|&v| (v as f64 - mean) * r).collect();
        let g: Vec<f64> = (0..h).map(|j| drow[j] as f64 * w[j] as f64).collect();
        let mean_g = g.iter().sum::<f64>() / h as f64;
        let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / h as f64;
        for j in 0..h {
            out[j] = (r * (g[j] - mean_g - xhat[j] * mean_gx)) as f32;
            dw[j] += drow[j] as f64 * xhat[j];
            db[j] += drow[j] as f64;
        }
    }
    (dx, dw.into_iter().map(|v| v as f32).collect(), db.into_iter().map(|v| v as f32).collect())
}
