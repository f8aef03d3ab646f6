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
