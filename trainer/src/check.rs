//! `trainer check`: replay what a transformers training fixture holds and compare.
//!
//! Three schemas are recognised: `fixtures/reference.safetensors` (gradients of the MLM loss for
//! every parameter, `grad.*`, and one AdamW step, `adamw.*`), the same for classic BERT in
//! `fixtures-bert/reference.safetensors` (when the masked-LM model given is a BERT; with its
//! token- and sequence-classification losses), and
//! `fixtures-training/training.safetensors` (10-step AdamW and StableAdamW trajectories, gradient
//! accumulation, token-classification gradients, the optimizer-only unit test). Tolerances are
//! those the fixtures' README derives from their float32-vs-float64 noise floors.

use kernels::optim::{AdamStep, Rule};
pub use kernels::tolerance::Report;
use kernels::tolerance::{training as tol, Criterion};
use kernels::Backend;
use runtime::Encoder;
use runtime::config::Architecture;
use runtime::folder::ModelFolder;
use runtime::model::Batch;
use runtime::weights::Checkpoint;
use runtime::weights::Overlay;
use runtime::{Bert, ModelConfig, ModernBert};

use crate::backward::{forward_backward, Grads, Target};
use crate::optim::{decays, Optimizer, OptimizerConfig, OptimizerKind};
use crate::schedule::Schedule;
use crate::{Error, Result};

/// The models a check may use, by architecture.
pub struct Models<'a> {
    pub dirs: &'a [std::path::PathBuf],
}

