//! One worker thread per model: it owns the backend and the model, takes requests from a bounded
//! queue shared by every connection, packs what is waiting into the same unpadded token-budget
//! batches `runtime-cli embed` and `deid` build, and answers each request with its own rows.
//!
//! A request whose client has gone (its answer channel closed) or whose deadline has passed is
//! dropped before any work is done for it. A failure (an error or a panic) inside a batch answers
//! every request of that batch with the error; the worker goes on with the next batch.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kernels::Backend;
use runtime::config::{Architecture, Pooling};
use runtime::deid::LabelScheme;
use runtime::folder::sentence_transformers_pooling;
use runtime::pipeline::Settings;
use runtime::tokenize::{Encoded, Tokenizer};

use crate::args::{BackendArgs, BatchArgs};
use crate::commands::load;
use crate::device::{choose, Chosen};
use crate::Failure;

/// What a request asks of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// One pooled vector per input (not normalised: each request normalises its own).
    Embed,
    /// Per input, per content token, the token classifier's probabilities [n, C].
    TokenProbs,
    /// Per input, the sequence classifier's logits [C].
    SequenceLogits,
}

/// One request's share of a batch.
pub struct Job {
    pub work: Work,
    pub encs: Vec<Encoded>,
    pub deadline: Instant,
    pub enqueued: Instant,
    pub answer: tokio::sync::oneshot::Sender<Result<Done, JobError>>,
}

impl Job {
    fn tokens(&self) -> usize {
        self.encs.iter().map(|e| e.len() + 2).sum()
    }
}

/// A request's rows, one per input, with where its time went.
pub struct Done {
    pub rows: Vec<Vec<f32>>,
    /// The request's encodings, handed back (de-identification maps tokens to characters).
    pub encs: Vec<Encoded>,
    pub queue: Duration,
    pub compute: Duration,
}

#[derive(Debug)]
pub enum JobError {
    /// The deadline passed while the request waited.
    Deadline,
    /// The batch failed; the message names no document text.
    Failed(String),
}

/// A batch as the metrics see it.
pub struct BatchStats {
    pub model: String,
    pub requests: usize,
    pub documents: usize,
    pub tokens: usize,
    pub seconds: f64,
}

/// What the HTTP side knows of a loaded model.
pub struct ModelInfo {
    pub name: String,
    pub dir: PathBuf,
    pub architecture: Option<Architecture>,
    pub hidden_size: usize,
    pub labels: Vec<String>,
    pub problem_type: Option<String>,
    /// Token-classification labels read as a tagging scheme (de-identification).
    pub scheme: Option<LabelScheme>,
    /// Embedding pooling the folder asks for (sentence-transformers config; else mean).
    pub pooling: Pooling,
    pub settings: Settings,
    pub tokenizer: Arc<Tokenizer>,
    pub dtype: &'static str,
    pub device: String,
}

impl ModelInfo {
    pub fn has_token_classifier(&self) -> bool {
        self.scheme.is_some()
    }
    pub fn has_sequence_classifier(&self) -> bool {
        self.architecture == Some(Architecture::SequenceClassification) && !self.labels.is_empty()
    }
    /// An encoder for embeddings: a model without a classification head.
    pub fn is_embedder(&self) -> bool {
        !matches!(self.architecture, Some(Architecture::TokenClassification | Architecture::SequenceClassification))
    }
}

/// A model's queue: the sending side, what waits in it, and how fast the worker has been going.
pub struct Queue {
    sender: SyncSender<Job>,
    counts: Arc<Counts>,
    max_docs: usize,
    max_time: Duration,
    /// Cleared when the worker stops.
    alive: Arc<AtomicBool>,
}

/// Shared by the queue's two sides.
#[derive(Default)]
struct Counts {
    /// Documents and tokens waiting.
    docs: AtomicUsize,
    tokens: AtomicUsize,
    /// The worker's recent rate, tokens per second (f64 bits; 0 until the first batch).
    rate: AtomicU64,
}

