//! The parity check: run a model on the inputs of a reference file in the schema of
//! `tests/fixtures/reference.safetensors` (made by transformers) and compare every tensor the
//! model can produce, on real (non-pad) tokens only.

use kernels::tolerance::{measure, Report, Row as CheckRow};
use kernels::Backend;

use crate::config::{LayerType, ModelConfig, Pooling};
use crate::model::{mean_cross_entropy, Batch, Bert, Encoder, Model, ModernBert, Tape};
use crate::weights::{Checkpoint, Overlay};
use crate::{Error, Result};

/// The outcome of a check (`kernels::tolerance::Report`, judged as a whole by a `Parity`).
pub type CheckReport = Report;

/// Inputs of the reference, unpadded.
struct RefInputs {
    /// Per sequence, the real token ids.
    sequences: Vec<Vec<u32>>,
    /// Per sequence, the token types of the real tokens (all 0 without `token_type_ids`).
    types: Vec<Vec<u32>>,
    /// For every real token (in batch order), its flat index b·S + s in the padded layout.
    flat: Vec<usize>,
    /// Padded sequence length S.
    s: usize,
}

fn ints(reference: &Checkpoint, name: &str) -> Result<(Vec<i64>, Vec<usize>)> {
    let t = reference.require(name)?;
    Ok((t.to_i64()?, t.shape.to_vec()))
}

/// The inputs `{prefix}input_ids`, `{prefix}attention_mask` and `{prefix}token_type_ids`
/// (the last two optional).
fn inputs(reference: &Checkpoint, prefix: &str) -> Result<RefInputs> {
    let ids_name = format!("{prefix}input_ids");
    let (ids, shape) = ints(reference, &ids_name)?;
    let file = reference.file_of(&ids_name).to_string();
    if shape.len() != 2 {
        return Err(Error::weights(&file, format!("tensor \"{ids_name}\": expected shape [B, S], found {shape:?}")));
    }
    let (b, s) = (shape[0], shape[1]);
    let like_ids = |name: &str, default: i64| -> Result<Vec<i64>> {
        if !reference.contains(name) {
            return Ok(vec![default; b * s]);
        }
        let (m, mshape) = ints(reference, name)?;
        if mshape != shape {
            return Err(Error::weights(&file, format!("tensor \"{name}\" has shape {mshape:?}, expected {shape:?} like {ids_name}")));
        }
        Ok(m)
    };
    let mask = like_ids(&format!("{prefix}attention_mask"), 1)?;
    let token_types = like_ids(&format!("{prefix}token_type_ids"), 0)?;
    let mut sequences = Vec::with_capacity(b);
    let mut types = Vec::with_capacity(b);
    let mut flat = Vec::new();
    for row in 0..b {
        let (mut seq, mut ty) = (Vec::new(), Vec::new());
        for col in 0..s {
            let k = row * s + col;
            if mask[k] != 0 {
                let id = u32::try_from(ids[k]).map_err(|_| Error::weights(&file, format!("tensor \"{ids_name}\": negative id {} at [{row}, {col}]", ids[k])))?;
                let t = u32::try_from(token_types[k])
                    .map_err(|_| Error::weights(&file, format!("tensor \"{prefix}token_type_ids\": negative type {} at [{row}, {col}]", token_types[k])))?;
                seq.push(id);
                ty.push(t);
                flat.push(k);
            }
        }
        if seq.is_empty() {
            return Err(Error::weights(&file, format!("tensor \"{prefix}attention_mask\": row {row} has no real token")));
        }
        sequences.push(seq);
        types.push(ty);
    }
    Ok(RefInputs { sequences, types, flat, s })
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

/// A scalar loss compared with the reference's (a NaN on either side is an infinite error).
fn loss_row(reference: &Checkpoint, name: &str, ours: f32) -> Result<CheckRow> {
    Ok(CheckRow::new(name, vec![1], &[ours], &[scalar(reference, name)?]))
}

/// Why a reference tensor was not compared.
fn skip_reason(name: &str) -> &'static str {
    let name = name.strip_prefix("pair.").unwrap_or(name);
    if name.starts_with("bert.pooler.") {
        "weights (the pooler the reference used), not outputs"
    } else if name == "pooler_output" {
        "the model has no pooler"
    } else if name.starts_with("grad.") || name.starts_with("adamw.") {
        "gradients and optimizer steps belong to training"
    } else if name.starts_with("allowed_") {
        "attention masks are not materialised (the kernels apply the window rule)"
    } else if name.starts_with("mlm_") {
        "the model has no masked-LM head"
    } else if name.starts_with("tokcls_") || name.starts_with("seqcls_") {
        "the model has no classifier, or the reference's labels are missing"
    } else {
        "not produced by this model"
    }
}

