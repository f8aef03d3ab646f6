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