impl Counts {
    fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }
    /// Fold a batch's rate into the estimate (an exponential average over the last few batches).
    fn observe(&self, tokens: usize, seconds: f64) {
        if seconds > 0.0 && tokens > 0 {
            let now = tokens as f64 / seconds;
            let old = self.rate();
            let next = if old == 0.0 { now } else { 0.8 * old + 0.2 * now };
            self.rate.store(next.to_bits(), Ordering::Relaxed);
        }
    }
}

pub enum Refused {
    /// The queue is full, or holds more than can be computed before this request's deadline:
    /// try again after about `wait`.
    Full { wait: Duration },
    /// The worker has stopped.
    Closed,
}

impl Queue {
    /// Queue a job, or refuse it when the documents waiting would exceed the queue's size, or when
    /// at the worker's recent rate the tokens ahead of it (and its own) would take longer than
    /// the queue's time (`--max-queue-ms`) or half the request's time budget: a request that
    /// would only time out is refused at once, and a burst leaves little work behind.
    pub fn submit(&self, job: Job, budget: Duration) -> Result<(), Refused> {
        let docs = job.encs.len();
        let tokens = job.tokens();
        let c = &self.counts;
        let ahead = c.tokens.fetch_add(tokens, Ordering::SeqCst) + tokens;
        let waiting = c.docs.fetch_add(docs, Ordering::SeqCst) + docs;
        let rate = c.rate();
        let wait = if rate > 0.0 { Duration::from_secs_f64(ahead as f64 / rate) } else { Duration::ZERO };
        let undo = || {
            c.docs.fetch_sub(docs, Ordering::SeqCst);
            c.tokens.fetch_sub(tokens, Ordering::SeqCst);
        };
        // One request alone is always taken: it may be long, but nothing is ahead of it.
        if waiting > self.max_docs || (waiting > docs && wait > self.max_time.min(budget / 2)) {
            undo();
            return Err(Refused::Full { wait });
        }
        self.sender.try_send(job).map_err(|e| {
            undo();
            match e {
                TrySendError::Full(_) => Refused::Full { wait },
                TrySendError::Disconnected(_) => Refused::Closed,
            }
        })
    }
    /// Documents the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.max_docs
    }
    /// Whether the worker still takes work.
    pub fn is_open(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
    /// The model's recent compute rate, tokens per second.
    pub fn rate(&self) -> f64 {
        self.counts.rate()
    }
    /// Documents waiting now.
    pub fn depth(&self) -> usize {
        self.counts.docs.load(Ordering::SeqCst)
    }
}

/// How the workers batch.
#[derive(Clone, Copy)]
pub struct Batching {
    pub max_wait: Duration,
    pub max_queue_docs: usize,
    /// The most work the queue holds, at the worker's recent rate.
    pub max_queue_time: Duration,
}

/// Start the worker of the model in `dir`: load it on its own backend in its own thread, and
/// return what the HTTP side needs once it is ready (or why it could not load).
pub fn start(
    name: String,
    dir: PathBuf,
    backend: BackendArgs,
    batch: BatchArgs,
    batching: Batching,
    on_batch: Arc<dyn Fn(BatchStats) + Send + Sync>,
) -> Result<(Arc<ModelInfo>, Queue), Failure> {
    // Room for every waiting document's request (each holds at least one); the channel's slots
    // are allocated at once, so past 65,536 requests the document count refuses first.
    let (sender, receiver) = sync_channel::<Job>(batching.max_queue_docs.min(1 << 16));
    let counts = Arc::new(Counts::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Arc<ModelInfo>, Failure>>();
    let thread_counts = counts.clone();
    let alive = Arc::new(AtomicBool::new(true));
    let thread_alive = alive.clone();
    let thread_name = name.clone();
    std::thread::Builder::new()
        .name(format!("model {name}"))
        .spawn(move || {
            // Cleared however the thread ends, a panic included: /health then says so.
            struct Alive(Arc<AtomicBool>);
            impl Drop for Alive {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::SeqCst);
                }
            }
            let _alive = Alive(thread_alive);
            let run = || -> Result<(), Failure> {
                match choose(backend.device, backend.dtype, backend.activations)? {
                    Chosen::Cpu(be) => serve_model(&be, thread_name, dir, batch, batching, receiver, thread_counts.clone(), &ready_tx, on_batch.clone()),
                    Chosen::Gpu(be) => serve_model(&be, thread_name, dir, batch, batching, receiver, thread_counts.clone(), &ready_tx, on_batch.clone()),
                }
            };
            if let Err(e) = run() {
                let _ = ready_tx.send(Err(e));
            }
        })
        .map_err(|e| Failure(format!("starting the worker of model {name}: {e}")))?;
    let info = ready_rx.recv().map_err(|_| Failure(format!("the worker of model {name} stopped while loading")))??;
    Ok((info, Queue { sender, counts, max_docs: batching.max_queue_docs, max_time: batching.max_queue_time, alive }))
}

