//! Fine-tuning of the task heads from any masked-LM (or task) checkpoint: token classification
//! (de-identification: BIO labels on the first sub-token of each word, from span-annotated
//! JSONL with character offsets) and sequence classification, of ModernBERT and classic BERT
//! models alike. ModernBERT keeps its pretrained prediction head (`head.*`); BERT classifies the
//! hidden states (tokens) or its tanh pooler (sequences; the pretrained `bert.pooler` when the
//! checkpoint has one) and drops the MLM head (`cls.*`). A new `classifier` is initialised with
//! the family's initializer. Each epoch is evaluated on the validation split (per-label
//! precision, recall and F1); the best epoch by micro-F1 (token) or macro-F1 (sequence) is saved
//! as a Hugging Face folder.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use kernels::Backend;
use runtime::config::{Architecture, Pooling};
use runtime::folder::ModelFolder;
use runtime::init::{RandomWeights, Rng};
use runtime::tokenize::Tokenizer;
use runtime::weights::{Checkpoint, WeightSource};
use runtime::{Model, ModelConfig};
use serde::Serialize;

use crate::backward::{forward_backward, Grads, Target};
use crate::dist::Dist;
use crate::checkpoint;
use crate::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use crate::schedule::Schedule;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    TokenClassification,
    SequenceClassification,
}

#[derive(Clone, Debug)]
pub struct FinetuneOptions {
    pub task: Task,
    pub model: PathBuf,
    pub train: PathBuf,
    pub eval: PathBuf,
    pub output: PathBuf,
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Sequences per optimizer step.
    pub batch_size: usize,
    /// Micro-batches each step's batch is cut into, their gradients summed (the same step in
    /// less memory; over MPI, rank r computes micro-batches m with m mod ranks = r). Default:
    /// 1 in one process, the number of ranks in a data-parallel job.
    pub grad_accum: Option<usize>,
    pub max_seq_len: usize,
    pub warmup_ratio: f64,
    pub seed: u64,
    /// CSV inputs (sequence classification).
    pub text_column: Option<String>,
    pub label_column: Option<String>,
}

impl FinetuneOptions {
    /// BioClinical ModernBERT's fine-tuning recipe: lr 2e-5, weight decay 0.01, 3 epochs, batch 16.
    pub fn new(task: Task, model: PathBuf, train: PathBuf, eval: PathBuf, output: PathBuf) -> Self {
        FinetuneOptions {
            task,
            model,
            train,
            eval,
            output,
            epochs: 3,
            lr: 2e-5,
            weight_decay: 0.01,
            batch_size: 16,
            grad_accum: None,
            max_seq_len: 512,
            warmup_ratio: 0.0,
            seed: 42,
            text_column: None,
            label_column: None,
        }
    }
}

/// One training example: token ids and what is labelled.
#[derive(Clone, Debug)]
struct Example {
    ids: Vec<u32>,
    /// Token classification: (position, label id) of each word's first sub-token.
    tokens: Vec<(u32, u32)>,
    /// Sequence classification: the label id.
    label: u32,
}

/// Precision, recall and F1 of one label.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Gold items of this label (entities, or documents).
    pub support: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub eval_loss: f64,
    pub labels: Vec<LabelScore>,
    /// Token classification: micro-F1 over entities; sequence classification: macro-F1.
    pub f1: f64,
    /// Sequence classification: accuracy; token classification: word-level tag accuracy.
    pub accuracy: f64,
}

/// A JSONL file's objects, with their line numbers.
fn jsonl(path: &Path) -> Result<Vec<(usize, serde_json::Value)>> {
    let text = crate::data::read_text(path)?;
    let name = path.display().to_string();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::file(&name, format!("line {}: not valid JSON: {e}", n + 1)))?;
        out.push((n + 1, v));
    }
    if out.is_empty() {
        return Err(Error::file(name, "no examples"));
    }
    Ok(out)
}

