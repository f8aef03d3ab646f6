/// PyTorch `nn.Linear`: y = x·Wᵀ (+ b).
///
/// x [N, K], w [M, K] (row-major, out × in), b [M] or none → y [N, M].
pub fn linear(x: &[f32], w: &[f32], b: Option<&[f32]>, k: usize) -> Vec<f32> {
    assert_eq!(x.len() % k, 0);
    assert_eq!(w.len() % k, 0);
    let n = x.len() / k;
    let m = w.len() / k;
    let mut y = vec![0f32; n * m];
    for i in 0..n {
        for o in 0..m {
            let mut acc = 0f64;
            for p in 0..k {
                acc += x[i * k + p] as f64 * w[o * k + p] as f64;
            }
            if let Some(b) = b {
                acc += b[o] as f64;
            }
            y[i * m + o] = acc as f32;
        }
    }
    y
}

/// Backward of `linear`: given x [N, K], w [M, K] and dy [N, M] = ∂L/∂y,
/// returns (dx [N, K] = dy·W, dw [M, K] = dyᵀ·x, db [M] = Σ_rows dy).
pub fn linear_backward(x: &[f32], w: &[f32], dy: &[f32], k: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = x.len() / k;
    let m = w.len() / k;
    assert_eq!(dy.len(), n * m);
    let mut dx = vec![0f32; n * k];
    for i in 0..n {
        for p in 0..k {
            dx[i * k + p] = (0..m).map(|o| dy[i * m + o] as f64 * w[o * k + p] as f64).sum::<f64>() as f32;
        }
    }
    let mut dw = vec![0f32; m * k];
    for o in 0..m {
        for p in 0..k {
            dw[o * k + p] = (0..n).map(|i| dy[i * m + o] as f64 * x[i * k + p] as f64).sum::<f64>() as f32;
        }
    }
    let db = (0..m).map(|o| (0..n).map(|i| dy[i * m + o] as f64).sum::<f64>() as f32).collect();
    (dx, dw, db)
}
