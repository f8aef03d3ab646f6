//! The browser's entry points: load a Hugging Face token-classification folder from bytes, run
//! it on WebGPU (or the CPU backend compiled to wasm when WebGPU is missing or lacks what the
//! kernels need), and de-identify notes with the runtime's own code: tokenization, windows for
//! long notes, span decoding and redaction are those of `runtime-cli deid`. Nothing here leaves
//! the page; the JavaScript side only fetches the model files.

use std::rc::Rc;

use kernels::{CpuBackend, GpuBackend};

use kernels::prelude::*;
use runtime::config::ModelConfig;
use runtime::deid::{deidentify, LabelScheme, Operator, Span, SurrogateKey, Surrogates};
use runtime::pipeline::Engine;
use runtime::tokenize::{Encoded, Tokenizer};
use runtime::weights::Checkpoint;
use runtime::Model;
use wasm_bindgen::prelude::*;

// Static constructors (cubecl's IR registers its dialects through `inventory`) run once, before
// the first use of cubecl. Without an explicit call the linker treats the module as a command and
// runs every constructor again at the top of each exported function, wasm-bindgen's externref
// table helpers included: a few milliseconds per JavaScript → wasm call, tens of such calls per
// kernel launch (bench/browser/profile.md). With the call below it wraps nothing, so the module
// runs them itself: from its start function, and from `DeidModel.load` for hosts that do not run
// start functions (wasm-bindgen-test).
#[cfg(target_family = "wasm")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

fn run_constructors_once() {
    // Native targets run their constructors before `main`.
    #[cfg(target_family = "wasm")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: the linker's constructor list, run exactly once (guarded) before cubecl is used.
        ONCE.call_once(|| unsafe { __wasm_call_ctors() });
    }
}

#[cfg(target_family = "wasm")]
#[wasm_bindgen(start)]
fn start() {
    run_constructors_once();
}

/// The threaded build (`threads` feature, web/build.sh's pkg-threads/): `initThreadPool(n)`
/// starts `n` Web Workers on this module's shared memory as the CPU backend's rayon pool. Call it
/// once, from a worker (rayon's caller blocks, which a page's main thread may not), before
/// `DeidModel.load`.
#[cfg(all(target_family = "wasm", feature = "threads"))]
pub use wasm_bindgen_rayon::init_thread_pool;

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A model on one backend.
struct Session<B: Backend> {
    be: B,
    model: Model<B>,
}

enum Device {
    Gpu(Session<GpuBackend>),
    Cpu(Session<CpuBackend>),
}

struct Inner {
    device: Device,
    tokenizer: Tokenizer,
    scheme: LabelScheme,
    /// Drawn under a secret key made when the model is loaded (the browser's crypto API): the
    /// same original gets the same surrogate while the page lives, and nothing outside the page
    /// can link a surrogate back to its original.
    surrogates: Surrogates,
    info: serde_json::Value,
}

/// A loaded de-identification model.
#[wasm_bindgen]
pub struct DeidModel {
    inner: Rc<Inner>,
}

/// One analysed note: its per-token probabilities, decoded at any threshold without rerunning
/// the model (the page's threshold slider).
#[wasm_bindgen]
pub struct Analysis {
    inner: Rc<Inner>,
    text: String,
    enc: Encoded,
    probs: Vec<f32>,
    tokens: usize,
    seconds: f64,
}

/// Seconds on the page's monotonic clock (`performance.now()`, sub-millisecond where the page is
/// cross-origin isolated), else the wall clock.
fn now_seconds() -> f64 {
    let performance = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("performance")).unwrap_or(JsValue::UNDEFINED);
    let now = js_sys::Reflect::get(&performance, &JsValue::from_str("now")).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    match now.and_then(|f| f.call0(&performance).ok()).and_then(|v| v.as_f64()) {
        Some(ms) => ms / 1000.0,
        None => js_sys::Date::now() / 1000.0,
    }
}

async fn token_probabilities<B: Backend>(s: &Session<B>, tokenizer: &Tokenizer, text: &str) -> runtime::Result<(Encoded, Vec<f32>)> {
    let engine = Engine::new(&s.be, &s.model, tokenizer);
    let mut encs = engine.tokenize(&[text])?;
    let mut probs = engine.token_probabilities(&encs, &mut |_| {}).await?;
    Ok((encs.remove(0), probs.remove(0)))
}

