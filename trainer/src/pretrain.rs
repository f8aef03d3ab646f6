//! Continued masked-LM pretraining in phases (BioClinical ModernBERT's recipe: 30% masking at a
//! constant learning rate, then 15% with 1-sqrt decay; or Clinical ModernBERT's decaying mask
//! rate). Weights and optimizer state carry over between phases; each phase restarts its
//! schedule and its data.
//!
//! A run is described by a TOML file:
//! ```toml
//! output = "runs/bioclinical"
//! seed = 42
//! metrics_every = 10
//! checkpoint_every = 500
//! eval_every = 500          # held-out loss and top-k accuracy (the dataset's eval split)
//!
//! [model]
//! init = "ModernBERT-base"  # a Hugging Face folder (or: config = "config.json" for random weights,
//!                           #  with tokenizer = "folder with tokenizer.json")
//!
//! [optimizer]
//! kind = "stableadamw"
//! lr = 3e-4
//! betas = [0.9, 0.98]
//! eps = 1e-6
//! weight_decay = 1e-5
//!
//! [[phase]]
//! name = "phase1"
//! data = "data/clinical"   # a dataset made by `trainer prepare`
//! steps = 1000
//! batch_tokens = 16384
//! mask_rate = 0.30
//! schedule = { kind = "constant" }
//!
//! [[phase]]
//! name = "phase2"
//! data = "data/clinical"
//! steps = 500
//! batch_tokens = 16384
//! mask_rate = 0.15
//! schedule = { kind = "warmup-stable-decay", warmup = 0, decay = 500 }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kernels::Backend;
use runtime::Encoder;
use runtime::config::Architecture;
use runtime::folder::ModelFolder;
use runtime::init::Rng;
use runtime::tokenize::Tokenizer;
use runtime::weights::Checkpoint;
use runtime::{ModernBert, ModernBertConfig};
use serde::{Deserialize, Serialize};

use crate::backward::{forward_backward, loss_and_ranks, Grads, Target};
use crate::checkpoint::{self, TrainerState};
use crate::data::{self, Loader, LoaderState};
use crate::dist::Dist;
use crate::report::RunLog;
use crate::mask::{mask_batch, MaskTokens, Selection};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::schedule::{MaskRate, Schedule};
use crate::{Error, Result};

/// Where the starting weights come from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// A Hugging Face folder (config.json, model.safetensors, tokenizer.json).
    pub init: Option<PathBuf>,
    /// A config.json for a model initialised at random (ModernBERT's initializer).
    pub config: Option<PathBuf>,
    /// A folder with tokenizer.json, when `init` has none or `config` is used.
    pub tokenizer: Option<PathBuf>,
}

/// Salience-weighted masking: tokens of the listed terms are `weight` times as likely to be
/// chosen.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Salience {
    /// A text file, one term per line (drug names, codes, …); each is tokenized with and
    /// without a leading space and all its token ids are weighted.
    pub terms: PathBuf,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_weight() -> f64 {
    3.0
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    /// A dataset directory made by `trainer prepare`.
    pub data: PathBuf,
    /// Optimizer steps in this phase.
    pub steps: u64,
    /// Tokens per micro-batch (unpadded: real tokens only).
    pub batch_tokens: usize,
    /// Micro-batches per optimizer step.
    #[serde(default = "one")]
    pub grad_accum: usize,
    pub mask_rate: MaskRate,
    pub schedule: Schedule,
    /// Peak learning rate of this phase (default: the optimizer's).
    pub lr: Option<f64>,
    pub salience: Option<Salience>,
}

fn one() -> usize {
    1
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub output: PathBuf,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "ten")]
    pub metrics_every: u64,
    /// Steps between checkpoints (0: at the end of each phase only).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Steps between evaluations on the eval split (0: never).
    #[serde(default)]
    pub eval_every: u64,
    /// Micro-batches per evaluation.
    #[serde(default = "twenty")]
    pub eval_batches: usize,
    pub model: ModelSource,
    pub optimizer: OptimizerConfig,
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
}

fn ten() -> u64 {
    10
}
fn twenty() -> usize {
    20
}

