//! The parity check: run a model on the inputs of a reference file in the schema of
//! `tests/fixtures/reference.safetensors` (made by transformers) and compare every tensor the
//! model can produce, on real (non-pad) tokens only.

use kernels::Backend;

use crate::config::Pooling;
use crate::model::{ModernBert, Trace};
use crate::weights::Checkpoint;
use crate::{Error, Result};

/// One compared tensor.
#[derive(Clone, Debug)]
pub struct CheckRow {
    pub name: String,
    /// Shape of what was compared (real tokens only): [T, X], [B, X] or [1].
    pub shape: Vec<usize>,
    pub max_abs_err: f32,
}

/// The outcome of a check.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    pub rows: Vec<CheckRow>,
    /// Reference tensors not compared, with the reason.
    pub skipped: Vec<(String, String)>,
}

impl CheckReport {
    pub fn max_abs_err(&self) -> f32 {
        self.rows.iter().map(|r| r.max_abs_err).fold(0.0, f32::max)
    }
    /// Human-readable table; the last line is `max_abs_err=<v> compared=<n>`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let w = self.rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(6);
        s.push_str(&format!("{:<w$}  {:<14}  {}\n", "tensor", "shape", "max_abs_err"));
        for r in &self.rows {
            s.push_str(&format!("{:<w$}  {:<14}  {:.3e}\n", r.name, format!("{:?}", r.shape), r.max_abs_err));
        }
        for (name, why) in &self.skipped {
            s.push_str(&format!("skipped {name}: {why}\n"));
        }
        s.push_str(&format!("max_abs_err={:e} compared={}\n", self.max_abs_err(), self.rows.len()));
        s
    }
}

/// Inputs of the reference, unpadded.
struct RefInputs {
    /// Per sequence, the real token ids.
    sequences: Vec<Vec<u32>>,
    /// For every real token (in batch order), its flat index b·S + s in the padded layout.
    flat: Vec<usize>,
    /// Padded sequence length S.
    s: usize,
}

fn ints(reference: &Checkpoint, name: &str) -> Result<(Vec<i64>, Vec<usize>)> {
    let t = reference.require(name)?;
    Ok((t.to_i64()?, t.shape.to_vec()))
}

fn inputs(reference: &Checkpoint) -> Result<RefInputs> {
    let (ids, shape) = ints(reference, "input_ids")?;
    let file = reference.file_of("input_ids").to_string();
    if shape.len() != 2 {
        return Err(Error::weights(&file, format!("tensor \"input_ids\": expected shape [B, S], found {shape:?}")));
    }
    let (b, s) = (shape[0], shape[1]);
    let mask = if reference.contains("attention_mask") {
        let (m, mshape) = ints(reference, "attention_mask")?;
        if mshape != shape {
            return Err(Error::weights(&file, format!("tensor \"attention_mask\" has shape {mshape:?}, expected {shape:?} like input_ids")));
        }
        m
    } else {
        vec![1; b * s]
    };
    let mut sequences = Vec::with_capacity(b);
    let mut flat = Vec::new();
    for row in 0..b {
        let mut seq = Vec::new();
        for col in 0..s {
            let k = row * s + col;
            if mask[k] != 0 {
                let id = u32::try_from(ids[k]).map_err(|_| Error::weights(&file, format!("tensor \"input_ids\": negative id {} at [{row}, {col}]", ids[k])))?;
                seq.push(id);
                flat.push(k);
            }
        }
        if seq.is_empty() {
            return Err(Error::weights(&file, format!("tensor \"attention_mask\": row {row} has no real token")));
        }
        sequences.push(seq);
    }
    Ok(RefInputs { sequences, flat, s })
}

/// Rows of a padded reference [B, S, X] at the real tokens → [T·X]; checks the shape.
fn real_rows(reference: &Checkpoint, name: &str, inp: &RefInputs, x: usize) -> Result<Vec<f32>> {
    let t = reference.require(name)?;
    let expected = [inp.sequences.len(), inp.s, x];
    if t.shape != expected {
        return Err(Error::weights(t.file, format!("tensor \"{name}\" has shape {:?}, expected {expected:?}", t.shape)));
    }
    let v = t.to_f32()?;
    Ok(inp.flat.iter().flat_map(|&k| v[k * x..(k + 1) * x].iter().copied()).collect())
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
}

fn scalar(reference: &Checkpoint, name: &str) -> Result<f32> {
    let t = reference.require(name)?;
    let v = t.to_f32()?;
    v.first().copied().ok_or_else(|| Error::weights(t.file, format!("tensor \"{name}\" is empty")))
}

/// Labelled real positions of a padded label tensor [B, S] (−100 = none): the rows (indices
/// into the T real tokens) and their labels.
fn labelled(reference: &Checkpoint, name: &str, inp: &RefInputs) -> Result<(Vec<u32>, Vec<u32>)> {
    let (labels, _) = ints(reference, name)?;
    let (mut rows, mut out) = (Vec::new(), Vec::new());
    for (row, &k) in inp.flat.iter().enumerate() {
        match labels.get(k) {
            Some(&l) if l >= 0 => {
                rows.push(row as u32);
                out.push(l as u32);
            }
            Some(_) => {}
            None => return Err(Error::weights(reference.file_of(name), format!("tensor \"{name}\" is smaller than input_ids"))),
        }
    }
    Ok((rows, out))
}

