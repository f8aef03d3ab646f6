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

fn now_seconds() -> f64 {
    js_sys::Date::now() / 1000.0
}

async fn token_probabilities<B: Backend>(s: &Session<B>, tokenizer: &Tokenizer, text: &str) -> runtime::Result<(Encoded, Vec<f32>)> {
    let engine = Engine::new(&s.be, &s.model, tokenizer);
    let mut encs = engine.tokenize(&[text])?;
    let mut probs = engine.token_probabilities(&encs, &mut |_| {}).await?;
    Ok((encs.remove(0), probs.remove(0)))
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
        let file = |name: &str| -> Option<Vec<u8>> { files.get(&JsValue::from_str(name)).dyn_into::<js_sys::Uint8Array>().ok().map(|a| a.to_vec()) };
        let need = |name: &str| file(name).ok_or_else(|| JsError::new(&format!("the model folder has no {name}")));
        let text = |name: &str, bytes: Vec<u8>| runtime::files::text(name, bytes).map_err(js_err);
        let config = ModelConfig::from_json("config.json", &text("config.json", need("config.json")?)?).map_err(js_err)?;
        let tokenizer = Tokenizer::from_files("", &|name: &str| Ok(file(name))).map_err(js_err)?;
        tokenizer.check_config(&config).map_err(js_err)?;
        let weights = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .find_map(|name| file(name).map(|bytes| (name.to_string(), bytes)))
            .ok_or_else(|| JsError::new("the model folder has no model.safetensors and no pytorch_model.bin"))?;
        let checkpoint = Checkpoint::from_bytes(vec![weights]).map_err(js_err)?;

        let mut fallback = None;
        let device = match device.as_str() {
            "cpu" => Device::Cpu(load_on(CpuBackend::new(), &config, &checkpoint).map_err(js_err)?),
            "gpu" | "auto" => match kernels::device::wgpu_device_async(kernels::device::AdapterChoice::Default).await {
                // f16 end to end where the adapter has shader-f16 (half the memory and bandwidth),
                // else f32 (SwiftShader, many mobile GPUs).
                Ok(d) => match load_on(GpuBackend::f16_where_supported(d), &config, &checkpoint) {
                    Ok(s) => Device::Gpu(s),
                    Err(e) if device == "auto" => {
                        fallback = Some(format!("the WebGPU adapter cannot run this model ({e}); running on the CPU instead"));
                        Device::Cpu(load_on(CpuBackend::new(), &config, &checkpoint).map_err(js_err)?)
                    }
                    Err(e) => return Err(js_err(e)),
                },
                Err(e) if device == "auto" => {
                    fallback = Some(format!("WebGPU is not available ({e}); running on the CPU instead"));
                    Device::Cpu(load_on(CpuBackend::new(), &config, &checkpoint).map_err(js_err)?)
                }
                Err(e) => return Err(js_err(e)),
            },
            other => return Err(JsError::new(&format!("device \"{other}\": expected auto, gpu or cpu"))),
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
            "precision": info.details.iter().find(|(k, _)| k == "activations stored as").map_or("f32", |(_, v)| v.as_str()),
            "fallback": fallback,
        });
        Ok(DeidModel { inner: Rc::new(Inner { device, tokenizer, scheme, surrogates, info }) })
    }

    /// `{parameters, architecture, layers, hidden_size, labels, categories, context, backend, adapter, precision, fallback}`
    /// as JSON (`fallback` says why the CPU runs when WebGPU was asked for, else null).
    pub fn info(&self) -> String {
        self.inner.info.to_string()
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