/// A span-annotated document: text and (start, end, category) in character offsets.
#[derive(Debug)]
pub struct SpanDoc {
    pub text: String,
    pub spans: Vec<(usize, usize, String)>,
}

/// Span-annotated documents of a JSONL file (`{"text", "spans": [{"start", "end", "label"}]}`),
/// every span checked to lie inside its text.
pub fn span_docs(path: &Path) -> Result<Vec<SpanDoc>> {
    let name = path.display().to_string();
    let mut docs = Vec::new();
    for (line, v) in jsonl(path)? {
        let at = |m: &str| Error::file(&name, format!("line {line}: {m}"));
        let text = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| at("expected a string field \"text\""))?.to_string();
        let chars = text.chars().count();
        let mut spans = Vec::new();
        for (k, s) in v.get("spans").and_then(|s| s.as_array()).ok_or_else(|| at("expected an array field \"spans\" (objects with start, end, label)"))?.iter().enumerate() {
            let num = |f: &str| s.get(f).and_then(|x| x.as_u64()).map(|x| x as usize);
            let (Some(start), Some(end)) = (num("start"), num("end")) else { return Err(at(&format!("spans[{k}]: expected integer \"start\" and \"end\" (character offsets)"))) };
            let label = s.get("label").and_then(|x| x.as_str()).ok_or_else(|| at(&format!("spans[{k}]: expected a string \"label\"")))?;
            if start >= end || end > chars {
                return Err(at(&format!("spans[{k}]: [{start}, {end}) is not a range inside the text of {chars} characters")));
            }
            // A category; a BIO prefix given by mistake is dropped.
            let label = label.strip_prefix("B-").or_else(|| label.strip_prefix("I-")).unwrap_or(label);
            spans.push((start, end, label.to_string()));
        }
        docs.push(SpanDoc { text, spans });
    }
    Ok(docs)
}

/// (text, label) pairs: JSONL with "text" and "label", or CSV with the given columns.
fn labelled_texts(path: &Path, text_column: Option<&str>, label_column: Option<&str>) -> Result<Vec<(String, String)>> {
    let name = path.display().to_string();
    if path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        let (tc, lc) = (text_column.unwrap_or("text"), label_column.unwrap_or("label"));
        let mut r = csv::Reader::from_path(path).map_err(|e| Error::file(&name, e.to_string()))?;
        let headers = r.headers().map_err(|e| Error::file(&name, e.to_string()))?.clone();
        let col = |c: &str| headers.iter().position(|h| h == c).ok_or_else(|| Error::file(&name, format!("no column \"{c}\" (columns: {})", headers.iter().collect::<Vec<_>>().join(", "))));
        let (ti, li) = (col(tc)?, col(lc)?);
        let mut out = Vec::new();
        for (n, rec) in r.records().enumerate() {
            let rec = rec.map_err(|e| Error::file(&name, format!("row {}: {e}", n + 2)))?;
            out.push((rec.get(ti).unwrap_or("").to_string(), rec.get(li).unwrap_or("").to_string()));
        }
        return Ok(out);
    }
    jsonl(path)?
        .into_iter()
        .map(|(line, v)| {
            let text = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| Error::file(&name, format!("line {line}: expected a string field \"text\"")))?;
            let label = match v.get("label") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => return Err(Error::file(&name, format!("line {line}: expected a field \"label\" (string or number)"))),
            };
            Ok((text.to_string(), label))
        })
        .collect()
}