impl RunConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let text = runtime::files::read_text(path)?;
        let mut c: RunConfig = toml::from_str(&text).map_err(|e| Error::file(&file, e.to_string()))?;
        // Paths are relative to the configuration file.
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rel(&mut c.output);
        c.model.init.as_mut().map(rel);
        c.model.config.as_mut().map(rel);
        c.model.tokenizer.as_mut().map(rel);
        for ph in &mut c.phases {
            rel(&mut ph.data);
            if let Some(s) = ph.salience.as_mut() {
                rel(&mut s.terms);
            }
        }
        c.validate(&file)?;
        Ok(c)
    }

    fn validate(&self, file: &str) -> Result<()> {
        if self.phases.is_empty() {
            return Err(Error::file(file, "no [[phase]]: a run needs at least one phase"));
        }
        if self.model.init.is_none() == self.model.config.is_none() {
            return Err(Error::file(file, "[model]: give exactly one of init (a model folder) or config (a config.json for random weights)"));
        }
        if !(self.optimizer.lr > 0.0) {
            return Err(Error::file(file, format!("[optimizer] lr = {}: expected a positive learning rate", self.optimizer.lr)));
        }
        for (i, p) in self.phases.iter().enumerate() {
            let at = format!("[[phase]] {} (\"{}\")", i + 1, p.name);
            if p.steps == 0 || p.batch_tokens == 0 || p.grad_accum == 0 {
                return Err(Error::file(file, format!("{at}: steps, batch_tokens and grad_accum must be at least 1")));
            }
            let rates = match p.mask_rate {
                MaskRate::Constant(r) => vec![r],
                MaskRate::Linear { start, end } => vec![start, end],
            };
            if rates.iter().any(|r| !(0.0 < *r && *r < 1.0)) {
                return Err(Error::file(file, format!("{at}: mask_rate must lie in (0, 1)")));
            }
        }
        Ok(())
    }
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub phase: String,
    pub step: u64,
    pub global_step: u64,
    pub loss: f64,
    /// Masked-token accuracy at k = 1, 5, 10, 25.
    pub top1: f64,
    pub top5: f64,
    pub top10: f64,
    pub top25: f64,
    pub lr: f64,
    pub mask_rate: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub tokens: u64,
    /// `train` or `eval`.
    pub split: String,
    /// Ranks of a data-parallel run (1: one process).
    #[serde(default = "one_rank")]
    pub ranks: usize,
    /// Seconds and bytes per step spent summing gradients over the ranks (0 in one process).
    #[serde(default)]
    pub allreduce_s_per_step: f64,
    #[serde(default)]
    pub allreduce_bytes_per_step: u64,
}

fn one_rank() -> usize {
    1
}

/// Accumulates loss and top-k hits over steps.
#[derive(Default)]
struct Meter {
    loss_sum: f64,
    labels: u64,
    hits: [u64; 4],
    tokens: u64,
    started: Option<Instant>,
}

impl Meter {
    fn add(&mut self, loss_sum: f64, ranks: &[u32], tokens: u64) {
        self.loss_sum += loss_sum;
        self.labels += ranks.len() as u64;
        for (h, k) in self.hits.iter_mut().zip([1, 5, 10, 25]) {
            *h += ranks.iter().filter(|&&r| r < k).count() as u64;
        }
        self.tokens += tokens;
    }
    #[allow(clippy::too_many_arguments)]
    fn metrics(&self, phase: &str, step: u64, global: u64, lr: f64, rate: f64, grad_norm: f64, total_tokens: u64, split: &str) -> Metrics {
        let n = self.labels.max(1) as f64;
        let secs = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        Metrics {
            phase: phase.to_string(),
            step,
            global_step: global,
            loss: self.loss_sum / n,
            top1: self.hits[0] as f64 / n,
            top5: self.hits[1] as f64 / n,
            top10: self.hits[2] as f64 / n,
            top25: self.hits[3] as f64 / n,
            lr,
            mask_rate: rate,
            grad_norm,
            tokens_per_s: if secs > 0.0 { self.tokens as f64 / secs } else { 0.0 },
            tokens: total_tokens,
            split: split.to_string(),
            ranks: 1,
            allreduce_s_per_step: 0.0,
            allreduce_bytes_per_step: 0,
        }
    }

    /// The meter summed over every rank (each counted its own micro-batches).
    fn all_ranks(&mut self, dist: &Dist) {
        let mut v = [self.loss_sum, self.labels as f64, self.hits[0] as f64, self.hits[1] as f64, self.hits[2] as f64, self.hits[3] as f64, self.tokens as f64];
        dist.sum_f64(&mut v);
        self.loss_sum = v[0];
        self.labels = v[1] as u64;
        for (h, x) in self.hits.iter_mut().zip(&v[2..6]) {
            *h = *x as u64;
        }
        self.tokens = v[6] as u64;
    }
}