impl Models<'_> {
    fn find(&self, arch: Architecture) -> Result<Option<ModelFolder>> {
        for d in self.dirs {
            let f = ModelFolder::open(d)?;
            if f.config.architecture() == Some(arch) {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }
}

/// A reference's padded batch [B, S], unpadded.
struct RefBatch {
    sequences: Vec<Vec<u32>>,
    /// Labelled real tokens: (row in the unpadded batch, label).
    labelled: Vec<(u32, u32)>,
}

impl RefBatch {
    fn ids(&self) -> Vec<u32> {
        self.sequences.concat()
    }
    fn upload<B: Backend>(&self, be: &B, model: &ModernBert<B>) -> Result<Batch<B>> {
        let refs: Vec<&[u32]> = self.sequences.iter().map(Vec::as_slice).collect();
        Ok(model.batch(be, &refs)?)
    }
    fn rows(&self) -> Vec<u32> {
        self.labelled.iter().map(|l| l.0).collect()
    }
    fn labels(&self) -> Vec<u32> {
        self.labelled.iter().map(|l| l.1).collect()
    }
}

fn ints(r: &Checkpoint, name: &str) -> Result<(Vec<i64>, Vec<usize>)> {
    let t = r.require(name)?;
    Ok((t.to_i64()?, t.shape.to_vec()))
}

fn floats(r: &Checkpoint, name: &str) -> Result<Vec<f32>> {
    Ok(r.require(name)?.to_f32()?)
}

fn doubles(r: &Checkpoint, name: &str) -> Result<Vec<f64>> {
    Ok(r.require(name)?.to_f64()?)
}

/// Read `{prefix}input_ids`, `attention_mask` and a label tensor, dropping pads; `rows` limits
/// the batch to some of its rows (gradient accumulation's micro-batches).
fn ref_batch(r: &Checkpoint, prefix: &str, labels: &str, rows: Option<std::ops::Range<usize>>) -> Result<RefBatch> {
    let file = r.file_of(&format!("{prefix}input_ids")).to_string();
    let (ids, shape) = ints(r, &format!("{prefix}input_ids"))?;
    let (mask, mshape) = ints(r, &format!("{prefix}attention_mask"))?;
    let (lab, lshape) = ints(r, labels)?;
    if shape.len() != 2 || mshape != shape || lshape != shape {
        return Err(Error::file(file, format!("{prefix}input_ids {shape:?}, attention_mask {mshape:?} and {labels} {lshape:?} must be one [B, S] shape")));
    }
    let (b, s) = (shape[0], shape[1]);
    let mut out = RefBatch { sequences: Vec::new(), labelled: Vec::new() };
    let mut t = 0u32;
    for row in rows.unwrap_or(0..b) {
        let mut seq = Vec::new();
        for col in 0..s {
            let k = row * s + col;
            if mask[k] == 0 {
                continue;
            }
            seq.push(u32::try_from(ids[k]).map_err(|_| Error::file(&file, format!("negative token id at [{row}, {col}]")))?);
            if lab[k] >= 0 {
                out.labelled.push((t, lab[k] as u32));
            }
            t += 1;
        }
        out.sequences.push(seq);
    }
    Ok(out)
}

/// Run the check on whichever schema `reference` holds.
pub fn run<B: Backend>(be: &B, models: &Models, reference: &Checkpoint) -> Result<Report> {
    let mut report = Report::default();
    if reference.contains("mlm_loss") && reference.names().any(|n| n.starts_with("grad.")) {
        check_oracle(be, models, reference, &mut report)?;
    } else if reference.contains("adamw.loss") || reference.contains("optim.stableadamw.rms") {
        check_training(be, models, reference, &mut report)?;
    } else {
        let file = reference.names().next().map(|n| reference.file_of(n).to_string()).unwrap_or_default();
        return Err(Error::file(file, "neither a gradient reference (mlm_loss, grad.*) nor a training reference (adamw.loss, stableadamw.*, optim.*)"));
    }
    Ok(report)
}

fn mlm_model<B: Backend>(be: &B, models: &Models) -> Result<Option<ModernBert<B>>> {
    Ok(match models.find(Architecture::MaskedLm)? {
        Some(f) => Some(ModernBert::load_trainable(be, f.config.modernbert("the training check")?.clone(), &f.checkpoint)?),
        None => None,
    })
}

/// fixtures/reference.safetensors: every gradient of the MLM loss and one AdamW step.
fn check_oracle<B: Backend>(be: &B, models: &Models, r: &Checkpoint, report: &mut Report) -> Result<()> {
    if let Some(f) = models.find(Architecture::MaskedLm)? {
        if let ModelConfig::Bert(c) = &f.config {
            return check_bert_oracle(be, c.clone(), &f, models, r, report);
        }
    }
    let Some(mut model) = mlm_model(be, models)? else {
        report.skipped.push(("mlm_loss, grad.*, adamw.*".into(), "no masked-LM model given".into()));
        return Ok(());
    };
    let batch = ref_batch(r, "", "mlm_labels", None)?;
    let (rows, labels) = (batch.rows(), batch.labels());
    let mut grads = Grads::default();
    let up = batch.upload(be, &model)?;
    let out = forward_backward(be, &model, &up, &batch.ids(), &Target::MaskedLm { rows: &rows, labels: &labels }, 1.0 / labels.len() as f32, &mut grads)?;
    report.judge("mlm_loss", &[1], &[(out.loss_sum / labels.len() as f64) as f32], &floats(r, "mlm_loss")?, tol::SMALL_LOSS);
    for (name, shape, _) in crate::checkpoint::parameters(be, &mut model)? {
        let g = grads.get(&name).ok_or_else(|| Error::Input(format!("no gradient for {name}")))?;
        report.judge(&format!("grad.{name}"), &shape, &kernels::block_on(be.read(g))?, &floats(r, &format!("grad.{name}"))?, tol::GRAD);
    }
    // One AdamW step from the stored gradients (the optimizer alone): lr 1e-2, betas (0.9,
    // 0.98), eps 1e-6, weight decay 0.1 on matrices (fixtures/README.md).
    let mut ref_grads = Grads::default();
    for (name, shape, _) in crate::checkpoint::parameters(be, &mut model)? {
        ref_grads.tensors.insert(name.clone(), be.upload_vec(floats(r, &format!("grad.{name}"))?, &shape)?);
    }
    let mut opt = Optimizer::new(OptimizerConfig { kind: OptimizerKind::AdamW, lr: 1e-2, betas: (0.9, 0.98), eps: 1e-6, weight_decay: 0.1, grad_clip: None });
    opt.step(be, &mut model, &ref_grads, 1e-2, false)?;
    for (name, shape, values) in crate::checkpoint::parameters(be, &mut model)? {
        report.judge(&format!("adamw.{name}"), &shape, &values, &floats(r, &format!("adamw.{name}"))?, tol::ADAMW_ONE_STEP);
    }
    Ok(())
}

/// fixtures-training/training.safetensors.
fn check_training<B: Backend>(be: &B, models: &Models, r: &Checkpoint, report: &mut Report) -> Result<()> {
    optimizer_unit(be, r, report)?;
    if mlm_model(be, models)?.is_none() {
        report.skipped.push(("adamw.*, stableadamw.*, accum.*".into(), "no masked-LM model given".into()));
    } else {
        trajectory(be, models, r, report, OptimizerKind::AdamW)?;
        trajectory(be, models, r, report, OptimizerKind::StableAdamW)?;
        accumulation(be, models, r, report)?;
    }
    match models.find(Architecture::TokenClassification)? {
        Some(f) => token_classification(be, &f, r, report)?,
        None => report.skipped.push(("tokcls.*".into(), "no token-classification model given".into())),
    }
    Ok(())
}

/// §6: four synthetic tensors, ten synthetic gradients, both optimizers, every step.
fn optimizer_unit<B: Backend>(be: &B, r: &Checkpoint, report: &mut Report) -> Result<()> {
    let names = ["unit.w.weight", "unit.e.weight", "unit.n.weight", "unit.d.bias"];
    let lrs = doubles(r, "stableadamw.lr")?;
    for kind in [OptimizerKind::StableAdamW, OptimizerKind::AdamW] {
        let key = if kind == OptimizerKind::AdamW { "adamw" } else { "stableadamw" };
        let mut rms_actual = Vec::new();
        for (col, name) in names.iter().enumerate() {
            let p0 = r.require(&format!("optim.p0.{name}"))?;
            let shape = p0.shape.to_vec();
            let n: usize = shape.iter().product();
            let mut p = be.upload_vec(p0.to_f32()?, &shape)?;
            let (mut m, mut v) = (be.upload_vec(vec![0.0; n], &shape)?, be.upload_vec(vec![0.0; n], &shape)?);
            let grads = floats(r, &format!("optim.grads.{name}"))?;
            let expected = floats(r, &format!("optim.{key}.{name}"))?;
            let mut actual = Vec::with_capacity(expected.len());
            for k in 0..10 {
                let g = be.upload_vec(grads[k * n..(k + 1) * n].to_vec(), &shape)?;
                let (rule, lr) = match kind {
                    OptimizerKind::AdamW => (Rule::AdamW, 1e-3),
                    OptimizerKind::StableAdamW => (Rule::StableAdamW { max_lr: 1e-3 }, lrs[k]),
                };
                let wd = if decays(name, &shape) { 1e-5 } else { 0.0 };
                let s = AdamStep { rule, lr, beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: wd, step: k as u64 + 1 };
                let up = be.adam_step(&p, &g, &m, &v, &s)?;
                (p, m, v) = (up.param, up.m, up.v);
                actual.extend(kernels::block_on(be.read(&p))?);
                if let Some(rms) = up.rms {
                    rms_actual.push((k, col, kernels::block_on(be.read(&rms))?[0]));
                }
            }
            let mut full = vec![10];
            full.extend(&shape);
            report.judge(&format!("optim.{key}.{name}"), &full, &actual, &expected, tol::OPTIM_UNIT);
        }
        if kind == OptimizerKind::StableAdamW {
            let mut grid = vec![0f32; 40];
            for (k, col, v) in rms_actual {
                grid[k * 4 + col] = v;
            }
            report.judge("optim.stableadamw.rms", &[10, 4], &grid, &floats(r, "optim.stableadamw.rms")?, tol::RMS);
        }
    }
    Ok(())
}

/// §2 and §3: ten MLM batches, one optimizer step each.
fn trajectory<B: Backend>(be: &B, models: &Models, r: &Checkpoint, report: &mut Report, kind: OptimizerKind) -> Result<()> {
    let mut model = mlm_model(be, models)?.expect("checked by the caller");
    let key = if kind == OptimizerKind::AdamW { "adamw" } else { "stableadamw" };
    let config = OptimizerConfig { kind, lr: 1e-3, betas: (0.9, 0.98), eps: 1e-6, weight_decay: 1e-5, grad_clip: None };
    let schedule = match kind {
        OptimizerKind::AdamW => Schedule::Constant,
        OptimizerKind::StableAdamW => Schedule::WarmupStableDecay { warmup: 2, decay: 4, alpha: 0.001 },
    };
    let mut opt = Optimizer::new(config);
    let (mut losses, mut lrs, mut norms, mut rms) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let order: Vec<String> = model.parameters_mut().into_iter().map(|(n, _)| n).collect();
    for k in 0..10u64 {
        let batch = ref_batch(r, &format!("batch{k}."), &format!("batch{k}.labels"), None)?;
        let (rows, labels) = (batch.rows(), batch.labels());
        let mut grads = Grads::default();
        let up = batch.upload(be, &model)?;
        let out = forward_backward(be, &model, &up, &batch.ids(), &Target::MaskedLm { rows: &rows, labels: &labels }, 1.0 / labels.len() as f32, &mut grads)?;
        losses.push((out.loss_sum / labels.len() as f64) as f32);
        let lr = schedule.lr(k, 10, 1e-3);
        lrs.push(lr as f32);
        let stats = opt.step(be, &mut model, &grads, lr, kind == OptimizerKind::StableAdamW)?;
        norms.push(stats.grad_norm as f32);
        for name in &order {
            rms.push(stats.rms.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v));
        }
    }
    let lr_ref: Vec<f32> = doubles(r, &format!("{key}.lr"))?.into_iter().map(|v| v as f32).collect();
    report.judge(&format!("{key}.lr"), &[10], &lrs, &lr_ref, tol::LR);
    report.judge(&format!("{key}.loss"), &[10], &losses, &floats(r, &format!("{key}.loss"))?, tol::LOSS);
    report.judge(&format!("{key}.grad_norm"), &[10], &norms, &floats(r, &format!("{key}.grad_norm"))?, tol::GRAD);
    if kind == OptimizerKind::StableAdamW {
        report.judge("stableadamw.rms", &[10, order.len()], &rms, &floats(r, "stableadamw.rms")?, tol::TRAJECTORY_RMS);
    }
    let mut all_actual = Vec::new();
    let mut all_expected = Vec::new();
    for (name, shape, values) in crate::checkpoint::parameters(be, &mut model)? {
        let expected = floats(r, &format!("{key}.final.{name}"))?;
        match kind {
            OptimizerKind::StableAdamW => report.judge(&format!("{key}.final.{name}"), &shape, &values, &expected, tol::STABLE_FINAL),
            OptimizerKind::AdamW => {
                all_actual.extend(values);
                all_expected.extend(expected);
            }
        }
    }
    if kind == OptimizerKind::AdamW {
        // Judged over all values together (README §8): a handful of entries carry float32 noise
        // amplified by lr/eps, so both the 99.9th percentile and the maximum are bounded.
        let mut d: Vec<f32> = all_actual.iter().zip(&all_expected).map(|(a, e)| (a - e).abs()).collect();
        d.sort_by(f32::total_cmp);
        let p999 = d.get(((d.len() as f64) * 0.999) as usize).copied().unwrap_or(f32::INFINITY);
        report.judge("adamw.final.* (all)", &[all_actual.len()], &all_actual, &all_expected, Criterion::AdamWFinal);
        let last = report.rows.last_mut().unwrap();
        last.ok = last.ok && p999 <= tol::ADAMW_FINAL_P999;
        last.name = format!("adamw.final.* (all; p99.9 {p999:.2e})");
    }
    Ok(())
}