#[allow(clippy::too_many_arguments)]
fn serve_model<B: Backend>(
    be: &B,
    name: String,
    dir: PathBuf,
    batch: BatchArgs,
    batching: Batching,
    receiver: Receiver<Job>,
    counts: Arc<Counts>,
    ready: &std::sync::mpsc::Sender<Result<Arc<ModelInfo>, Failure>>,
    on_batch: Arc<dyn Fn(BatchStats) + Send + Sync>,
) -> Result<(), Failure> {
    let loaded = load(be, &dir).map_err(|Failure(m)| Failure(format!("model {name}: {m}")))?;
    let tokenizer = Arc::new(loaded.tokenizer().map_err(|Failure(m)| Failure(format!("model {name}: {m}")))?.clone());
    let engine = loaded.engine(be, &batch)?;
    let config = &loaded.folder.config;
    let architecture = config.architecture();
    let model = &loaded.model;
    let scheme = match architecture {
        Some(Architecture::TokenClassification) => Some(LabelScheme::from_labels(config.source(), model.labels())?),
        _ => None,
    };
    let st = sentence_transformers_pooling(&dir)?;
    let info = Arc::new(ModelInfo {
        name: name.clone(),
        dir: dir.clone(),
        architecture,
        hidden_size: model.hidden_size(),
        labels: model.labels().to_vec(),
        problem_type: model.problem_type().map(str::to_string),
        scheme,
        pooling: st.map_or(Pooling::Mean, |(p, _)| p),
        settings: engine.settings,
        tokenizer,
        dtype: be.dtype().name(),
        device: crate::commands::device_name(be),
    });
    let pooling = info.pooling;
    warm_up(&engine, architecture, &counts)?;
    let _ = ready.send(Ok(info));

    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        let mut tokens = jobs[0].tokens();
        let until = Instant::now() + batching.max_wait;
        // What is already queued joins at once; then, within the wait, what arrives.
        while tokens < engine.settings.batch_tokens {
            let next = match receiver.try_recv() {
                Ok(j) => Some(j),
                Err(_) => {
                    let now = Instant::now();
                    if now >= until {
                        None
                    } else {
                        match receiver.recv_timeout(until - now) {
                            Ok(j) => Some(j),
                            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
                        }
                    }
                }
            };
            let Some(j) = next else { break };
            tokens += j.tokens();
            jobs.push(j);
        }
        counts.docs.fetch_sub(jobs.iter().map(|j| j.encs.len()).sum(), Ordering::SeqCst);
        counts.tokens.fetch_sub(jobs.iter().map(Job::tokens).sum(), Ordering::SeqCst);

        let now = Instant::now();
        let mut live = Vec::with_capacity(jobs.len());
        for job in jobs {
            if job.answer.is_closed() {
                continue; // the client has gone
            }
            if now >= job.deadline {
                let _ = job.answer.send(Err(JobError::Deadline));
                continue;
            }
            live.push(job);
        }
        for work in [Work::Embed, Work::TokenProbs, Work::SequenceLogits] {
            let (group, rest): (Vec<Job>, Vec<Job>) = live.into_iter().partition(|j| j.work == work);
            live = rest;
            if group.is_empty() {
                continue;
            }
            let (tokens, seconds) = run_group(&engine, &name, work, pooling, group, &on_batch);
            counts.observe(tokens, seconds);
        }
    }
    Ok(())
}