/// BIO label of each word of a tokenized text, from character spans: a word is in a span if
/// they overlap; B on the span's first word.
fn word_tags(text: &str, enc: &runtime::tokenize::Encoded, spans: &[(usize, usize, String)]) -> HashMap<u32, String> {
    // Byte offset → character offset.
    let mut char_at = vec![0usize; text.len() + 1];
    let mut c = 0;
    for (b, ch) in text.char_indices() {
        for k in 0..ch.len_utf8() {
            char_at[b + k] = c;
        }
        c += 1;
    }
    char_at[text.len()] = c;
    let mut words: Vec<(u32, usize, usize)> = Vec::new(); // word, char start, char end
    for (t, w) in enc.words.iter().enumerate() {
        let Some(w) = *w else { continue };
        let (a, b) = enc.offsets[t];
        let (a, b) = (char_at[a.min(text.len())], char_at[b.min(text.len())]);
        match words.last_mut() {
            Some(last) if last.0 == w => last.2 = last.2.max(b),
            _ => words.push((w, a, b)),
        }
    }
    let mut tags = HashMap::new();
    for (start, end, label) in spans {
        let mut first = true;
        for &(w, a, b) in &words {
            // Leading whitespace inside a token's offsets does not make it part of the span.
            let a = a + text.chars().skip(a).take(b.saturating_sub(a)).take_while(|c| c.is_whitespace()).count();
            if a < *end && b > *start {
                tags.entry(w).or_insert_with(|| format!("{}-{label}", if first { "B" } else { "I" }));
                first = false;
            }
        }
    }
    tags
}

/// Cut a tokenized document into `[CLS] … [SEP]` windows of at most `max_len` tokens, with the
/// labels of each word's first sub-token.
fn token_examples(tok: &Tokenizer, doc: &SpanDoc, labels: &HashMap<String, u32>, max_len: usize) -> Result<Vec<Example>> {
    let enc = tok.encode_plain(&doc.text)?;
    let tags = word_tags(&doc.text, &enc, &doc.spans);
    let o = labels["O"];
    let body = max_len.saturating_sub(2).max(1);
    let mut out = Vec::new();
    for start in (0..enc.ids.len().max(1)).step_by(body) {
        let end = (start + body).min(enc.ids.len());
        let mut ids = vec![tok.specials.cls];
        let mut tokens = Vec::new();
        for t in start..end {
            let first_of_word = enc.words[t].is_some() && (t == 0 || enc.words[t - 1] != enc.words[t]);
            if first_of_word {
                let tag = enc.words[t].and_then(|w| tags.get(&w));
                let id = match tag {
                    Some(tag) => *labels.get(tag).ok_or_else(|| Error::Input(format!("label {tag} is not among the model's labels")))?,
                    None => o,
                };
                tokens.push((ids.len() as u32, id));
            }
            ids.push(enc.ids[t]);
        }
        ids.push(tok.specials.sep);
        out.push(Example { ids, tokens, label: 0 });
    }
    Ok(out)
}

/// Entities (start word, end word, category) of a BIO sequence (an I- after O or another
/// category opens an entity, as seqeval does by default).
fn entities(tags: &[&str]) -> BTreeSet<(usize, usize, String)> {
    let mut out = BTreeSet::new();
    let mut open: Option<(usize, String)> = None;
    for (i, tag) in tags.iter().chain(std::iter::once(&"O")).enumerate() {
        let (kind, cat) = match tag.split_once('-') {
            Some((k, c)) => (k, c),
            None => ("O", ""),
        };
        let continues = kind == "I" && open.as_ref().is_some_and(|(_, c)| c == cat);
        if !continues {
            if let Some((s, c)) = open.take() {
                out.insert((s, i, c));
            }
            if kind == "B" || kind == "I" {
                open = Some((i, cat.to_string()));
            }
        }
    }
    out
}

fn scores(tp: &HashMap<String, u64>, pred: &HashMap<String, u64>, gold: &HashMap<String, u64>, names: &[String]) -> Vec<LabelScore> {
    names
        .iter()
        .map(|l| {
            let (t, p, g) = (*tp.get(l).unwrap_or(&0) as f64, *pred.get(l).unwrap_or(&0) as f64, *gold.get(l).unwrap_or(&0));
            let precision = if p > 0.0 { t / p } else { 0.0 };
            let recall = if g > 0 { t / g as f64 } else { 0.0 };
            let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
            LabelScore { label: l.clone(), precision, recall, f1, support: g }
        })
        .collect()
}