/// Inputs and labels are not outputs.
fn is_input(name: &str) -> bool {
    let name = name.strip_prefix("pair.").unwrap_or(name);
    matches!(name, "input_ids" | "attention_mask" | "original_input_ids" | "token_type_ids") || name.ends_with("_labels")
}

/// transformers' sequence-classification loss: MSE when there is one label (regression), binary
/// cross-entropy for `multi_label_classification`, else cross-entropy ignoring labels of −100.
async fn sequence_loss<B: Backend>(be: &B, problem: Option<&str>, c: usize, reference: &Checkpoint, logits: &B::Tensor, b: usize) -> Result<f32> {
    let t = reference.require("seqcls_labels")?;
    if c == 1 || problem == Some("regression") || problem == Some("multi_label_classification") {
        let targets = match t.dtype {
            crate::weights::StoredDtype::F32 | crate::weights::StoredDtype::F16 | crate::weights::StoredDtype::BF16 => t.to_f32()?,
            _ => t.to_i64()?.iter().map(|&v| v as f32).collect(),
        };
        let ours = be.read(logits).await?;
        if targets.len() != ours.len() {
            return Err(Error::weights(t.file, format!("tensor \"seqcls_labels\" has {} values for {} logits", targets.len(), ours.len())));
        }
        let n = ours.len() as f64;
        let loss: f64 = if problem == Some("multi_label_classification") {
            ours.iter().zip(&targets).map(|(&x, &y)| { let (x, y) = (x as f64, y as f64); x.max(0.0) - x * y + (-x.abs()).exp().ln_1p() }).sum::<f64>() / n
        } else {
            ours.iter().zip(&targets).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / n
        };
        return Ok(loss as f32);
    }
    let labels = t.to_i64()?;
    if labels.len() != b {
        return Err(Error::weights(t.file, format!("tensor \"seqcls_labels\" has {} labels for {b} sequences", labels.len())));
    }
    let keep: Vec<u32> = (0..b as u32).filter(|&i| labels[i as usize] != -100).collect();
    let labels: Vec<u32> = keep.iter().map(|&i| labels[i as usize] as u32).collect();
    let rows = be.gather_rows(logits, &be.upload_ids(&keep)?)?;
    mean_cross_entropy(be, &rows, &labels).await
}

/// Run the model on the reference inputs and compare.
pub async fn check<B: Backend>(be: &B, model: &Model<B>, reference: &Checkpoint) -> Result<CheckReport> {
    let mut report = match model {
        Model::ModernBert(m) => check_modernbert(be, m, reference).await?,
        Model::Bert(m) => check_bert(be, m, reference).await?,
    };
    for name in reference.names() {
        if !is_input(name) && !report.rows.iter().any(|r| r.name == name) {
            report.skipped.push((name.to_string(), skip_reason(name).to_string()));
        }
    }
    report.skipped.sort();
    if report.rows.is_empty() {
        return Err(Error::Input(format!("{}: no tensor of the reference file could be compared with this model", reference.file_of("input_ids"))));
    }
    Ok(report)
}

