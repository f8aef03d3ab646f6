/// Mean over the tokens of each sequence. x [T, H], cu_seqlens [B+1] → y [B, H].
pub fn mean_pool(x: &[f32], cu_seqlens: &[u32], h: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity((cu_seqlens.len() - 1) * h);
    for seq in cu_seqlens.windows(2) {
        let (start, end) = (seq[0] as usize, seq[1] as usize);
        for j in 0..h {
            let s: f64 = (start..end).map(|t| x[t * h + j] as f64).sum();
            y.push((s / (end - start) as f64) as f32);
        }
    }
    y
}

/// Row gather: y[r] = x[rows[r]]. x [N, H], rows [R] → y [R, H]. (CLS pooling takes the row
/// `cu_seqlens[b]` of every sequence; sparse prediction takes the labelled rows.)
pub fn gather_rows(x: &[f32], rows: &[u32], h: usize) -> Vec<f32> {
    rows.iter().flat_map(|&r| x[r as usize * h..(r as usize + 1) * h].iter().copied()).collect()
}

/// Backward of `mean_pool`: dy [B, H] → dx [T, H], every row of sequence b gets dy[b] / len(b).
pub fn mean_pool_backward(dy: &[f32], cu_seqlens: &[u32], h: usize) -> Vec<f32> {
    let t = *cu_seqlens.last().unwrap() as usize;
    let mut dx = vec![0f32; t * h];
    for (b, seq) in cu_seqlens.windows(2).enumerate() {
        let (start, end) = (seq[0] as usize, seq[1] as usize);
        for r in start..end {
            for j in 0..h {
                dx[r * h + j] = (dy[b * h + j] as f64 / (end - start) as f64) as f32;
            }
        }
    }
    dx
}

/// Backward of `gather_rows` (rows distinct): dy [R, H] → dx [N, H], dx[rows[r]] = dy[r], zero
/// elsewhere.
pub fn scatter_rows(dy: &[f32], rows: &[u32], n: usize, h: usize) -> Vec<f32> {
    let mut dx = vec![0f32; n * h];
    for (r, &row) in rows.iter().enumerate() {
        dx[row as usize * h..(row as usize + 1) * h].copy_from_slice(&dy[r * h..(r + 1) * h]);
    }
    dx
}