/// A live progress line on stderr when it is a terminal: phase, step, loss, tokens/s, ETA.
struct ProgressLine {
    live: bool,
    last: Option<Instant>,
    started: Instant,
}

impl ProgressLine {
    fn new() -> Self {
        use std::io::IsTerminal;
        ProgressLine { live: std::io::stderr().is_terminal(), last: None, started: Instant::now() }
    }
    fn draw(&mut self, phase: &str, step: u64, steps: u64, loss: f64, tokens: u64) {
        if !self.live || self.last.is_some_and(|t| t.elapsed().as_millis() < 200) {
            return;
        }
        self.last = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let eta = (steps - step) as f64 * secs / step.max(1) as f64;
        let width = 24;
        let filled = (step as usize * width) / steps.max(1) as usize;
        eprint!("\r{phase} [{}{}] step {step}/{steps}, loss {loss:.4}, {:.0} tokens/s, ETA {eta:.0} s   ", "=".repeat(filled), " ".repeat(width - filled), tokens as f64 / secs);
        let _ = std::io::stderr().flush();
    }
    fn clear(&self) {
        if self.live && self.last.is_some() {
            eprint!("\r{}\r", " ".repeat(100));
        }
    }
}

/// Token ids of every term in a salience list (each term with and without a leading space).
fn salience_ids(tok: &Tokenizer, path: &Path) -> Result<Vec<u32>> {
    let text = runtime::files::read_text(path)?;
    let mut ids = Vec::new();
    for term in text.lines().map(str::trim).filter(|t| !t.is_empty()) {
        ids.extend(tok.encode_plain(term)?.ids);
        ids.extend(tok.encode_plain(&format!(" {term}"))?.ids);
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(Error::file(path.display().to_string(), "no terms (expected one term per line)"));
    }
    Ok(ids)
}

/// The model to train, its config text and where its tokenizer lives.
struct Start<B: Backend> {
    model: ModernBert<B>,
    config_json: String,
    tokenizer_dir: PathBuf,
    tokenizer: Tokenizer,
}

fn start<B: Backend>(be: &B, c: &RunConfig, resume_from: Option<&Path>) -> Result<Start<B>> {
    let src = &c.model;
    let tokenizer_dir = src.tokenizer.clone().or_else(|| src.init.clone()).ok_or_else(|| Error::Input("[model]: a random model needs tokenizer = \"folder with tokenizer.json\"".into()))?;
    let tokenizer = Tokenizer::from_dir(&tokenizer_dir)?;
    let (config_path, weights_dir) = match (&src.init, &src.config) {
        (Some(dir), _) => (dir.join("config.json"), Some(dir.clone())),
        (None, Some(cfg)) => (cfg.clone(), None),
        (None, None) => unreachable!("validated"),
    };
    let config_json = runtime::files::read_text(&config_path)?;
    let mut config = ModernBertConfig::from_file(&config_path)?;
    config.architecture = Some(Architecture::MaskedLm);
    tokenizer.check_config(&runtime::ModelConfig::ModernBert(config.clone()))?;
    let model = match (resume_from, weights_dir) {
        (Some(ck), _) => ModernBert::load_trainable(be, config, &Checkpoint::open_dir(ck)?)?,
        (None, Some(dir)) => ModernBert::load_trainable(be, config, &ModelFolder::open(&dir)?.checkpoint)?,
        (None, None) => {
            let weights = runtime::init::RandomWeights::new(&config, Architecture::MaskedLm, 0, c.seed);
            ModernBert::load_trainable(be, config, &weights)?
        }
    };
    Ok(Start { model, config_json, tokenizer_dir, tokenizer })
}

fn mask_tokens(tok: &Tokenizer, vocab: usize) -> Result<MaskTokens> {
    let s = &tok.specials;
    let mask = s.mask.ok_or_else(|| Error::Input(format!("{}: the tokenizer has no mask token", tok.source())))?;
    let mut specials = vec![s.cls, s.sep, s.pad, mask];
    specials.extend(s.unk);
    Ok(MaskTokens { mask, specials, vocab: vocab.min(tok.vocab_size()) as u32 })
}

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue from the newest checkpoint under the output folder.
    pub resume: bool,
    /// Stop after this many optimizer steps of the whole run, as if killed (tests of resuming).
    pub stop_after: Option<u64>,
}