/// Load a model for the check. A BERT reference may hold the pooler its sequence classifier used
/// (`bert.pooler.dense.*`, as transformers' fixtures do when the checkpoint has none): it is then
/// taken from the reference file, and `Bert::pooler_source` says so.
pub fn load_for_check<B: Backend>(be: &B, config: ModelConfig, checkpoint: &Checkpoint, reference: &Checkpoint) -> Result<Model<B>> {
    match config {
        ModelConfig::Bert(c) => {
            let names = ["bert.pooler.dense.weight", "bert.pooler.dense.bias"];
            let has_pooler = checkpoint.contains("bert.pooler.dense.weight") || checkpoint.contains("pooler.dense.weight");
            if !has_pooler && names.iter().all(|n| reference.contains(n)) && checkpoint.contains("bert.embeddings.word_embeddings.weight") {
                let overlay = Overlay { base: checkpoint, extra: reference, names: names.iter().map(|n| n.to_string()).collect() };
                let mut m = Bert::load(be, c, &overlay)?;
                m.pooler_source = Some(reference.file_of(names[0]).to_string());
                Ok(Model::Bert(m))
            } else {
                Ok(Model::Bert(Bert::load(be, c, checkpoint)?))
            }
        }
        c => Model::load(be, c, checkpoint),
    }
}

/// Masked-LM logits [T, V] of every real token, compared in row blocks: [T, V] of a real model
/// does not fit one GPU binding.
async fn mlm_logits_row<B: Backend>(
    be: &B,
    hidden: &B::Tensor,
    reference: &Checkpoint,
    name: &str,
    inp: &RefInputs,
    v: usize,
    head: impl Fn(&B::Tensor) -> Result<B::Tensor>,
) -> Result<CheckRow> {
    let t_real = inp.flat.len();
    let theirs = real_rows(reference, name, inp, v)?;
    let rows_per_block = (be.max_binding_elements(be.activation_dtype()) / v).clamp(1, t_real);
    let mut row = CheckRow::new(name, vec![t_real, v], &[], &[]);
    for start in (0..t_real).step_by(rows_per_block) {
        let end = (start + rows_per_block).min(t_real);
        let rows: Vec<u32> = (start as u32..end as u32).collect();
        let ours = be.read(&head(&be.gather_rows(hidden, &be.upload_ids(&rows)?)?)?).await?;
        row.diff.merge(&measure(&ours, &theirs[start * v..end * v]));
    }
    Ok(row)
}

/// A [B, X] reference tensor compared with ours.
async fn per_sequence_row<B: Backend>(be: &B, ours: &B::Tensor, reference: &Checkpoint, name: &str, b: usize, x: usize) -> Result<CheckRow> {
    let t = reference.require(name)?;
    if t.shape != [b, x] {
        return Err(Error::weights(t.file, format!("tensor \"{name}\" has shape {:?}, expected [{b}, {x}]", t.shape)));
    }
    Ok(CheckRow::new(name, vec![b, x], &be.read(ours).await?, &t.to_f32()?))
}

