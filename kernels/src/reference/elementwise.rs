/// Exact (erf) GELU: z · ½ · (1 + erf(z / √2)), in f64.
pub fn gelu_scalar(z: f64) -> f64 {
    0.5 * z * (1.0 + libm::erf(z / std::f64::consts::SQRT_2))
}

/// Exact GELU of every element. x [N] → y [N].
pub fn gelu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| gelu_scalar(v as f64) as f32).collect()
}

/// tanh of every element (BERT's pooler). x [N] → y [N].
pub fn tanh(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| (v as f64).tanh() as f32).collect()
}

/// Backward of `tanh` from its output: y [N] = tanh(x), dy [N] → dx [N] = dy · (1 − y²).
pub fn tanh_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(y.len(), dy.len());
    y.iter().zip(dy).map(|(&t, &d)| (d as f64 * (1.0 - t as f64 * t as f64)) as f32).collect()
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

/// d GELU(z) / dz = Φ(z) + z·φ(z), in f64.
pub fn gelu_grad_scalar(z: f64) -> f64 {
    let cdf = 0.5 * (1.0 + libm::erf(z / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    cdf + z * pdf
}

/// Backward of `gelu`: x [N], dy [N] → dx [N] = dy · GELU′(x).
pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len());
    x.iter().zip(dy).map(|(&z, &d)| (d as f64 * gelu_grad_scalar(z as f64)) as f32).collect()
}

/// Backward of `geglu`: u [N, 2I], dy [N, I] → du [N, 2I] with
/// du[n, j] = dy[n, j] · u[n, I + j] · GELU′(u[n, j]) and du[n, I + j] = dy[n, j] · GELU(u[n, j]).
pub fn geglu_backward(u: &[f32], dy: &[f32], i: usize) -> Vec<f32> {
    assert_eq!(u.len(), 2 * dy.len());
    let mut du = vec![0f32; u.len()];
    for ((row, drow), out) in u.chunks(2 * i).zip(dy.chunks(i)).zip(du.chunks_mut(2 * i)) {
        for j in 0..i {
            let (a, gate, d) = (row[j] as f64, row[i + j] as f64, drow[j] as f64);
            out[j] = (d * gate * gelu_grad_scalar(a)) as f32;
            out[i + j] = (d * gelu_scalar(a)) as f32;
        }
    }
    du
}