/// Run (or continue) a pretraining run in one process. `log` receives every metrics line.
pub fn run<B: Backend>(be: &B, c: &RunConfig, opts: &RunOptions, log: impl FnMut(&Metrics)) -> Result<TrainerState> {
    run_distributed(be, c, opts, &Dist::single(), log)
}

/// Run (or continue) a pretraining run as one rank of a data-parallel job (`dist.rs`): the same
/// steps as one process with the step's micro-batches dealt out over the ranks. On rank 0, `log`
/// receives every metrics line, and the metrics, plots, checkpoints and final model are written.
pub fn run_distributed<B: Backend>(be: &B, c: &RunConfig, opts: &RunOptions, dist: &Dist, mut log: impl FnMut(&Metrics)) -> Result<TrainerState> {
    let resume = opts.resume;
    let ck_root = c.output.join("checkpoints");
    let resume_from = if resume { checkpoint::latest(&ck_root)? } else { None };
    if resume && resume_from.is_none() {
        return Err(Error::Input(format!("nothing to resume: no checkpoint under {}", ck_root.display())));
    }
    if !resume && ck_root.exists() && checkpoint::latest(&ck_root)?.is_some() {
        return Err(Error::Input(format!("{} already holds checkpoints: resume the run to continue it, or choose another output", c.output.display())));
    }
    // Every rank must take up the same checkpoint (a shared file system may show ranks
    // different listings for a while).
    if dist.size() > 1 {
        let step = resume_from.as_deref().and_then(|d| d.file_name()).map_or(0.0, |n| n.to_string_lossy().trim_start_matches("step-").parse::<f64>().unwrap_or(-1.0));
        let mut agreed = [step, step * step];
        dist.sum_f64(&mut agreed);
        let n = dist.size() as f64;
        if agreed[0] != step * n || agreed[1] != step * step * n {
            return Err(Error::Input(format!(
                "the ranks see different newest checkpoints under {} (this rank: {}): wait for the shared file system to settle and start again",
                ck_root.display(),
                resume_from.as_deref().map_or("none".into(), |d| d.display().to_string())
            )));
        }
    }
    std::fs::create_dir_all(&c.output).map_err(|e| Error::Io { path: c.output.display().to_string(), source: e })?;
    let Start { mut model, config_json, tokenizer_dir, tokenizer } = start(be, c, resume_from.as_deref())?;
    let tokens = mask_tokens(&tokenizer, model.config.vocab_size)?;
    let mut opt = Optimizer::new(c.optimizer.clone());
    let mut state = match &resume_from {
        Some(dir) => {
            checkpoint::load_optimizer(be, dir, &mut opt)?;
            checkpoint::load_state(dir)?
        }
        None => TrainerState { mask_rng: c.seed ^ 0x6D61_736B, loader: LoaderState { seed: c.seed, ..Default::default() }, ..Default::default() },
    };
    // Rank 0 writes the metrics (JSONL, TensorBoard) and the plot.
    let mut run_log = if dist.is_root() { Some(RunLog::open(&c.output)?) } else { None };
    fn emit(run_log: &mut Option<RunLog>, m: &Metrics, log: &mut dyn FnMut(&Metrics)) -> Result<()> {
        if let Some(r) = run_log.as_mut() {
            r.write(m)?;
            log(m);
        }
        Ok(())
    }
    if dist.size() > 1 && c.phases.iter().any(|p| p.grad_accum < dist.size()) {
        let p = c.phases.iter().find(|p| p.grad_accum < dist.size()).expect("found above");
        return Err(Error::Input(format!(
            "phase \"{}\": grad_accum = {} micro-batches per step cannot be shared by {} ranks (each rank takes whole micro-batches): raise grad_accum to at least {} (a multiple keeps the ranks evenly loaded) or run fewer ranks",
            p.name,
            p.grad_accum,
            dist.size(),
            dist.size()
        )));
    }
    let params = crate::dist::parameter_shapes(be, &mut model);

    while state.phase < c.phases.len() {
        let phase = &c.phases[state.phase];
        let info = data::open(&phase.data)?;
        if info.vocab_size > model.config.vocab_size {
            return Err(Error::file(phase.data.join("dataset.json").display().to_string(), format!("tokenized with a vocabulary of {}, the model has {}", info.vocab_size, model.config.vocab_size)));
        }
        let mut loader = Loader::new(&phase.data, &info, false, state.loader)?;
        let selection = match &phase.salience {
            Some(s) => Selection::from_ids(salience_ids(&tokenizer, &s.terms)?, s.weight)?,
            None => Selection::Uniform,
        };
        let peak = phase.lr.unwrap_or(c.optimizer.lr);
        let mut meter = Meter { started: Some(Instant::now()), ..Default::default() };
        let mut progress = ProgressLine::new();
        let mut phase_tokens = 0u64;
        let mut steps_since_metrics = 0u64;
        while state.phase_step < phase.steps {
            let n = state.phase_step;
            let lr = phase.schedule.lr(n, phase.steps, peak);
            let rate = phase.mask_rate.at(n, phase.steps);
            // All micro-batches of the step are masked first: the loss is normalised by the
            // labelled tokens of all of them.
            let mut rng = Rng::new(state.mask_rng);
            let mut micro = Vec::with_capacity(phase.grad_accum);
            for _ in 0..phase.grad_accum {
                let seqs = loader.next_batch(phase.batch_tokens)?;
                micro.push(mask_batch(&seqs, rate, &tokens, &selection, &mut rng)?);
            }
            let labelled: usize = micro.iter().map(|m| m.labels.len()).sum();
            let mut grads = Grads::default();
            let mut step_tokens = 0u64;
            if labelled > 0 {
                // This rank's share of the step: micro-batch i on rank i mod ranks.
                for (i, m) in micro.iter().enumerate() {
                    if m.labels.is_empty() {
                        continue;
                    }
                    let n_tokens: usize = m.sequences.iter().map(Vec::len).sum();
                    step_tokens += n_tokens as u64;
                    if !dist.owns(i) {
                        continue;
                    }
                    let refs: Vec<&[u32]> = m.sequences.iter().map(Vec::as_slice).collect();
                    let batch = model.batch(be, &refs)?;
                    let ids = m.sequences.concat();
                    let mut micro_grads = Grads::default();
                    let out = forward_backward(be, &model, &batch, &ids, &Target::MaskedLm { rows: &m.rows, labels: &m.labels }, 1.0 / labelled as f32, &mut micro_grads)?;
                    grads.merge(be, micro_grads)?;
                    meter.add(out.loss_sum, &out.label_ranks, ids.len() as u64);
                }
            }
            crate::dist::all_reduce_grads(be, dist, &params, &mut grads)?;
            let stats = opt.step(be, &mut model, &grads, lr, false)?;
            state.mask_rng = rng.state();
            state.loader = loader.state;
            state.phase_step += 1;
            state.global_step += 1;
            state.tokens += step_tokens;
            phase_tokens += step_tokens;
            steps_since_metrics += 1;
            if dist.is_root() {
                progress.draw(&phase.name, state.phase_step, phase.steps, meter.loss_sum / meter.labels.max(1) as f64, phase_tokens);
            }
            if state.phase_step % c.metrics_every.max(1) == 0 || state.phase_step == phase.steps {
                progress.clear();
                let traffic = dist.take_traffic();
                meter.all_ranks(dist);
                let mut m = meter.metrics(&phase.name, state.phase_step, state.global_step, lr, rate, stats.grad_norm, state.tokens, "train");
                m.ranks = dist.size();
                m.allreduce_s_per_step = traffic.seconds / steps_since_metrics as f64;
                m.allreduce_bytes_per_step = traffic.bytes / steps_since_metrics;
                emit(&mut run_log, &m, &mut log)?;
                meter = Meter { started: Some(Instant::now()), ..Default::default() };
                steps_since_metrics = 0;
            }
            // Rank 0 evaluates (the others go on to the next step and wait for it there).
            if c.eval_every > 0 && state.phase_step % c.eval_every == 0 && !info.eval.is_empty() && dist.is_root() {
                progress.clear();
                let m = evaluate(be, &model, &phase.data, &info, phase.batch_tokens, c.eval_batches, &tokens, c.seed)?;
                let mut m = m.metrics(&phase.name, state.phase_step, state.global_step, lr, 0.15, 0.0, state.tokens, "eval");
                m.ranks = dist.size();
                emit(&mut run_log, &m, &mut log)?;
                if let Some(r) = run_log.as_ref() {
                    r.plot()?;
                }
            }
            let last = state.phase_step == phase.steps;
            if last {
                state.phase += 1;
                state.phase_step = 0;
                state.loader = LoaderState { seed: c.seed.wrapping_add(state.phase as u64), ..Default::default() };
            }
            if dist.is_root() && (last || (c.checkpoint_every > 0 && state.global_step % c.checkpoint_every == 0)) {
                let dir = ck_root.join(format!("step-{:08}", state.global_step));
                std::fs::create_dir_all(&ck_root).map_err(|e| Error::Io { path: ck_root.display().to_string(), source: e })?;
                checkpoint::save(be, &dir, &config_json, Some(&tokenizer_dir), &mut model, Some(&opt), Some(&state))?;
            }
            if last {
                break;
            }
            if opts.stop_after.is_some_and(|k| state.global_step >= k) {
                return Ok(state);
            }
        }
        if opts.stop_after.is_some_and(|k| state.global_step >= k) {
            return Ok(state);
        }
    }
    // The final model, as a plain Hugging Face folder, and the run's curves.
    if let Some(r) = run_log.as_ref() {
        let final_dir = c.output.join("final");
        checkpoint::save(be, &final_dir, &config_json, Some(&tokenizer_dir), &mut model, None, None)?;
        r.plot()?;
    }
    Ok(state)
}