/// §4: batch 0 as two micro-batches, the loss normalised by all 25 labelled tokens.
fn accumulation<B: Backend>(be: &B, models: &Models, r: &Checkpoint, report: &mut Report) -> Result<()> {
    let mut model = mlm_model(be, models)?.expect("checked by the caller");
    let total: i64 = ints(r, "accum.num_items")?.0.last().copied().unwrap_or(0);
    let (mut grads, mut micro) = (Grads::default(), Vec::new());
    for rows in [0..2, 2..3] {
        let batch = ref_batch(r, "batch0.", "batch0.labels", Some(rows))?;
        let (rws, labels) = (batch.rows(), batch.labels());
        let up = batch.upload(be, &model)?;
        let out = forward_backward(be, &model, &up, &batch.ids(), &Target::MaskedLm { rows: &rws, labels: &labels }, 1.0 / total as f32, &mut grads)?;
        micro.push((out.loss_sum / total as f64) as f32);
    }
    report.judge("accum.micro_loss", &[2], &micro, &floats(r, "accum.micro_loss")?, tol::SMALL_LOSS);
    for (name, shape, _) in crate::checkpoint::parameters(be, &mut model)? {
        let g = grads.get(&name).ok_or_else(|| Error::Input(format!("no gradient for {name}")))?;
        report.judge(&format!("accum.grad.{name}"), &shape, &kernels::block_on(be.read(g))?, &floats(r, &format!("accum.grad.{name}"))?, tol::GRAD);
    }
    Ok(())
}

