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

/// Embedding sum: y[t] = x[t] + table[ids[t]] (BERT adds its token-type and position tables to
/// the word embeddings this way). x [T, H], table [R, H], ids [T] → y [T, H]. The backward is the
/// identity for x and `embedding_backward(ids, dy, R)` for the table.
pub fn embedding_add(x: &[f32], table: &[f32], ids: &[u32], h: usize) -> Vec<f32> {
    assert_eq!(x.len(), ids.len() * h);
    x.iter().zip(embedding(table, ids, h)).map(|(a, b)| a + b).collect()
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