/// A checkpoint with a fresh classifier where it has none (ModernBERT's initializer), read
/// under the names a task model expects.
struct WithNewClassifier<'a> {
    ckpt: &'a Checkpoint,
    fresh: RandomWeights,
    /// The encoder's prefix in task checkpoints (`model.` or `bert.`).
    prefix: &'static str,
    /// The checkpoint is a bare encoder (no prefix): task names map onto it.
    bare: bool,
    /// Tensors the task model does not have (an MLM decoder, BERT's MLM head; BERT's pooler in
    /// a token classifier), by name prefix.
    hidden: Vec<String>,
    /// What may be freshly initialised when the checkpoint lacks it (the classifier; ModernBERT's
    /// prediction head, BERT's pooler), by name prefix; any other missing tensor is an error.
    fresh_allowed: Vec<&'static str>,
}

impl WithNewClassifier<'_> {
    fn stored(&self, name: &str) -> Option<String> {
        if self.ckpt.contains(name) {
            return Some(name.to_string());
        }
        let bare = name.strip_prefix(self.prefix)?;
        (self.bare && self.ckpt.contains(bare)).then(|| bare.to_string())
    }
}

impl WeightSource for WithNewClassifier<'_> {
    fn contains(&self, name: &str) -> bool {
        !self.hidden.iter().any(|h| name.starts_with(h.as_str()))
            && (self.stored(name).is_some() || (self.fresh_allowed.iter().any(|p| name.starts_with(p)) && self.fresh.contains(name)))
    }
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        match self.stored(name) {
            Some(n) => self.ckpt.get(&n).map(|t| t.shape.to_vec()),
            None if self.contains(name) => self.fresh.shape_of(name),
            None => None,
        }
    }
    fn f32(&self, name: &str, shape: &[usize]) -> runtime::Result<Vec<f32>> {
        match self.stored(name) {
            Some(n) => self.ckpt.f32(&n, shape),
            None if self.contains(name) => self.fresh.f32(name, shape),
            None => Err(self.missing(name)),
        }
    }
    fn missing(&self, name: &str) -> runtime::Error {
        self.ckpt.missing(name)
    }
    fn location(&self, name: &str) -> String {
        match self.stored(name) {
            Some(n) => self.ckpt.location(&n),
            None => "new classifier (random initialisation)".into(),
        }
    }
}

/// The config.json of the fine-tuned model: the source's, with the task's architecture and
/// labels.
fn task_config(source: &str, task: Task, labels: &[String], bert: bool) -> Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(source).map_err(|e| Error::Input(format!("config.json: {e}")))?;
    let arch = match (task, bert) {
        (Task::TokenClassification, false) => "ModernBertForTokenClassification",
        (Task::SequenceClassification, false) => "ModernBertForSequenceClassification",
        (Task::TokenClassification, true) => "BertForTokenClassification",
        (Task::SequenceClassification, true) => "BertForSequenceClassification",
    };
    let obj = v.as_object_mut().ok_or_else(|| Error::Input("config.json: expected an object".into()))?;
    obj.insert("architectures".into(), serde_json::json!([arch]));
    obj.insert("id2label".into(), serde_json::Value::Object(labels.iter().enumerate().map(|(i, l)| (i.to_string(), serde_json::json!(l))).collect()));
    obj.insert("label2id".into(), serde_json::Value::Object(labels.iter().enumerate().map(|(i, l)| (l.clone(), serde_json::json!(i))).collect()));
    obj.remove("num_labels");
    Ok(serde_json::to_string_pretty(&v).expect("serialisable"))
}

/// What a fine-tuning run produced.
pub struct FinetuneResult {
    pub labels: Vec<String>,
    pub epochs: Vec<EpochReport>,
    /// Index into `epochs` of the saved model.
    pub best: usize,
    /// Sequence classification: documents longer than max_seq_len, truncated (and counted).
    pub truncated: usize,
}

pub fn finetune<B: Backend>(be: &B, o: &FinetuneOptions, log: impl FnMut(&EpochReport)) -> Result<FinetuneResult> {
    finetune_distributed(be, o, &Dist::single(), log)
}