/// §5: the token classifier's loss and gradients.
fn token_classification<B: Backend>(be: &B, folder: &ModelFolder, r: &Checkpoint, report: &mut Report) -> Result<()> {
    let mut model = ModernBert::load_trainable(be, folder.config.modernbert("the training check")?.clone(), &folder.checkpoint)?;
    let batch = ref_batch(r, "tokcls.", "tokcls.labels", None)?;
    let (rows, labels) = (batch.rows(), batch.labels());
    let mut grads = Grads::default();
    let up = batch.upload(be, &model)?;
    let out = forward_backward(be, &model, &up, &batch.ids(), &Target::Tokens { rows: &rows, labels: &labels }, 1.0 / labels.len() as f32, &mut grads)?;
    report.judge("tokcls.loss", &[1], &[(out.loss_sum / labels.len() as f64) as f32], &floats(r, "tokcls.loss")?, tol::SMALL_LOSS);
    for (name, shape, _) in crate::checkpoint::parameters(be, &mut model)? {
        let g = grads.get(&name).ok_or_else(|| Error::Input(format!("no gradient for {name}")))?;
        report.judge(&format!("tokcls.grad.{name}"), &shape, &kernels::block_on(be.read(g))?, &floats(r, &format!("tokcls.grad.{name}"))?, tol::GRAD);
    }
    Ok(())
}