/// The model a run starts from (its `init` folder, or random weights from its seed) and the
/// run's tokenizer: the baseline of a run's held-out report.
pub fn initial_model<B: Backend>(be: &B, c: &RunConfig) -> Result<(ModernBert<B>, Tokenizer)> {
    let s = start(be, c, None)?;
    Ok((s.model, s.tokenizer))
}

/// A model folder's masked-LM model and tokenizer.
pub fn load_masked_lm<B: Backend>(be: &B, dir: &Path) -> Result<(ModernBert<B>, Tokenizer)> {
    let folder = ModelFolder::open(dir)?;
    let tokenizer = folder.tokenizer.ok_or_else(|| Error::Input(format!("{}: no tokenizer.json", dir.display())))?;
    let mut config = folder.config.modernbert("masked-LM training")?.clone();
    config.architecture = Some(Architecture::MaskedLm);
    // Inference storage: the backend's dtype decides (packed f32, bf16, int8 products).
    Ok((ModernBert::load(be, config, &folder.checkpoint)?, tokenizer))
}

/// Masked-token loss and top-1/5/10/25 accuracy on the whole eval split of a dataset at 15%
/// masking (the positions fixed by `seed`: the same for every model).
pub fn heldout_metrics<B: Backend>(be: &B, model: &ModernBert<B>, tokenizer: &Tokenizer, data: &Path, batch_tokens: usize, seed: u64) -> Result<Metrics> {
    let info = data::open(data)?;
    if info.eval.is_empty() {
        return Err(Error::Input(format!("{}: the dataset has no eval split (prepare it with an eval input or an eval fraction)", data.display())));
    }
    let tokens = mask_tokens(tokenizer, model.config.vocab_size)?;
    let m = evaluate(be, model, data, &info, batch_tokens.max(info.max_seq_len), usize::MAX, &tokens, seed)?;
    Ok(m.metrics("heldout", 0, 0, 0.0, 0.15, 0.0, m.tokens, "eval"))
}