/// The classic-BERT check (`tests/fixtures-bert/reference.safetensors`): the single-segment
/// batch with every layer, the pooler and the heads; then, when the reference has it, the
/// sentence-pair batch (`pair.*`, token types 0 and 1).
async fn check_bert<B: Backend>(be: &B, bert: &Bert<B>, reference: &Checkpoint) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let h = bert.config.hidden_size;
    let c = bert.labels.len();
    for prefix in ["", "pair."] {
        if !reference.contains(&format!("{prefix}input_ids")) {
            continue;
        }
        let inp = inputs(reference, prefix)?;
        let t_real = inp.flat.len();
        let seqs: Vec<&[u32]> = inp.sequences.iter().map(Vec::as_slice).collect();
        let types: Vec<&[u32]> = inp.types.iter().map(Vec::as_slice).collect();
        let batch: Batch<B> = bert.batch(be, &seqs, Some(&types))?;
        let mut tape = Tape::trace();
        let hidden = bert.encode(be, &batch, Some(&mut tape))?;
        for (name, tensor) in tape.trace.iter().flatten() {
            let name = format!("{prefix}{name}");
            if reference.contains(&name) {
                let theirs = real_rows(reference, &name, &inp, h)?;
                report.rows.push(CheckRow::new(name, vec![t_real, h], &be.read(tensor).await?, &theirs));
            }
        }
        let b = inp.sequences.len();
        let name = format!("{prefix}pooler_output");
        if bert.pooler.is_some() && reference.contains(&name) {
            report.rows.push(per_sequence_row(be, &bert.pooler_output(be, &hidden, &batch)?, reference, &name, b, h).await?);
        }
        if bert.mlm.is_some() {
            let name = format!("{prefix}mlm_logits");
            if reference.contains(&name) {
                let head = |rows: &B::Tensor| bert.mlm_logits(be, rows);
                report.rows.push(mlm_logits_row(be, &hidden, reference, &name, &inp, bert.config.vocab_size, head).await?);
            }
            let (loss_name, labels_name) = (format!("{prefix}mlm_loss"), format!("{prefix}mlm_labels"));
            if reference.contains(&loss_name) && reference.contains(&labels_name) {
                let (rows, labels) = labelled(reference, &labels_name, &inp)?;
                let logits = bert.mlm_logits(be, &be.gather_rows(&hidden, &be.upload_ids(&rows)?)?)?;
                report.rows.push(loss_row(reference, &loss_name, mean_cross_entropy(be, &logits, &labels).await?)?);
            }
        }
        if bert.classifier.is_some() {
            let name = format!("{prefix}tokcls_logits");
            if reference.contains(&name) {
                let theirs = real_rows(reference, &name, &inp, c)?;
                report.rows.push(CheckRow::new(name, vec![t_real, c], &be.read(&bert.token_logits(be, &hidden)?).await?, &theirs));
            }
            let (loss_name, labels_name) = (format!("{prefix}tokcls_loss"), format!("{prefix}tokcls_labels"));
            if reference.contains(&loss_name) && reference.contains(&labels_name) {
                let (rows, labels) = labelled(reference, &labels_name, &inp)?;
                let logits = bert.token_logits(be, &be.gather_rows(&hidden, &be.upload_ids(&rows)?)?)?;
                report.rows.push(loss_row(reference, &loss_name, mean_cross_entropy(be, &logits, &labels).await?)?);
            }
            let name = format!("{prefix}seqcls_logits");
            if bert.pooler.is_some() && reference.contains(&name) {
                let logits = bert.sequence_logits(be, &hidden, &batch, None)?;
                report.rows.push(per_sequence_row(be, &logits, reference, &name, b, c).await?);
                let loss_name = format!("{prefix}seqcls_loss");
                if prefix.is_empty() && reference.contains(&loss_name) && reference.contains("seqcls_labels") {
                    let loss = sequence_loss(be, bert.config.problem_type.as_deref(), c, reference, &logits, b).await?;
                    report.rows.push(loss_row(reference, &loss_name, loss)?);
                }
            }
        }
    }
    Ok(report)
}