/// `{prefix}token_type_ids` [B, S] of a reference batch, with the pads dropped like
/// `ref_batch`'s (all 0 when the reference has none).
fn ref_types(r: &Checkpoint, prefix: &str, batch: &RefBatch) -> Result<Vec<Vec<u32>>> {
    let name = format!("{prefix}token_type_ids");
    if !r.contains(&name) {
        return Ok(batch.sequences.iter().map(|s| vec![0; s.len()]).collect());
    }
    let (types, shape) = ints(r, &name)?;
    let (mask, _) = ints(r, &format!("{prefix}attention_mask"))?;
    let s = shape.get(1).copied().unwrap_or(0);
    let mut out = Vec::new();
    for row in 0..batch.sequences.len() {
        out.push((0..s).filter(|&col| mask[row * s + col] != 0).map(|col| types[row * s + col].max(0) as u32).collect());
    }
    Ok(out)
}

/// fixtures-bert/reference.safetensors: every gradient of BertForMaskedLM's MLM loss (`grad.*`,
/// transformers' names), then the token- and sequence-classification losses through the same
/// training path (the sequence classifier with the reference's pooler, as the runtime's check).
fn check_bert_oracle<B: Backend>(be: &B, config: runtime::BertConfig, folder: &ModelFolder, models: &Models, r: &Checkpoint, report: &mut Report) -> Result<()> {
    let mut model = Bert::load_trainable(be, config, &folder.checkpoint)?;
    let batch = ref_batch(r, "", "mlm_labels", None)?;
    let types = ref_types(r, "", &batch)?;
    let upload = |model: &Bert<B>, batch: &RefBatch, types: &[Vec<u32>]| -> Result<Batch<B>> {
        let seqs: Vec<&[u32]> = batch.sequences.iter().map(Vec::as_slice).collect();
        let types: Vec<&[u32]> = types.iter().map(Vec::as_slice).collect();
        Ok(model.batch(be, &seqs, Some(&types))?)
    };
    let (rows, labels) = (batch.rows(), batch.labels());
    let mut grads = Grads::default();
    let up = upload(&model, &batch, &types)?;
    let out = forward_backward(be, &model, &up, &batch.ids(), &Target::MaskedLm { rows: &rows, labels: &labels }, 1.0 / labels.len() as f32, &mut grads)?;
    report.judge("mlm_loss", &[1], &[(out.loss_sum / labels.len() as f64) as f32], &floats(r, "mlm_loss")?, tol::SMALL_LOSS);
    let names: Vec<String> = model.parameters_mut().into_iter().map(|(n, _)| n).collect();
    let mut named = Vec::new();
    for name in &names {
        named.push((name.clone(), grads.get(name).ok_or_else(|| Error::Input(format!("no gradient for {name}")))?));
    }
    for (name, shape, values) in crate::checkpoint::read_named(be, named)? {
        let expected = floats(r, &format!("grad.{name}"))?;
        // key.bias moves every score of a query by the same amount, which softmax removes: its
        // gradient is 0 analytically and the reference holds float32 noise (fixtures-bert README).
        let criterion = if name.ends_with(".attention.self.key.bias") { tol::NOISE_ONLY } else { tol::GRAD };
        report.judge(&format!("grad.{name}"), &shape, &values, &expected, criterion);
    }
    match models.find(Architecture::TokenClassification)? {
        Some(f) => {
            let ModelConfig::Bert(c) = &f.config else {
                report.skipped.push(("tokcls_loss, seqcls_loss".into(), format!("{} is not a BERT model", f.dir.display())));
                return Ok(());
            };
            let tok = ref_batch(r, "", "tokcls_labels", None)?;
            let types = ref_types(r, "", &tok)?;
            let model = Bert::load_trainable(be, c.clone(), &f.checkpoint)?;
            let (rows, labels) = (tok.rows(), tok.labels());
            let up = upload(&model, &tok, &types)?;
            let out = forward_backward(be, &model, &up, &tok.ids(), &Target::Tokens { rows: &rows, labels: &labels }, 1.0 / labels.len() as f32, &mut Grads::default())?;
            report.judge("tokcls_loss", &[1], &[(out.loss_sum / labels.len() as f64) as f32], &floats(r, "tokcls_loss")?, tol::SMALL_LOSS);
            let pooler = ["bert.pooler.dense.weight", "bert.pooler.dense.bias"];
            if !f.checkpoint.contains(pooler[0]) && !pooler.iter().all(|n| r.contains(n)) {
                report.skipped.push(("seqcls_loss".into(), "neither the model nor the reference has a pooler".into()));
                return Ok(());
            }
            let overlay = Overlay { base: &f.checkpoint, extra: r, names: pooler.iter().map(|n| n.to_string()).collect() };
            let mut c = c.clone();
            c.architecture = Some(Architecture::SequenceClassification);
            let model = Bert::load_trainable(be, c, &overlay)?;
            let seq_labels: Vec<u32> = ints(r, "seqcls_labels")?.0.into_iter().map(|v| v.max(0) as u32).collect();
            let out = forward_backward(be, &model, &up, &tok.ids(), &Target::Sequences { labels: &seq_labels, pooling: runtime::config::Pooling::Cls }, 1.0, &mut Grads::default())?;
            report.judge("seqcls_loss", &[1], &[(out.loss_sum / seq_labels.len() as f64) as f32], &floats(r, "seqcls_loss")?, tol::SMALL_LOSS);
        }
        None => report.skipped.push(("tokcls_loss, seqcls_loss".into(), "no token-classification model given".into())),
    }
    Ok(())
}