/// A scalar loss compared with the reference's.
fn loss_row(reference: &Checkpoint, name: &str, ours: f32) -> Result<CheckRow> {
    Ok(CheckRow { name: name.to_string(), shape: vec![1], max_abs_err: (ours - scalar(reference, name)?).abs() })
}

/// Run the model on the reference inputs and compare.
pub async fn check<B: Backend>(be: &B, model: &ModernBert<B>, reference: &Checkpoint) -> Result<CheckReport> {
    let inp = inputs(reference)?;
    let seqs: Vec<&[u32]> = inp.sequences.iter().map(|s| s.as_slice()).collect();
    let batch = model.batch(be, &seqs)?;
    let mut trace: Trace<B> = Vec::new();
    let hidden = model.encode(be, &batch, Some(&mut trace))?;
    let h = model.config.hidden_size;
    let mut report = CheckReport::default();
    let t_real = inp.flat.len();

    for (name, tensor) in &trace {
        if !reference.contains(name) {
            continue;
        }
        let ours = be.read(tensor).await?;
        let theirs = real_rows(reference, name, &inp, h)?;
        report.rows.push(CheckRow { name: name.clone(), shape: vec![t_real, h], max_abs_err: max_abs(&ours, &theirs) });
    }

    // Masked LM.
    let has_mlm_refs = ["mlm_logits", "mlm_loss"].iter().any(|n| reference.contains(n));
    if model.decoder.is_some() {
        if reference.contains("mlm_logits") {
            let v = model.config.vocab_size;
            let ours = be.read(&model.mlm_logits(be, &hidden)?).await?;
            let theirs = real_rows(reference, "mlm_logits", &inp, v)?;
            report.rows.push(CheckRow { name: "mlm_logits".into(), shape: vec![t_real, v], max_abs_err: max_abs(&ours, &theirs) });
        }
        if reference.contains("mlm_loss") && reference.contains("mlm_labels") {
            let (rows, labels) = labelled(reference, "mlm_labels", &inp)?;
            // Sparse prediction: the head runs on the labelled rows only.
            let logits = model.mlm_logits(be, &be.gather_rows(&hidden, &be.upload_ids(&rows)?)?)?;
            let loss = model.mean_cross_entropy(be, &logits, &labels).await?;
            report.rows.push(loss_row(reference, "mlm_loss", loss)?);
        }
    } else if has_mlm_refs {
        report.skipped.push(("mlm_*".into(), "the model has no masked-LM head".into()));
    }

    // Token and sequence classification.
    let classification_refs = ["tokcls_logits", "tokcls_loss", "seqcls_logits_cls", "seqcls_logits_mean", "seqcls_loss_cls", "seqcls_loss_mean"];
    let c = model.labels.len();
    if model.classifier.is_some() {
        if reference.contains("tokcls_logits") {
            let ours = be.read(&model.token_logits(be, &hidden)?).await?;
            let theirs = real_rows(reference, "tokcls_logits", &inp, c)?;
            report.rows.push(CheckRow { name: "tokcls_logits".into(), shape: vec![t_real, c], max_abs_err: max_abs(&ours, &theirs) });
        }
        if reference.contains("tokcls_loss") && reference.contains("tokcls_labels") {
            let (rows, labels) = labelled(reference, "tokcls_labels", &inp)?;
            let logits = model.token_logits(be, &be.gather_rows(&hidden, &be.upload_ids(&rows)?)?)?;
            let loss = model.mean_cross_entropy(be, &logits, &labels).await?;
            report.rows.push(loss_row(reference, "tokcls_loss", loss)?);
        }
        for (pooling, tag) in [(Pooling::Cls, "cls"), (Pooling::Mean, "mean")] {
            let logits_name = format!("seqcls_logits_{tag}");
            let loss_name = format!("seqcls_loss_{tag}");
            if !reference.contains(&logits_name) && !reference.contains(&loss_name) {
                continue;
            }
            let logits = model.sequence_logits(be, &hidden, &batch, pooling)?;
            if reference.contains(&logits_name) {
                let t = reference.require(&logits_name)?;
                let expected = [inp.sequences.len(), c];
                if t.shape != expected {
                    return Err(Error::weights(t.file, format!("tensor \"{logits_name}\" has shape {:?}, expected {expected:?}", t.shape)));
                }
                let ours = be.read(&logits).await?;
                report.rows.push(CheckRow { name: logits_name, shape: expected.to_vec(), max_abs_err: max_abs(&ours, &t.to_f32()?) });
            }
            if reference.contains(&loss_name) && reference.contains("seqcls_labels") {
                let (labels, _) = ints(reference, "seqcls_labels")?;
                let labels: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
                let loss = model.mean_cross_entropy(be, &logits, &labels).await?;
                report.rows.push(loss_row(reference, &loss_name, loss)?);
            }
        }
    } else if classification_refs.iter().any(|n| reference.contains(n)) {
        report.skipped.push(("tokcls_* / seqcls_*".into(), "the model has no classifier".into()));
    }
    if report.rows.is_empty() {
        return Err(Error::Input(format!("{}: no tensor of the reference file could be compared with this model", reference.file_of("input_ids"))));
    }
    Ok(report)
}
