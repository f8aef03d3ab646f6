/// Rotary position embedding on the q and k parts of a fused qkv activation, rotate-half pairing.
///
/// qkv [T, 3H] with feature index `which·H + head·hd + d` (which: 0 q, 1 k, 2 v);
/// positions [T] (restarting at 0 for every sequence); cos, sin [P, hd/2] tables (P > max position).
/// Returns qkv with q and k rotated and v untouched:
/// u'_j = u_j cos a_j − u_{j+hd/2} sin a_j,  u'_{j+hd/2} = u_{j+hd/2} cos a_j + u_j sin a_j.
pub fn rope(qkv: &[f32], positions: &[u32], cos: &[f32], sin: &[f32], nh: usize, hd: usize) -> Vec<f32> {
    let h = nh * hd;
    let half = hd / 2;
    assert_eq!(qkv.len(), positions.len() * 3 * h);
    let mut y = qkv.to_vec();
    for (t, &p) in positions.iter().enumerate() {
        let p = p as usize;
        for which in 0..2 {
            for head in 0..nh {
                let base = t * 3 * h + which * h + head * hd;
                for j in 0..half {
                    let (c, s) = (cos[p * half + j] as f64, sin[p * half + j] as f64);
                    let (a, b) = (qkv[base + j] as f64, qkv[base + j + half] as f64);
                    y[base + j] = (a * c - b * s) as f32;
                    y[base + j + half] = (b * c + a * s) as f32;
                }
            }
        }
    }
    y
}

/// Backward of `rope`: the rotation's transpose (the angle negated) applied to dy [T, 3H];
/// the v block passes through.
pub fn rope_backward(dy: &[f32], positions: &[u32], cos: &[f32], sin: &[f32], nh: usize, hd: usize) -> Vec<f32> {
    let h = nh * hd;
    let half = hd / 2;
    assert_eq!(dy.len(), positions.len() * 3 * h);
    let mut dx = dy.to_vec();
    for (t, &p) in positions.iter().enumerate() {
        let p = p as usize;
        for which in 0..2 {
            for head in 0..nh {
                let base = t * 3 * h + which * h + head * hd;
                for j in 0..half {
                    let (c, s) = (cos[p * half + j] as f64, sin[p * half + j] as f64);
                    let (a, b) = (dy[base + j] as f64, dy[base + j + half] as f64);
                    dx[base + j] = (a * c + b * s) as f32;
                    dx[base + j + half] = (b * c - a * s) as f32;
                }
            }
        }
    }
    dx
}
