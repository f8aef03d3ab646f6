//! Masked-LM corruption: a rate per step, 80% `[MASK]` / 10% random token / 10% unchanged,
//! never a special token; positions chosen uniformly, or weighted by a salience per token id
//! (Clinical ModernBERT's "token-aware masking": clinically salient tokens are chosen more often).

use std::collections::HashMap;

use runtime::init::Rng;

use crate::{Error, Result};

/// The token ids masking needs to know.
#[derive(Clone, Debug)]
pub struct MaskTokens {
    pub mask: u32,
    /// Never chosen: `[CLS]`, `[SEP]`, `[PAD]`, `[MASK]`, `[UNK]`, …
    pub specials: Vec<u32>,
    /// Random replacements are drawn from 0..vocab, specials excluded.
    pub vocab: u32,
}

/// A corrupted batch: the ids to feed the model, and the labelled positions with their
/// original tokens.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Masked {
    /// Per sequence, the corrupted ids.
    pub sequences: Vec<Vec<u32>>,
    /// Rows into the unpadded batch (all sequences end to end) and their original ids.
    pub rows: Vec<u32>,
    pub labels: Vec<u32>,
}

/// How positions are chosen.
#[derive(Clone, Debug, Default)]
pub enum Selection {
    /// Every eligible position equally likely.
    #[default]
    Uniform,
    /// Position weight = `weights[id]` (1 for ids not listed): salient ids are chosen more often.
    Salience(HashMap<u32, f64>),
}

impl Selection {
    /// Weights from token ids, each `weight` times as likely as an ordinary token.
    pub fn from_ids(ids: impl IntoIterator<Item = u32>, weight: f64) -> Result<Self> {
        if !(weight > 0.0 && weight.is_finite()) {
            return Err(Error::Input(format!("salience weight {weight}: expected a positive number")));
        }
        Ok(Selection::Salience(ids.into_iter().map(|id| (id, weight)).collect()))
    }
    fn weight(&self, id: u32) -> f64 {
        match self {
            Selection::Uniform => 1.0,
            Selection::Salience(w) => w.get(&id).copied().unwrap_or(1.0),
        }
    }
}

/// Corrupt each sequence: exactly max(1, round(rate · eligible)) of its non-special positions
/// are chosen (without replacement; weighted by salience if given), then each is replaced by
/// `[MASK]` (80%), a random non-special token (10%) or left as is (10%). A sequence with no
/// eligible position contributes no label.
pub fn mask_batch(sequences: &[Vec<u32>], rate: f64, tokens: &MaskTokens, selection: &Selection, rng: &mut Rng) -> Result<Masked> {
    if !(0.0..=1.0).contains(&rate) || rate.is_nan() {
        return Err(Error::Input(format!("masking rate {rate}: expected a value in [0, 1]")));
    }
    let mut out = Masked::default();
    let mut offset = 0u32;
    for seq in sequences {
        let mut ids = seq.clone();
        let eligible: Vec<usize> = (0..seq.len()).filter(|&i| !tokens.specials.contains(&seq[i])).collect();
        if !eligible.is_empty() && rate > 0.0 {
            let k = ((rate * eligible.len() as f64).round() as usize).clamp(1, eligible.len());
            // Weighted sampling without replacement (Efraimidis–Spirakis): the k largest keys
            // u^(1/w); with equal weights this is a uniform choice.
            let mut keyed: Vec<(f64, usize)> = eligible
                .iter()
                .map(|&i| {
                    let u = rng.uniform().max(f64::MIN_POSITIVE);
                    (u.powf(1.0 / selection.weight(seq[i])), i)
                })
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut chosen: Vec<usize> = keyed[..k].iter().map(|&(_, i)| i).collect();
            chosen.sort_unstable();
            for i in chosen {
                out.rows.push(offset + i as u32);
                out.labels.push(seq[i]);
                let r = rng.uniform();
                if r < 0.8 {
                    ids[i] = tokens.mask;
                } else if r < 0.9 {
                    ids[i] = random_token(tokens, rng);
                }
            }
        }
        offset += seq.len() as u32;
        out.sequences.push(ids);
    }
    Ok(out)
}

