/// Cross-entropy of each row against its label: loss[n] = logsumexp(logits[n]) − logits[n, label[n]].
///
/// logits [N, C], labels [N] → loss [N]. Rows whose label is `ignore` get 0.
pub fn cross_entropy(logits: &[f32], labels: &[i64], c: usize, ignore: i64) -> Vec<f32> {
    assert_eq!(logits.len(), labels.len() * c);
    logits
        .chunks(c)
        .zip(labels)
        .map(|(row, &label)| {
            if label == ignore {
                return 0.0;
            }
            let max = row.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            (lse - row[label as usize] as f64) as f32
        })
        .collect()
}

/// Backward of `cross_entropy` with every row's loss weighted by `scale` (1/N for a mean over N
/// labelled rows): dlogits[n] = scale · (softmax(logits[n]) − onehot(label[n])); zero on ignored
/// rows. logits [N, C], labels [N] → dlogits [N, C].
pub fn cross_entropy_backward(logits: &[f32], labels: &[i64], c: usize, ignore: i64, scale: f32) -> Vec<f32> {
    assert_eq!(logits.len(), labels.len() * c);
    let mut d = vec![0f32; logits.len()];
    for ((row, &label), out) in logits.chunks(c).zip(labels).zip(d.chunks_mut(c)) {
        if label == ignore {
            continue;
        }
        let max = row.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        for j in 0..c {
            let p = (row[j] as f64 - max).exp() / sum;
            let onehot = if j as i64 == label { 1.0 } else { 0.0 };
            out[j] = (scale as f64 * (p - onehot)) as f32;
        }
    }
    d
}

/// Rank of each row's label among its logits: how many classes score strictly higher (0 = the
/// label is the top-1 prediction; ties count in the label's favour). logits [N, C], labels [N] → [N].
pub fn label_rank(logits: &[f32], labels: &[u32], c: usize) -> Vec<u32> {
    assert_eq!(logits.len(), labels.len() * c);
    logits.chunks(c.max(1)).zip(labels).map(|(row, &l)| row.iter().filter(|&&v| v > row[l as usize]).count() as u32).collect()
}
