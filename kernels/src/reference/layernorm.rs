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