fn random_token(tokens: &MaskTokens, rng: &mut Rng) -> u32 {
    loop {
        let id = (rng.next_u64() % tokens.vocab as u64) as u32;
        if !tokens.specials.contains(&id) {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> MaskTokens {
        MaskTokens { mask: 4, specials: vec![0, 1, 2, 3, 4], vocab: 1000 }
    }

    #[test]
    fn rate_kinds_and_specials() {
        let seqs: Vec<Vec<u32>> = (0..200).map(|s| std::iter::once(1).chain((0..98).map(|i| 10 + (s * 98 + i) % 900)).chain([2]).collect()).collect();
        let mut rng = Rng::new(7);
        let m = mask_batch(&seqs, 0.3, &tokens(), &Selection::Uniform, &mut rng).unwrap();
        // 98 eligible per sequence → round(29.4) = 29 each; never [CLS] (row 0) or [SEP] (row 99).
        assert_eq!(m.labels.len(), 200 * 29);
        let flat_orig: Vec<u32> = seqs.concat();
        let flat_new: Vec<u32> = m.sequences.concat();
        let (mut masked, mut random, mut kept) = (0, 0, 0);
        for (&row, &label) in m.rows.iter().zip(&m.labels) {
            let r = row as usize;
            assert_eq!(flat_orig[r], label);
            assert!(r % 100 != 0 && r % 100 != 99, "a special token was chosen");
            match flat_new[r] {
                4 => masked += 1,
                x if x == label => kept += 1,
                x => {
                    assert!(x >= 5, "random replacement {x} is a special token");
                    random += 1
                }
            }
        }
        let n = m.labels.len() as f64;
        assert!((masked as f64 / n - 0.8).abs() < 0.03, "{masked}");
        assert!((random as f64 / n - 0.1).abs() < 0.02, "{random}");
        assert!((kept as f64 / n - 0.1).abs() < 0.02, "{kept}");
        // Unlabelled positions are untouched.
        let labelled: std::collections::HashSet<u32> = m.rows.iter().copied().collect();
        for r in 0..flat_orig.len() {
            if !labelled.contains(&(r as u32)) {
                assert_eq!(flat_orig[r], flat_new[r]);
            }
        }
    }

    #[test]
    fn salience_prefers_listed_tokens() {
        // Half the tokens are "salient" (id 500) at weight 20: they should take most picks.
        let seq: Vec<u32> = std::iter::once(1).chain((0..100).map(|i| if i % 2 == 0 { 500 } else { 600 + i })).chain([2]).collect();
        let sel = Selection::from_ids([500], 20.0).unwrap();
        let mut rng = Rng::new(3);
        let mut salient = 0;
        let mut total = 0;
        for _ in 0..50 {
            let m = mask_batch(std::slice::from_ref(&seq), 0.15, &tokens(), &sel, &mut rng).unwrap();
            salient += m.labels.iter().filter(|&&l| l == 500).count();
            total += m.labels.len();
        }
        assert!(salient as f64 / total as f64 > 0.85, "{salient} of {total}");
        let mut rng = Rng::new(3);
        let uni: usize = (0..50).map(|_| mask_batch(std::slice::from_ref(&seq), 0.15, &tokens(), &Selection::Uniform, &mut rng).unwrap().labels.iter().filter(|&&l| l == 500).count()).sum();
        assert!((uni as f64 / total as f64 - 0.5).abs() < 0.1, "{uni}");
    }

    #[test]
    fn bad_rate_and_empty_sequences() {
        let mut rng = Rng::new(1);
        assert!(mask_batch(&[vec![1, 2]], 1.5, &tokens(), &Selection::Uniform, &mut rng).is_err());
        let m = mask_batch(&[vec![1, 2], vec![1, 50, 2]], 0.3, &tokens(), &Selection::Uniform, &mut rng).unwrap();
        assert_eq!(m.rows, vec![3]); // only the second sequence's one eligible token
    }
}