async fn profile_on<B: Backend>(s: &Session<B>, tokenizer: &Tokenizer, text: &str) -> runtime::Result<serde_json::Value> {
    let (be, model) = (&s.be, &s.model);
    let t0 = now_seconds();
    let enc = Engine::new(be, model, tokenizer).tokenize(&[text])?.remove(0);
    let ids = enc.ids.clone();
    if ids.len() > model.context() {
        return Err(runtime::Error::Input(format!("profile runs one window: the note is {} tokens, the context {}", ids.len(), model.context())));
    }
    let t1 = now_seconds();
    let watching = kernels::profile::Profiling::start(false);
    let b = model.batch(be, &[&ids])?;
    let logits = model.token_logits(be, &model.encode(be, &b, None)?)?;
    let t2 = now_seconds();
    let p = watching.finish(); // before the read: the last launch's host time ends at the issue
    let rows = be.read(&logits).await?;
    let t3 = now_seconds();
    let c = model.labels().len();
    let probs: Vec<f32> = rows.chunks(c).flat_map(runtime::pipeline::softmax).collect();
    let t4 = now_seconds();
    Ok(serde_json::json!({
        "tokens": ids.len(), "tokenize_s": t1 - t0, "issue_s": t2 - t1, "read_s": t3 - t2, "softmax_s": t4 - t3, "total_s": t4 - t0,
        "launches": p.launches(), "pipelines": p.pipelines, "new_pipelines": p.new_pipelines, "checksum": probs.iter().sum::<f32>(),
        "timeline": p.timeline.iter().map(|(k, s)| serde_json::json!([k, s])).collect::<Vec<_>>(),
        "kernels": p.kernels.iter().map(|k| serde_json::json!({"name": k.name, "launches": k.launches, "host_s": k.host_seconds})).collect::<Vec<_>>(),
    }))
}

async fn op_times_on<B: Backend>(s: &Session<B>, tokens: usize, reps: usize) -> runtime::Result<serde_json::Value> {
    let Model::ModernBert(m) = &s.model else {
        return Err(runtime::Error::Input("op times are measured for ModernBERT models".into()));
    };
    let (ops, empty) = runtime::model::op_times::op_times(&s.be, m, tokens, reps, &now_seconds).await?;
    Ok(serde_json::json!({"empty_read_s": empty, "ops": ops.iter().map(|o| serde_json::json!({"name": o.name, "seconds": o.seconds})).collect::<Vec<_>>()}))
}

/// The GEMM for this page's WebGPU adapter: the register-tiled kernel on an adapter that runs on
/// the CPU (SwiftShader, the fallback adapter of browsers without a usable GPU: 3.2× faster than
/// cubek's unit GEMM there, and one pipeline for every length, see bench/browser/profile.md),
/// else the default. wgpu does not report the adapter's identity in the browser, so this asks
/// WebGPU itself (`GPUAdapter.info`, `isFallbackAdapter`); anything unreadable means a GPU.
async fn gemm_path() -> kernels::linear::GemmPath {
    use js_sys::Reflect;
    let get = |v: &JsValue, k: &str| Reflect::get(v, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED);
    let gpu = get(&get(&js_sys::global(), "navigator"), "gpu");
    let adapter = match Reflect::get(&gpu, &JsValue::from_str("requestAdapter")).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok()) {
        Some(request) => match request.call0(&gpu).ok().and_then(|p| p.dyn_into::<js_sys::Promise>().ok()) {
            Some(p) => wasm_bindgen_futures::JsFuture::from(p).await.unwrap_or(JsValue::NULL),
            None => JsValue::NULL,
        },
        None => JsValue::NULL,
    };
    if adapter.is_null() || adapter.is_undefined() {
        return kernels::linear::GemmPath::Auto;
    }
    let info = get(&adapter, "info");
    let names = ["vendor", "architecture", "device", "description"].map(|k| get(&info, k).as_string().unwrap_or_default().to_lowercase());
    let fallback = get(&adapter, "isFallbackAdapter").as_bool().unwrap_or(false) || get(&info, "isFallbackAdapter").as_bool().unwrap_or(false);
    if fallback || names.iter().any(|n| ["swiftshader", "llvmpipe", "lavapipe", "warp", "software"].iter().any(|s| n.contains(s))) {
        kernels::linear::GemmPath::Tiled
    } else {
        kernels::linear::GemmPath::Auto
    }
}

fn load_on<B: Backend>(be: B, config: &ModelConfig, checkpoint: &Checkpoint) -> runtime::Result<Session<B>> {
    let model = Model::load(&be, config.clone(), checkpoint)?;
    Ok(Session { be, model })
}

