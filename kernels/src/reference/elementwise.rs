/// Exact (erf) GELU: z · ½ · (1 + erf(z / √2)), in f64.
pub fn gelu_scalar(z: f64) -> f64 {
    0.5 * z * (1.0 + libm::erf(z / std::f64::consts::SQRT_2))
}

/// Exact GELU of every element. x [N] → y [N].
pub fn gelu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| gelu_scalar(v as f64) as f32).collect()
}

/// GeGLU: the first half of each row goes through GELU, the second half is the gate.
///
/// u [N, 2I] → y [N, I], y[n, j] = GELU(u[n, j]) · u[n, I + j].
pub fn geglu(u: &[f32], i: usize) -> Vec<f32> {
    assert_eq!(u.len() % (2 * i), 0);
    let mut y = Vec::with_capacity(u.len() / 2);
    for row in u.chunks(2 * i) {
        for j in 0..i {
            y.push((gelu_scalar(row[j] as f64) * row[i + j] as f64) as f32);
        }
    }
    y
}

/// Element-wise sum. a [N], b [N] → y [N].
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}