/// Held-out masked-LM loss and top-k accuracy at 15% masking, on the first `batches`
/// micro-batches of the eval split (the same positions every time: a fixed seed).
fn evaluate<B: Backend>(be: &B, model: &ModernBert<B>, dir: &Path, info: &data::DatasetInfo, budget: usize, batches: usize, tokens: &MaskTokens, seed: u64) -> Result<Meter> {
    let mut loader = Loader::new(dir, info, true, LoaderState::default())?;
    let mut rng = Rng::new(seed ^ 0xE7A1);
    let mut meter = Meter { started: Some(Instant::now()), ..Default::default() };
    let total = loader.total_sequences();
    let mut seen = 0u64;
    for _ in 0..batches {
        if seen >= total {
            break;
        }
        let seqs = loader.next_batch(budget)?;
        seen += seqs.len() as u64;
        let m = mask_batch(&seqs, 0.15, tokens, &Selection::Uniform, &mut rng)?;
        if m.labels.is_empty() {
            continue;
        }
        let refs: Vec<&[u32]> = m.sequences.iter().map(Vec::as_slice).collect();
        let batch = model.batch(be, &refs)?;
        let hidden = model.encode(be, &batch, None)?;
        let rows = be.gather_rows(&hidden, &be.upload_ids(&m.rows)?)?;
        let logits = model.mlm_logits(be, &rows)?;
        let (loss_sum, ranks) = loss_and_ranks(be, &logits, &be.upload_ids(&m.labels)?)?;
        meter.add(loss_sum, &ranks, m.sequences.iter().map(|s| s.len() as u64).sum());
    }
    Ok(meter)
}