/// The ModernBERT check (`tests/fixtures/reference.safetensors`).
async fn check_modernbert<B: Backend>(be: &B, model: &ModernBert<B>, reference: &Checkpoint) -> Result<CheckReport> {
    let inp = inputs(reference, "")?;
    let seqs: Vec<&[u32]> = inp.sequences.iter().map(|s| s.as_slice()).collect();
    let batch = model.batch(be, &seqs)?;
    let mut tape = Tape::trace();
    let hidden = model.encode(be, &batch, Some(&mut tape))?;
    let h = model.config.hidden_size;
    let mut report = CheckReport::default();
    let t_real = inp.flat.len();

    for (name, tensor) in tape.trace.iter().flatten() {
        if !reference.contains(name) {
            continue;
        }
        let ours = be.read(tensor).await?;
        let theirs = real_rows(reference, name, &inp, h)?;
        report.rows.push(CheckRow::new(name.clone(), vec![t_real, h], &ours, &theirs));
    }

    // RoPE tables: transformers stores cos/sin [S, hd] (the half table twice); ours is [P, hd/2].
    for (kind, tag) in [(LayerType::Full, "full_attention"), (LayerType::Sliding, "sliding_attention")] {
        let (table, _) = model.ropes.of(kind);
        for (ours, name) in [(&table.cos, format!("rope_cos_{tag}")), (&table.sin, format!("rope_sin_{tag}"))] {
            let Some(t) = reference.get(&name) else { continue };
            let hd = model.config.head_dim();
            if t.shape.len() != 2 || t.shape[1] != hd || t.shape[0] > model.config.max_position_embeddings {
                return Err(Error::weights(t.file, format!("tensor \"{name}\" has shape {:?}, expected [S, {hd}]", t.shape)));
            }
            let theirs = t.to_f32()?;
            let ours = be.read(ours).await?;
            let ours: Vec<f32> = ours.chunks(hd / 2).take(t.shape[0]).flat_map(|half| half.iter().chain(half).copied()).collect();
            report.rows.push(CheckRow::new(name, t.shape.to_vec(), &ours, &theirs));
        }
    }

    // Masked LM.
    if model.decoder.is_some() {
        if reference.contains("mlm_logits") {
            let head = |rows: &B::Tensor| model.mlm_logits(be, rows);
            report.rows.push(mlm_logits_row(be, &hidden, reference, "mlm_logits", &inp, model.config.vocab_size, head).await?);
        }
        if reference.contains("mlm_loss") && reference.contains("mlm_labels") {
            let (rows, labels) = labelled(reference, "mlm_labels", &inp)?;
            // Sparse prediction: the head runs on the labelled rows only.
            let logits = model.mlm_logits(be, &be.gather_rows(&hidden, &be.upload_ids(&rows)?)?)?;
            let loss = mean_cross_entropy(be, &logits, &labels).await?;
            report.rows.push(loss_row(reference, "mlm_loss", loss)?);
        }
    }

    // Token and sequence classification.
    let c = model.labels.len();
    if model.classifier.is_some() {
        if reference.contains("tokcls_logits") {
            let ours = be.read(&model.token_logits(be, &hidden)?).await?;
            let theirs = real_rows(reference, "tokcls_logits", &inp, c)?;
            report.rows.push(CheckRow::new("tokcls_logits", vec![t_real, c], &ours, &theirs));
        }
        if reference.contains("tokcls_loss") && reference.contains("tokcls_labels") {
            let (rows, labels) = labelled(reference, "tokcls_labels", &inp)?;
            let logits = model.token_logits(be, &be.gather_rows(&hidden, &be.upload_ids(&rows)?)?)?;
            let loss = mean_cross_entropy(be, &logits, &labels).await?;
            report.rows.push(loss_row(reference, "tokcls_loss", loss)?);
        }
        for (pooling, tag) in [(Pooling::Cls, "cls"), (Pooling::Mean, "mean")] {
            let logits_name = format!("seqcls_logits_{tag}");
            let loss_name = format!("seqcls_loss_{tag}");
            if !reference.contains(&logits_name) && !reference.contains(&loss_name) {
                continue;
            }
            let logits = model.sequence_logits(be, &hidden, &batch, Some(pooling))?;
            if reference.contains(&logits_name) {
                let t = reference.require(&logits_name)?;
                let expected = [inp.sequences.len(), c];
                if t.shape != expected {
                    return Err(Error::weights(t.file, format!("tensor \"{logits_name}\" has shape {:?}, expected {expected:?}", t.shape)));
                }
                let ours = be.read(&logits).await?;
                report.rows.push(CheckRow::new(logits_name, expected.to_vec(), &ours, &t.to_f32()?));
            }
            if reference.contains(&loss_name) && reference.contains("seqcls_labels") {
                let loss = sequence_loss(be, model.config.problem_type.as_deref(), c, reference, &logits, inp.sequences.len()).await?;
                report.rows.push(loss_row(reference, &loss_name, loss)?);
            }
        }
    }
    Ok(report)
}
