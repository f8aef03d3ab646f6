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

/// Symmetric int8 quantisation of each row of a [rows, k] matrix, as the CPU backend's int8 mode
/// does it to weight rows (output channels) at load and to activation rows (tokens) per product:
/// scale = max|row| / 127 and q = round-half-to-even(v · (127 / max|row|)) in f32, so q ∈ [−127, 127]
/// and v ≈ q · scale. An all-zero row has scale 0 and q = 0. Returns (q [rows, k], scale [rows]).
pub fn quantize_rows_int8(a: &[f32], k: usize) -> (Vec<i8>, Vec<f32>) {
    assert!(k > 0 && a.len() % k == 0);
    let mut q = vec![0i8; a.len()];
    let mut scales = Vec::with_capacity(a.len() / k);
    for (row, out) in a.chunks(k).zip(q.chunks_mut(k)) {
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        if amax == 0.0 || !amax.is_finite() {
            scales.push(0.0);
            continue;
        }
        let inv = 127.0 / amax;
        for (o, v) in out.iter_mut().zip(row) {
            *o = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        scales.push(amax / 127.0);
    }
    (q, scales)
}

/// The int8 product y = x·Wᵀ (+ b) for x [N, K] and W [M, K]: W quantised per output channel and
/// x per row (`quantize_rows_int8`), the integer dot products summed exactly, then rescaled:
/// y[i, o] = sx[i] · sw[o] · Σ_p qx[i, p] · qw[o, p] (+ b[o]).
pub fn linear_int8(x: &[f32], w: &[f32], b: Option<&[f32]>, k: usize) -> Vec<f32> {
    let (qx, sx) = quantize_rows_int8(x, k);
    let (qw, sw) = quantize_rows_int8(w, k);
    let (n, m) = (sx.len(), sw.len());
    let mut y = vec![0f32; n * m];
    for i in 0..n {
        for o in 0..m {
            let dot: i64 = (0..k).map(|p| qx[i * k + p] as i64 * qw[o * k + p] as i64).sum();
            let mut v = dot as f64 * sx[i] as f64 * sw[o] as f64;
            if let Some(b) = b {
                v += b[o] as f64;
            }
            y[i * m + o] = v as f32;
        }
    }
    y
}