#[wasm_bindgen]
impl DeidModel {
    /// Load from the files of a model folder. `files` maps file names to `Uint8Array`s:
    /// `config.json`; the weights, `model.safetensors` or PyTorch's `pytorch_model.bin`; the
    /// tokenizer, `tokenizer.json`, or `vocab.txt` (WordPiece), or `vocab.json` + `merges.txt`;
    /// and optionally `tokenizer_config.json` / `special_tokens_map.json`. ModernBERT and classic
    /// BERT folders alike. `device`: `auto` (WebGPU when it works, else the CPU), `gpu` or `cpu`.
    pub async fn load(files: js_sys::Map, device: String) -> Result<DeidModel, JsError> {
        run_constructors_once();
        let file = |name: &str| -> Option<Vec<u8>> { files.get(&JsValue::from_str(name)).dyn_into::<js_sys::Uint8Array>().ok().map(|a| a.to_vec()) };
        let need = |name: &str| file(name).ok_or_else(|| JsError::new(&format!("the model folder has no {name}")));
        let text = |name: &str, bytes: Vec<u8>| runtime::files::text(name, bytes).map_err(js_err);
        let config = ModelConfig::from_json("config.json", &text("config.json", need("config.json")?)?).map_err(js_err)?;
        if !matches!(device.as_str(), "auto" | "gpu" | "cpu") {
            return Err(JsError::new(&format!("device \"{device}\": expected auto, gpu or cpu")));
        }
        // The GPU first: its pipelines compile (a miniature's forward, see runtime::model::warm)
        // while the tokenizer and the checkpoint are parsed and uploaded below.
        let mut fallback = None;
        let gpu = match device.as_str() {
            "cpu" => None,
            _ => match kernels::device::wgpu_device_async(kernels::device::AdapterChoice::Default).await {
                // f16 end to end where the adapter has shader-f16 (half the memory and bandwidth),
                // else f32 (SwiftShader, many mobile GPUs).
                Ok(d) => {
                    let be = GpuBackend::f16_where_supported(d).with_gemm(gemm_path().await);
                    if let Ok(Some(logits)) = runtime::model::warm::warm_up(&be, &config) {
                        let be = be.clone();
                        wasm_bindgen_futures::spawn_local(async move {
                            let _ = be.read(&logits).await; // submitted now; the values do not matter
                        });
                    }
                    Some(be)
                }
                Err(e) if device == "auto" => {
                    fallback = Some(format!("WebGPU is not available ({e}); running on the CPU instead"));
                    None
                }
                Err(e) => return Err(js_err(e)),
            },
        };
        let tokenizer = Tokenizer::from_files("", &|name: &str| Ok(file(name))).map_err(js_err)?;
        tokenizer.check_config(&config).map_err(js_err)?;
        let weights = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .find_map(|name| file(name).map(|bytes| (name.to_string(), bytes)))
            .ok_or_else(|| JsError::new("the model folder has no model.safetensors and no pytorch_model.bin"))?;
        let checkpoint = Checkpoint::from_bytes(vec![weights]).map_err(js_err)?;

        let device = match gpu {
            None => Device::Cpu(load_on(CpuBackend::new(), &config, &checkpoint).map_err(js_err)?),
            Some(be) => match load_on(be, &config, &checkpoint) {
                Ok(s) => Device::Gpu(s),
                Err(e) if device == "auto" => {
                    fallback = Some(format!("the WebGPU adapter cannot run this model ({e}); running on the CPU instead"));
                    Device::Cpu(load_on(CpuBackend::new(), &config, &checkpoint).map_err(js_err)?)
                }
                Err(e) => return Err(js_err(e)),
            },
        };
        let (model_ref, architecture, info) = match &device {
            Device::Gpu(s) => (s.model.labels(), s.model.description(), s.be.device_info()),
            Device::Cpu(s) => (s.model.labels(), s.model.description(), s.be.device_info()),
        };
        if model_ref.is_empty() {
            return Err(JsError::new("this checkpoint has no token-classification head (classifier.weight): de-identification needs one"));
        }
        let scheme = LabelScheme::from_labels("config.json", model_ref).map_err(js_err)?;
        let surrogates = Surrogates::new(SurrogateKey::random().map_err(js_err)?);
        let detail = |key: &str| info.details.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let parameters: usize = checkpoint.names().filter_map(|n| checkpoint.get(n)).map(|t| t.shape.iter().product::<usize>()).sum();
        let info = serde_json::json!({
            "parameters": parameters,
            "architecture": architecture,
            "layers": config.num_hidden_layers(),
            "hidden_size": config.hidden_size(),
            "labels": model_ref,
            "categories": scheme.categories,
            "context": config.context(),
            "backend": info.backend,
            "adapter": info.name,
            "precision": detail("activations stored as").unwrap_or("f32"),
            // The CPU backend's threads: 1 in the page's main build, the pool's in the threaded one.
            "threads": detail("threads").and_then(|v| v.parse::<usize>().ok()),
            "gemm": detail("GEMM path").map(|v| v.split(':').next().unwrap_or(v).to_string()),
            "fallback": fallback,
        });
        Ok(DeidModel { inner: Rc::new(Inner { device, tokenizer, scheme, surrogates, info }) })
    }