/// Fine-tune as one rank of a data-parallel job (`dist.rs`): every rank shuffles and batches
/// the same way, computes its micro-batches of each step, and applies the summed gradients.
/// Rank 0 evaluates, logs, and writes the model and `eval_results.json`; the other ranks return
/// no epochs.
pub fn finetune_distributed<B: Backend>(be: &B, o: &FinetuneOptions, dist: &Dist, mut log: impl FnMut(&EpochReport)) -> Result<FinetuneResult> {
    if o.epochs == 0 || o.batch_size == 0 || o.max_seq_len < 3 || o.grad_accum == Some(0) {
        return Err(Error::Input("epochs, the batch size and grad_accum must be at least 1, the longest sequence at least 3 tokens".into()));
    }
    let grad_accum = o.grad_accum.unwrap_or(dist.size());
    if grad_accum < dist.size() {
        return Err(Error::Input(format!(
            "--grad-accum {grad_accum}: each step's batch is cut into {grad_accum} micro-batches, which {} ranks cannot share (each rank takes whole micro-batches): give at least {}",
            dist.size(),
            dist.size()
        )));
    }
    let folder = ModelFolder::open(&o.model)?;
    let tok = folder.tokenizer.as_ref().ok_or_else(|| Error::Input(format!("{}: no tokenizer (tokenizer.json, vocab.txt or vocab.json + merges.txt) in the model folder", o.model.display())))?;
    let config_text = runtime::files::read_text(&o.model.join("config.json"))?;
    let arch = match o.task {
        Task::TokenClassification => Architecture::TokenClassification,
        Task::SequenceClassification => Architecture::SequenceClassification,
    };
    let max_len = o.max_seq_len.min(folder.config.context());
    // Labels: the checkpoint's own if it already classifies, else from the training data.
    let existing = if folder.checkpoint.contains("classifier.weight") { folder.config.labels().to_vec() } else { Vec::new() };
    let (train_docs, eval_docs, train_texts, eval_texts);
    let labels: Vec<String> = match o.task {
        Task::TokenClassification => {
            train_docs = span_docs(&o.train)?;
            eval_docs = span_docs(&o.eval)?;
            train_texts = Vec::new();
            eval_texts = Vec::new();
            if !existing.is_empty() {
                existing
            } else {
                let cats: BTreeSet<&str> = train_docs.iter().flat_map(|d| d.spans.iter().map(|s| s.2.as_str())).collect();
                std::iter::once("O".to_string()).chain(cats.iter().flat_map(|c| [format!("B-{c}"), format!("I-{c}")])).collect()
            }
        }
        Task::SequenceClassification => {
            train_texts = labelled_texts(&o.train, o.text_column.as_deref(), o.label_column.as_deref())?;
            eval_texts = labelled_texts(&o.eval, o.text_column.as_deref(), o.label_column.as_deref())?;
            train_docs = Vec::new();
            eval_docs = Vec::new();
            if !existing.is_empty() {
                existing
            } else {
                train_texts.iter().map(|(_, l)| l.clone()).collect::<BTreeSet<_>>().into_iter().collect()
            }
        }
    };
    if labels.len() < 2 {
        return Err(Error::Input(format!("{}: found {} label(s); classification needs at least 2", o.train.display(), labels.len())));
    }
    let label_id: HashMap<String, u32> = labels.iter().enumerate().map(|(i, l)| (l.clone(), i as u32)).collect();
    if o.task == Task::TokenClassification && !label_id.contains_key("O") {
        return Err(Error::Input("token classification needs an \"O\" label".into()));
    }
    let mut truncated = 0;
    let mut examples = |task: Task, docs: &[SpanDoc], texts: &[(String, String)], file: &Path| -> Result<Vec<Example>> {
        match task {
            Task::TokenClassification => Ok(docs.iter().map(|d| token_examples(tok, d, &label_id, max_len)).collect::<Result<Vec<_>>>()?.concat()),
            Task::SequenceClassification => texts
                .iter()
                .enumerate()
                .map(|(n, (text, label))| {
                    let mut ids = tok.encode(text)?.ids;
                    if ids.len() > max_len {
                        let sep = *ids.last().unwrap();
                        ids.truncate(max_len - 1);
                        ids.push(sep);
                        truncated += 1;
                    }
                    let label = *label_id.get(label).ok_or_else(|| Error::file(file.display().to_string(), format!("example {}: label \"{label}\" is not one of {labels:?}", n + 1)))?;
                    Ok(Example { ids, tokens: Vec::new(), label })
                })
                .collect(),
        }
    };
    let train = examples(o.task, &train_docs, &train_texts, &o.train)?;
    let eval = examples(o.task, &eval_docs, &eval_texts, &o.eval)?;

    let (source, config, pooling) = match &folder.config {
        ModelConfig::ModernBert(c) => {
            let mut c = c.clone();
            c.architecture = Some(arch);
            c.labels = labels.clone();
            let source = WithNewClassifier {
                ckpt: &folder.checkpoint,
                fresh: RandomWeights::new(&c, arch, labels.len(), o.seed),
                prefix: "model.",
                bare: !folder.checkpoint.contains("model.embeddings.tok_embeddings.weight"),
                hidden: vec!["decoder.".into()],
                fresh_allowed: vec!["classifier.", "head."],
            };
            let pooling = c.classifier_pooling;
            (source, ModelConfig::ModernBert(c), pooling)
        }
        ModelConfig::Bert(c) => {
            let mut c = c.clone();
            c.architecture = Some(arch);
            c.labels = labels.clone();
            let mut hidden = vec!["cls.".to_string()];
            if o.task == Task::TokenClassification {
                hidden.extend(["bert.pooler.".to_string(), "pooler.".to_string()]);
            }
            let source = WithNewClassifier {
                ckpt: &folder.checkpoint,
                fresh: RandomWeights::bert(&c, arch, labels.len(), o.seed),
                prefix: "bert.",
                bare: !folder.checkpoint.contains("bert.embeddings.word_embeddings.weight"),
                hidden,
                fresh_allowed: vec!["classifier.", "bert.pooler."],
            };
            (source, ModelConfig::Bert(c), Pooling::Cls)
        }
    };
    let bert = matches!(config, ModelConfig::Bert(_));
    let mut model = Model::load_trainable(be, config, &source)?;
    let params = crate::dist::parameter_shapes(be, &mut *model);
    let mut board = if dist.is_root() {
        let dir = o.output.join("tensorboard");
        Some(syntaxdot_summary::SummaryWriter::from_prefix(dir.join("finetune")).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?)
    } else {
        None
    };

    let steps_per_epoch = train.len().div_ceil(o.batch_size) as u64;
    let total = steps_per_epoch * o.epochs as u64;
    let schedule = Schedule::Linear { warmup: (o.warmup_ratio * total as f64).round() as u64 };
    let mut opt = Optimizer::new(OptimizerConfig { kind: OptimizerKind::AdamW, lr: o.lr, betas: (0.9, 0.999), eps: 1e-8, weight_decay: o.weight_decay, grad_clip: Some(1.0) });
    let out_config = task_config(&config_text, o.task, &labels, bert)?;
    let mut rng = Rng::new(o.seed);
    let mut step = 0u64;
    let mut reports: Vec<EpochReport> = Vec::new();
    let mut best = 0;
    for epoch in 1..=o.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let (mut loss_sum, mut loss_n) = (0f64, 0usize);
        for chunk in order.chunks(o.batch_size) {
            let batch: Vec<&Example> = chunk.iter().map(|&i| &train[i]).collect();
            // What the loss is normalised by: the labelled items of the whole step.
            let items = |b: &[&Example]| match o.task {
                Task::TokenClassification => b.iter().map(|e| e.tokens.len()).sum(),
                Task::SequenceClassification => b.len(),
            };
            let n_items = items(&batch);
            let lr = schedule.lr(step, total, o.lr);
            step += 1;
            if n_items == 0 {
                continue;
            }
            let mut grads = Grads::default();
            // This rank's micro-batches of the step (all of them in one process).
            for (m, micro) in batch.chunks(batch.len().div_ceil(grad_accum)).enumerate() {
                if !dist.owns(m) || items(micro) == 0 {
                    continue;
                }
                let (seqs, rows, labels_v) = flatten(micro);
                let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
                let b = model.batch(be, &refs)?;
                let ids = seqs.concat();
                let seq_labels: Vec<u32> = micro.iter().map(|e| e.label).collect();
                let target = match o.task {
                    Task::TokenClassification => Target::Tokens { rows: &rows, labels: &labels_v },
                    Task::SequenceClassification => Target::Sequences { labels: &seq_labels, pooling },
                };
                let mut micro_grads = Grads::default();
                let out = forward_backward(be, &model, &b, &ids, &target, 1.0 / n_items as f32, &mut micro_grads)?;
                grads.merge(be, micro_grads)?;
                loss_sum += out.loss_sum;
            }
            loss_n += n_items;
            crate::dist::all_reduce_grads(be, dist, &params, &mut grads)?;
            opt.step(be, &mut *model, &grads, lr, false)?;
        }
        let mut summed = [loss_sum];
        dist.sum_f64(&mut summed);
        let loss_sum = summed[0];
        if !dist.is_root() {
            continue;
        }
        let mut report = evaluate(be, &model, o.task, &eval, &labels, o.batch_size)?;
        report.epoch = epoch;
        report.train_loss = loss_sum / loss_n.max(1) as f64;
        if let Some(w) = board.as_mut() {
            let e = epoch as i64;
            for (tag, v) in [("train/loss", report.train_loss), ("eval/loss", report.eval_loss), ("eval/f1", report.f1), ("eval/accuracy", report.accuracy)] {
                w.write_scalar(tag, e, v as f32).map_err(|err| Error::Io { path: o.output.join("tensorboard").display().to_string(), source: err })?;
            }
        }
        log(&report);
        if reports.is_empty() || report.f1 > reports[best].f1 {
            best = reports.len();
            checkpoint::save(be, &o.output, &out_config, Some(&o.model), &mut *model, None, None)?;
        }
        reports.push(report);
    }
    if !dist.is_root() {
        return Ok(FinetuneResult { labels, epochs: Vec::new(), best: 0, truncated });
    }
    let summary = o.output.join("eval_results.json");
    crate::data::write_atomic(&summary, &serde_json::to_vec_pretty(&serde_json::json!({"best_epoch": reports[best].epoch, "epochs": reports})).expect("serialisable"))?;
    Ok(FinetuneResult { labels, epochs: reports, best, truncated })
}

