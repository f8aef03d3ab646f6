/// Embedding gather: y[t] = table[ids[t]].
///
/// table [V, H], ids [T] → y [T, H]. Panics on an id ≥ V (the runtime validates ids first).
pub fn embedding(table: &[f32], ids: &[u32], h: usize) -> Vec<f32> {
    let v = table.len() / h;
    let mut y = Vec::with_capacity(ids.len() * h);
    for &id in ids {
        let id = id as usize;
        assert!(id < v, "token id {id} outside the {v}-row table");
        y.extend_from_slice(&table[id * h..(id + 1) * h]);
    }
    y
}

/// Backward of `embedding`: scatter-add. ids [T], dy [T, H] → dtable [V, H] (rows of ids that do
/// not occur are zero).
pub fn embedding_backward(ids: &[u32], dy: &[f32], v: usize, h: usize) -> Vec<f32> {
    assert_eq!(dy.len(), ids.len() * h);
    let mut acc = vec![0f64; v * h];
    for (t, &id) in ids.iter().enumerate() {
        for j in 0..h {
            acc[id as usize * h + j] += dy[t * h + j] as f64;
        }
    }
    acc.into_iter().map(|x| x as f32).collect()
}
