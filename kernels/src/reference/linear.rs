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