/// Run one batch as large as the token budget allows before taking requests, as TEI does: the
/// memory a full batch needs is taken now (so a burst of load later does not raise it), a
/// model that cannot run a full batch fails at start rather than on a request, and the queue
/// starts with a measured rate.
fn warm_up<B: Backend>(engine: &runtime::pipeline::Engine<B>, architecture: Option<Architecture>, counts: &Counts) -> Result<(), Failure> {
    let s = engine.settings;
    let unk = engine.tokenizer.specials.unk.unwrap_or(engine.tokenizer.specials.sep);
    let window = runtime::tokenize::Encoded {
        ids: vec![unk; s.window],
        type_ids: vec![0; s.window],
        offsets: vec![(0, 0); s.window],
        special: vec![false; s.window],
        words: (0..s.window as u32).map(Some).collect(),
    };
    let n = (s.batch_tokens / (s.window + 2)).max(1);
    let encs = vec![window; n];
    let start = Instant::now();
    let mut quiet = |_| {};
    let done = match architecture {
        Some(Architecture::TokenClassification) => kernels::block_on(engine.token_probabilities(&encs, &mut quiet)).map(|_| ()),
        Some(Architecture::SequenceClassification) => kernels::block_on(engine.sequence_logits(&encs, None, &mut quiet)).map(|_| ()),
        _ => kernels::block_on(engine.embed(&encs, Pooling::Mean, false, &mut quiet)).map(|_| ()),
    };
    done.map_err(|e| Failure(format!("warming up with a full batch of {} tokens: {e} (lower --batch-tokens)", n * (s.window + 2))))?;
    counts.observe(n * (s.window + 2), start.elapsed().as_secs_f64());
    Ok(())
}

/// Run one kind of work for a group of requests as one set of batches, and answer each. Returns
/// the tokens computed and the seconds it took.
fn run_group<B: Backend>(
    engine: &runtime::pipeline::Engine<B>,
    name: &str,
    work: Work,
    pooling: Pooling,
    group: Vec<Job>,
    on_batch: &Arc<dyn Fn(BatchStats) + Send + Sync>,
) -> (usize, f64) {
    let start = Instant::now();
    let tokens: usize = group.iter().map(Job::tokens).sum();
    // The encodings move into one list for the batch and back to their requests after it.
    let mut group = group;
    let sizes: Vec<usize> = group.iter().map(|j| j.encs.len()).collect();
    let mut encs: Vec<Encoded> = group.iter_mut().flat_map(|j| std::mem::take(&mut j.encs)).collect();
    let mut quiet = |_| {};
    let result = catch_unwind(AssertUnwindSafe(|| {
        kernels::block_on(async {
            match work {
                Work::Embed => engine.embed(&encs, pooling, false, &mut quiet).await,
                Work::TokenProbs => engine.token_probabilities(&encs, &mut quiet).await,
                Work::SequenceLogits => engine.sequence_logits(&encs, None, &mut quiet).await,
            }
        })
    }));
    let compute = start.elapsed();
    on_batch(BatchStats { model: name.to_string(), requests: group.len(), documents: encs.len(), tokens, seconds: compute.as_secs_f64() });
    let measured = (tokens, compute.as_secs_f64());
    match result {
        Ok(Ok(rows)) => {
            // Answer in order, each request its own rows.
            let mut rest = rows.into_iter();
            for (job, n) in group.into_iter().zip(sizes) {
                let mine: Vec<Vec<f32>> = rest.by_ref().take(n).collect();
                let encs: Vec<Encoded> = encs.drain(..n).collect();
                let queue = start.saturating_duration_since(job.enqueued);
                let _ = job.answer.send(Ok(Done { rows: mine, encs, queue, compute }));
            }
        }
        Ok(Err(e)) => {
            // Document indices are the batch's, not the request's: name none.
            let message = match e {
                runtime::Error::NonFinite { what, .. } => format!("the model produced a non-finite value in its {what}"),
                other => other.to_string(),
            };
            for job in group {
                let _ = job.answer.send(Err(JobError::Failed(message.clone())));
            }
        }
        Err(_) => {
            for job in group {
                let _ = job.answer.send(Err(JobError::Failed("the batch failed inside the model (an internal error); the server goes on".into())));
            }
        }
    }
    measured
}