    /// `{parameters, architecture, layers, hidden_size, labels, categories, context, backend, adapter, precision, threads, gemm, fallback}`
    /// as JSON (`threads`: the CPU backend's, null on WebGPU; `fallback`: why the CPU runs when WebGPU was asked for, else null).
    pub fn info(&self) -> String {
        self.inner.info.to_string()
    }

    /// Where one note's time goes, for bench/browser: resolves to JSON `{tokens, tokenize_s,
    /// issue_s, read_s, softmax_s, total_s, launches, pipelines, new_pipelines, kernels: [{name, launches, host_s}]}`
    /// (`host_s`: host time from each launch of the kernel to the next launch).
    /// `issue_s` is the host building and submitting the forward (and compiling any pipeline not
    /// seen before), `read_s` waiting for the device to finish and the logits to come back. The
    /// note is one window (at most the model's context).
    pub fn profile(&self, text: String) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let r = match &inner.device {
                Device::Gpu(s) => profile_on(s, &inner.tokenizer, &text).await,
                Device::Cpu(s) => profile_on(s, &inner.tokenizer, &text).await,
            };
            Ok(JsValue::from_str(&r.map_err(|e| JsValue::from(js_err(e)))?.to_string()))
        })
    }

    /// For bench/browser: each op of a ModernBERT forward over one sequence of `tokens` ids, run
    /// alone and read back (`reps` times, median, the empty read-back subtracted); resolves to
    /// JSON `{empty_read_s, ops: [{name, seconds}]}`.
    #[wasm_bindgen(js_name = opTimes)]
    pub fn op_times(&self, tokens: usize, reps: usize) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let r = match &inner.device {
                Device::Gpu(s) => op_times_on(s, tokens, reps).await,
                Device::Cpu(s) => op_times_on(s, tokens, reps).await,
            };
            Ok(JsValue::from_str(&r.map_err(|e| JsValue::from(js_err(e)))?.to_string()))
        })
    }

    /// Run the model on one note; resolves to an `Analysis`.
    pub fn analyze(&self, text: String) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move { Ok(run(inner, text).await.map_err(|e| JsValue::from(js_err(e)))?.into()) })
    }
}

impl DeidModel {
    /// `analyze` for Rust callers.
    pub async fn analyze_note(&self, text: String) -> runtime::Result<Analysis> {
        run(self.inner.clone(), text).await
    }
}

async fn run(inner: Rc<Inner>, text: String) -> runtime::Result<Analysis> {
    let t0 = now_seconds();
    let (enc, probs) = match &inner.device {
        Device::Gpu(s) => token_probabilities(s, &inner.tokenizer, &text).await?,
        Device::Cpu(s) => token_probabilities(s, &inner.tokenizer, &text).await?,
    };
    let tokens = enc.len();
    Ok(Analysis { inner, text, enc, probs, tokens, seconds: now_seconds() - t0 })
}

#[wasm_bindgen]
impl Analysis {
    /// Tokens of the note (without `[CLS]`/`[SEP]`).
    #[wasm_bindgen(getter)]
    pub fn tokens(&self) -> usize {
        self.tokens
    }
    /// Seconds the model took (tokenization, every window, read-back).
    #[wasm_bindgen(getter)]
    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    /// `{spans: [{start, end, label, text, score, source}], redacted}` as JSON, exactly as
    /// `runtime-cli deid --threshold T` writes it for this note (with `surrogate`, the fake values
    /// are drawn under this page's own secret key, so they differ from another run's). Offsets
    /// count Unicode code points (JavaScript: `Array.from(text)`), as the CLI's do.
    pub fn result(&self, threshold: f32, surrogate: bool) -> Result<String, JsError> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(JsError::new(&format!("threshold {threshold}: expected a probability between 0 and 1")));
        }
        let op = if surrogate { Operator::Surrogate(&self.inner.surrogates) } else { Operator::Placeholder };
        let (spans, redacted) = deidentify(&self.text, &self.enc, &self.probs, &self.inner.scheme, threshold, op);
        Ok(serde_json::json!({"spans": spans.iter().map(Span::to_json).collect::<Vec<_>>(), "redacted": redacted}).to_string())
    }
}

/// The default decision threshold (recall-biased), shared with `runtime-cli deid`.
#[wasm_bindgen(js_name = defaultThreshold)]
pub fn default_threshold() -> f32 {
    runtime::deid::DEFAULT_THRESHOLD
}