/// Sequences, labelled rows (offsets into the batch) and their labels.
fn flatten(batch: &[&Example]) -> (Vec<Vec<u32>>, Vec<u32>, Vec<u32>) {
    let (mut seqs, mut rows, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0u32;
    for e in batch {
        for &(pos, label) in &e.tokens {
            rows.push(offset + pos);
            labels.push(label);
        }
        offset += e.ids.len() as u32;
        seqs.push(e.ids.clone());
    }
    (seqs, rows, labels)
}

/// Loss and per-label scores on the validation examples.
fn evaluate<B: Backend>(be: &B, model: &Model<B>, task: Task, eval: &[Example], labels: &[String], batch_size: usize) -> Result<EpochReport> {
    let (mut loss_sum, mut loss_n) = (0f64, 0usize);
    let (mut tp, mut pred, mut gold): (HashMap<String, u64>, HashMap<String, u64>, HashMap<String, u64>) = Default::default();
    let (mut correct, mut seen) = (0u64, 0u64);
    for chunk in eval.chunks(batch_size.max(1)) {
        let (seqs, rows, gold_ids) = flatten(&chunk.iter().collect::<Vec<_>>());
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let b = model.batch(be, &refs)?;
        let hidden = model.encode(be, &b, None)?;
        let (logits, gold_ids) = match task {
            Task::TokenClassification => {
                if rows.is_empty() {
                    continue;
                }
                (model.token_logits(be, &be.gather_rows(&hidden, &be.upload_ids(&rows)?)?)?, gold_ids)
            }
            Task::SequenceClassification => (model.sequence_logits(be, &hidden, &b, None)?, chunk.iter().map(|e| e.label).collect()),
        };
        let per_row = kernels::block_on(be.read(&be.cross_entropy(&logits, &be.upload_ids(&gold_ids)?)?))?;
        loss_sum += per_row.iter().map(|&v| v as f64).sum::<f64>();
        loss_n += per_row.len();
        let values = kernels::block_on(be.read(&logits))?;
        let c = labels.len();
        let predicted: Vec<u32> = values.chunks(c).map(|r| r.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32).collect();
        correct += predicted.iter().zip(&gold_ids).filter(|(a, b)| a == b).count() as u64;
        seen += gold_ids.len() as u64;
        match task {
            Task::TokenClassification => {
                // Entities per example (word sequences), compared as (start, end, category).
                let mut at = 0;
                for e in chunk {
                    let n = e.tokens.len();
                    let g: Vec<&str> = gold_ids[at..at + n].iter().map(|&i| labels[i as usize].as_str()).collect();
                    let p: Vec<&str> = predicted[at..at + n].iter().map(|&i| labels[i as usize].as_str()).collect();
                    at += n;
                    let (ge, pe) = (entities(&g), entities(&p));
                    for x in &ge {
                        *gold.entry(x.2.clone()).or_default() += 1;
                    }
                    for x in &pe {
                        *pred.entry(x.2.clone()).or_default() += 1;
                        if ge.contains(x) {
                            *tp.entry(x.2.clone()).or_default() += 1;
                        }
                    }
                }
            }
            Task::SequenceClassification => {
                for (&p, &g) in predicted.iter().zip(&gold_ids) {
                    *gold.entry(labels[g as usize].clone()).or_default() += 1;
                    *pred.entry(labels[p as usize].clone()).or_default() += 1;
                    if p == g {
                        *tp.entry(labels[g as usize].clone()).or_default() += 1;
                    }
                }
            }
        }
    }
    let names: Vec<String> = match task {
        Task::TokenClassification => labels.iter().filter_map(|l| l.strip_prefix("B-").map(str::to_string)).collect(),
        Task::SequenceClassification => labels.to_vec(),
    };
    let per_label = scores(&tp, &pred, &gold, &names);
    let f1 = match task {
        Task::TokenClassification => {
            let (t, p, g) = (tp.values().sum::<u64>() as f64, pred.values().sum::<u64>() as f64, gold.values().sum::<u64>() as f64);
            let (pr, re) = (if p > 0.0 { t / p } else { 0.0 }, if g > 0.0 { t / g } else { 0.0 });
            if pr + re > 0.0 { 2.0 * pr * re / (pr + re) } else { 0.0 }
        }
        Task::SequenceClassification => per_label.iter().map(|s| s.f1).sum::<f64>() / per_label.len().max(1) as f64,
    };
    Ok(EpochReport {
        epoch: 0,
        train_loss: 0.0,
        eval_loss: loss_sum / loss_n.max(1) as f64,
        labels: per_label,
        f1,
        accuracy: correct as f64 / seen.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::entities;

    #[test]
    fn bio_entities_like_seqeval() {
        let e = entities(&["B-NAME", "I-NAME", "O", "I-DATE", "I-DATE", "B-DATE", "B-NAME", "I-DATE"]);
        let v: Vec<(usize, usize, &str)> = e.iter().map(|(a, b, c)| (*a, *b, c.as_str())).collect();
        assert_eq!(v, vec![(0, 2, "NAME"), (3, 5, "DATE"), (5, 6, "DATE"), (6, 7, "NAME"), (7, 8, "DATE")]);
    }
}
