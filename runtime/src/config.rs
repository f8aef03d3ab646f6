//! `config.json` of a Hugging Face folder: ModernBERT-family models in both spellings (the
//! released checkpoints' legacy keys `global_attn_every_n_layers`, `global_rope_theta`,
//! `local_rope_theta` and transformers 5's `layer_types`, `rope_parameters`; spec/MODERNBERT.md
//! §1.2), and classic BERT-layout models (BioClinicalBERT, BioBERT, PubMedBERT: `model_type`
//! "bert", or the old Google-converted configs that have no `model_type`).

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
use serde_json::Value;

use crate::{Error, Result};

/// Which task model the checkpoint was saved from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `ModernBertModel`: the bare encoder.
    Model,
    /// `ModernBertForMaskedLM`.
    MaskedLm,
    /// `ModernBertForTokenClassification`.
    TokenClassification,
    /// `ModernBertForSequenceClassification`.
    SequenceClassification,
}

impl Architecture {
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Model => "ModernBertModel",
            Architecture::MaskedLm => "ModernBertForMaskedLM",
            Architecture::TokenClassification => "ModernBertForTokenClassification",
            Architecture::SequenceClassification => "ModernBertForSequenceClassification",
        }
    }
    /// The transformers class name of the classic BERT model with this head.
    pub fn bert_name(self) -> &'static str {
        match self {
            Architecture::Model => "BertModel",
            Architecture::MaskedLm => "BertForMaskedLM",
            Architecture::TokenClassification => "BertForTokenClassification",
            Architecture::SequenceClassification => "BertForSequenceClassification",
        }
    }
}

/// Global (full) or local (sliding-window) attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerType {
    Full,
    Sliding,
}

/// Sequence-classification pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The first token (`[CLS]`).
    Cls,
    /// Mean over the sequence's tokens.
    Mean,
}

/// The longest context a config may declare (RoPE tables are built for it at load time).
pub const MAX_CONTEXT: usize = 1 << 20;
/// The shortest: `[CLS]`, `[SEP]` and one token of text.
pub const MIN_CONTEXT: usize = 3;
/// Upper bounds on a config's sizes: far above every released encoder (ModernBERT-large: hidden
/// 1,024, intermediate 2,624, 28 layers, 50,368 tokens; multilingual vocabularies: 250,002), and
/// low enough that nothing derived from them overflows. Whether the model then fits the machine
/// is checked from its parameter count before anything is allocated (`Model::load`).
pub const MAX_VOCAB: usize = 1 << 22;
pub const MAX_HIDDEN: usize = 1 << 15;
pub const MAX_INTERMEDIATE: usize = 1 << 18;
pub const MAX_LAYERS: usize = 1 << 10;
pub const MAX_LABELS: usize = 1 << 16;
pub const MAX_TYPE_VOCAB: usize = 1 << 16;

/// Everything the encoder and its heads need from `config.json`.
#[derive(Clone, Debug)]
pub struct ModernBertConfig {
    /// Where it was read from (for messages).
    pub source: String,
    /// `None` when `architectures` is absent: the heads are then found from the weights.
    pub architecture: Option<Architecture>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// One per layer.
    pub layer_types: Vec<LayerType>,
    pub global_rope_theta: f64,
    pub local_rope_theta: f64,
    /// Full window width; a local layer sees |i − j| ≤ local_attention / 2.
    pub local_attention: usize,
    pub max_position_embeddings: usize,
    pub norm_eps: f32,
    pub norm_bias: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub decoder_bias: bool,
    pub classifier_bias: bool,
    pub classifier_pooling: Pooling,
    pub pad_token_id: u32,
    pub cls_token_id: Option<u32>,
    pub sep_token_id: Option<u32>,
    pub mask_token_id: Option<u32>,
    /// `id2label` in id order (empty when the config has none).
    pub labels: Vec<String>,
    pub problem_type: Option<String>,
    pub tie_word_embeddings: bool,
    /// σ of the truncated-normal initialisation, and its cut-off in units of σ.
    pub initializer_range: f64,
    pub initializer_cutoff_factor: f64,
}

impl ModernBertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    /// Half-width of the sliding window: key j is visible from query i iff |i − j| ≤ this.
    pub fn window(&self) -> usize {
        self.local_attention / 2
    }
    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }

    /// Parse `config.json` text; `source` names the file in messages.
    pub fn from_json(source: &str, text: &str) -> Result<Self> {
        parse(source, &read(source, &object(source, text)?)?)
    }

    /// Read and parse `config.json`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        Self::from_json(&path.display().to_string(), &crate::files::read_text(path)?)
    }
}

/// Everything a classic BERT encoder and its heads need from `config.json`.
#[derive(Clone, Debug)]
pub struct BertConfig {
    /// Where it was read from (for messages).
    pub source: String,
    /// `None` when `architectures` is absent: the heads are then found from the weights.
    pub architecture: Option<Architecture>,
    /// The class name as written (`BertForPreTraining` loads as a masked LM), for `info`.
    pub architecture_name: Option<String>,
    /// False for the old Google-converted configs that carry no `model_type`.
    pub declares_model_type: bool,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Rows of the learned absolute position table: the longest sequence the model takes.
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub pad_token_id: u32,
    /// `id2label` in id order (empty when the config has none).
    pub labels: Vec<String>,
    pub problem_type: Option<String>,
    pub tie_word_embeddings: bool,
    /// σ of the normal initialisation (not truncated, as transformers' BERT).
    pub initializer_range: f64,
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Parse `config.json` text; `source` names the file in messages.
    pub fn from_json(source: &str, text: &str) -> Result<Self> {
        parse_bert(source, &read(source, &object(source, text)?)?)
    }
}

/// A model folder's config: which family, with its fields.
#[derive(Clone, Debug)]
pub enum ModelConfig {
    ModernBert(ModernBertConfig),
    Bert(BertConfig),
}

/// Accessors for the fields both families' configs have, each `fn name(&self) -> T` reading
/// the expression of whichever family's config it is.
macro_rules! shared_fields {
    ($($(#[$doc:meta])* $name:ident: $t:ty = |$c:ident| $e:expr;)*) => {
        $($(#[$doc])* pub fn $name(&self) -> $t {
            match self {
                ModelConfig::ModernBert($c) => $e,
                ModelConfig::Bert($c) => $e,
            }
        })*
    };
}

impl ModelConfig {
    /// Parse `config.json` text: `model_type` "modernbert" or "bert"; a config without
    /// `model_type` that has BERT's `type_vocab_size` is read as BERT (Google-converted checkpoints).
    pub fn from_json(source: &str, text: &str) -> Result<Self> {
        let obj = &object(source, text)?;
        let f = &read(source, obj)?;
        match f.model_type.as_deref() {
            Some("modernbert") => Ok(ModelConfig::ModernBert(parse(source, f)?)),
            Some("bert") => Ok(ModelConfig::Bert(parse_bert(source, f)?)),
            None if obj.get("type_vocab_size").is_some() => Ok(ModelConfig::Bert(parse_bert(source, f)?)),
            Some(other) => Err(Error::config(
                source,
                format!("field \"model_type\": \"{other}\" is not supported; expected \"modernbert\" (ModernBERT, BioClinical ModernBERT) or \"bert\" (BERT, BioClinicalBERT, BioBERT)"),
            )),
            None => Err(Error::config(source, "missing required field \"model_type\" (expected \"modernbert\" or \"bert\")")),
        }
    }

    /// Read and parse `config.json`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        Self::from_json(&path.display().to_string(), &crate::files::read_text(path)?)
    }

    /// The ModernBERT config, or an error saying that `what` needs a ModernBERT model.
    pub fn modernbert(&self, what: &str) -> Result<&ModernBertConfig> {
        match self {
            ModelConfig::ModernBert(c) => Ok(c),
            ModelConfig::Bert(c) => {
                Err(Error::config(&c.source, format!("{what} needs a ModernBERT model; this is a classic BERT model (model_type \"bert\")")))
            }
        }
    }
    shared_fields! {
        /// Where it was read from (for messages).
        source: &str = |c| &c.source;
        hidden_size: usize = |c| c.hidden_size;
        vocab_size: usize = |c| c.vocab_size;
        num_hidden_layers: usize = |c| c.num_hidden_layers;
        num_attention_heads: usize = |c| c.num_attention_heads;
        intermediate_size: usize = |c| c.intermediate_size;
        /// The longest sequence the model takes (`max_position_embeddings`).
        context: usize = |c| c.max_position_embeddings;
        pad_token_id: u32 = |c| c.pad_token_id;
        labels: &[String] = |c| &c.labels;
        architecture: Option<Architecture> = |c| c.architecture;
        problem_type: Option<&str> = |c| c.problem_type.as_deref();
    }
    /// The transformers class name of an architecture in this family.
    pub fn class_name(&self, arch: Architecture) -> &'static str {
        match self {
            ModelConfig::ModernBert(_) => arch.hf_name(),
            ModelConfig::Bert(_) => arch.bert_name(),
        }
    }
    /// Parameters of the encoder and its largest heads, counted from the sizes alone (an upper
    /// bound of what loading allocates; u128 so that no config can overflow it).
    pub fn parameter_count(&self) -> u128 {
        let (h, i, l, v) = (self.hidden_size() as u128, self.intermediate_size() as u128, self.num_hidden_layers() as u128, self.vocab_size() as u128);
        let labels = self.labels().len() as u128;
        // Every bias and norm counted, whether or not the config has them.
        let norms = 2 * h;
        match self {
            // Wqkv 3h², Wo h², Wi 2hi, Wo ih; embeddings, head h², decoder (untied: vh), classifier.
            ModelConfig::ModernBert(_) => {
                v * h + norms + l * (4 * h * h + 3 * h * i + 4 * h + 2 * i + 2 * norms) + norms + h * h + h + norms + 2 * v * h + v + labels * (h + 1)
            }
            // words, positions, types; q, k, v, o 4h², intermediate hi, output ih; pooler, MLM transform, decoder.
            ModelConfig::Bert(c) => {
                (v + c.max_position_embeddings as u128 + c.type_vocab_size as u128) * h
                    + norms
                    + l * (4 * h * h + 2 * h * i + 5 * h + i + 2 * norms)
                    + 2 * (h * h + h)
                    + norms
                    + 2 * v * h
                    + v
                    + labels * (h + 1)
            }
        }
    }

    /// Refuse a model whose weights this machine cannot hold (as f32, the loader's staging
    /// precision), before anything is allocated.
    pub fn ensure_fits(&self) -> Result<()> {
        let params = self.parameter_count();
        crate::memory::ensure_fits(
            &format!(
                "{}: a model of {params} parameters ({} layers, hidden {}, intermediate {}, vocabulary {})",
                self.source(),
                self.num_hidden_layers(),
                self.hidden_size(),
                self.intermediate_size(),
                self.vocab_size()
            ),
            params * 4,
            "check the sizes in the config, or use a machine with more memory",
        )
    }

    /// Bytes of activations one token takes in a forward pass, an upper bound: the residual
    /// stream and its normalised copy, the fused Q|K|V projection, attention's output, the MLP's
    /// widest product, and working room (f32).
    pub fn activation_bytes_per_token(&self) -> u128 {
        let (h, i) = (self.hidden_size() as u128, self.intermediate_size() as u128);
        4 * (12 * h + 4 * i)
    }

    /// Useful forward FLOPs of the encoder on `batch` sequences of `seq` tokens (spec §10): the
    /// linear layers, and attention over the keys each query may see (all of them in global
    /// layers and in every BERT layer, the ±window in ModernBERT's local ones).
    pub fn useful_flops(&self, batch: usize, seq: usize) -> f64 {
        let (h, i, l) = (self.hidden_size() as f64, self.intermediate_size() as f64, self.num_hidden_layers() as f64);
        let (linear, attention) = match self {
            // Wqkv 3h², Wo h², Wi 2hi (GeGLU), Wo ih.
            ModelConfig::ModernBert(c) => {
                let w = c.window();
                let local_keys: f64 = (0..seq).map(|q| (q.min(w) + (seq - 1 - q).min(w) + 1) as f64).sum();
                let global = c.layer_types.iter().filter(|t| **t == LayerType::Full).count() as f64;
                (l * 2.0 * (4.0 * h * h + 3.0 * h * i), 4.0 * h * (global * (seq * seq) as f64 + (l - global) * local_keys))
            }
            // query, key, value, output 4h²; intermediate hi, output ih.
            ModelConfig::Bert(_) => (l * 2.0 * (4.0 * h * h + 2.0 * h * i), 4.0 * h * l * (seq * seq) as f64),
        };
        batch as f64 * (seq as f64 * linear + attention)
    }
}

/// The top-level object of a `config.json` text (a byte-order mark ignored).
fn object(source: &str, text: &str) -> Result<Value> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_json::from_str(text).map_err(|e| Error::config(source, format!("not valid JSON: {e}")))? {
        obj @ Value::Object(_) => Ok(obj),
        _ => Err(Error::config(source, "expected a JSON object at the top level")),
    }
}

/// The fields of `config.json` this runtime reads, for both families (others are ignored), each
/// as the kind of JSON value it must hold: a wrong kind is refused naming the field (through
/// `serde_path_to_error`), an absent or `null` field is `None`. Structured fields whose shape is
/// checked with the rest (`architectures`, `layer_types`, `rope_parameters`, `id2label`) stay JSON
/// values; `validate` (`parse`, `parse_bert`) checks every range and relation.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    #[serde(deserialize_with = "text")]
    model_type: Option<String>,
    architectures: Option<Value>,
    #[serde(deserialize_with = "count")]
    vocab_size: Option<usize>,
    #[serde(deserialize_with = "count")]
    hidden_size: Option<usize>,
    #[serde(deserialize_with = "count")]
    num_hidden_layers: Option<usize>,
    #[serde(deserialize_with = "count")]
    num_attention_heads: Option<usize>,
    #[serde(deserialize_with = "count")]
    intermediate_size: Option<usize>,
    #[serde(deserialize_with = "count")]
    max_position_embeddings: Option<usize>,
    #[serde(deserialize_with = "count")]
    type_vocab_size: Option<usize>,
    #[serde(deserialize_with = "count")]
    num_labels: Option<usize>,
    id2label: Option<Value>,
    #[serde(deserialize_with = "text")]
    problem_type: Option<String>,
    #[serde(deserialize_with = "token_id")]
    pad_token_id: Option<u32>,
    #[serde(deserialize_with = "token_id")]
    cls_token_id: Option<u32>,
    #[serde(deserialize_with = "token_id")]
    bos_token_id: Option<u32>,
    #[serde(deserialize_with = "token_id")]
    sep_token_id: Option<u32>,
    #[serde(deserialize_with = "token_id")]
    eos_token_id: Option<u32>,
    #[serde(deserialize_with = "token_id")]
    mask_token_id: Option<u32>,
    #[serde(deserialize_with = "flag")]
    tie_word_embeddings: Option<bool>,
    #[serde(deserialize_with = "number")]
    initializer_range: Option<f64>,
    #[serde(deserialize_with = "number")]
    layer_norm_eps: Option<f64>,
    // ModernBERT.
    layer_types: Option<Value>,
    #[serde(deserialize_with = "count")]
    global_attn_every_n_layers: Option<usize>,
    rope_parameters: Option<Value>,
    #[serde(deserialize_with = "number")]
    global_rope_theta: Option<f64>,
    #[serde(deserialize_with = "number")]
    local_rope_theta: Option<f64>,
    #[serde(deserialize_with = "count")]
    local_attention: Option<usize>,
    #[serde(deserialize_with = "text")]
    hidden_activation: Option<String>,
    #[serde(deserialize_with = "text")]
    classifier_activation: Option<String>,
    #[serde(deserialize_with = "number")]
    norm_eps: Option<f64>,
    #[serde(deserialize_with = "flag")]
    norm_bias: Option<bool>,
    #[serde(deserialize_with = "flag")]
    attention_bias: Option<bool>,
    #[serde(deserialize_with = "flag")]
    mlp_bias: Option<bool>,
    #[serde(deserialize_with = "flag")]
    decoder_bias: Option<bool>,
    #[serde(deserialize_with = "flag")]
    classifier_bias: Option<bool>,
    #[serde(deserialize_with = "text")]
    classifier_pooling: Option<String>,
    #[serde(deserialize_with = "number")]
    initializer_cutoff_factor: Option<f64>,
    // BERT.
    #[serde(deserialize_with = "text")]
    hidden_act: Option<String>,
    #[serde(deserialize_with = "text")]
    position_embedding_type: Option<String>,
    #[serde(deserialize_with = "flag")]
    is_decoder: Option<bool>,
    #[serde(deserialize_with = "flag")]
    add_cross_attention: Option<bool>,
}

/// Read the fields of a `config.json` object; a field of the wrong kind is named.
fn read(source: &str, obj: &Value) -> Result<Raw> {
    serde_path_to_error::deserialize(obj)
        .map_err(|e| Error::config(source, format!("field \"{}\": {}", e.path(), e.inner())))
}

/// A field's value as `kind` reads it (`None` when null), or the error that says what was expected.
fn field<'de, D: Deserializer<'de>, T>(d: D, expected: &str, kind: impl FnOnce(&Value) -> Option<T>) -> std::result::Result<Option<T>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    kind(&v).map(Some).ok_or_else(|| D::Error::custom(format!("expected {expected}, found {}", describe(&v))))
}

fn count<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<usize>, D::Error> {
    field(d, "a non-negative integer", |v| v.as_u64().and_then(|n| usize::try_from(n).ok()))
}

fn token_id<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u32>, D::Error> {
    let v = Value::deserialize(d)?;
    match v.as_u64() {
        Some(n) if n > u32::MAX as u64 => Err(D::Error::custom(format!("expected a token id below 2^32, found {}", describe(&v)))),
        _ => field(v, "a non-negative integer", |v| v.as_u64().map(|n| n as u32)).map_err(D::Error::custom),
    }
}

fn number<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    field(d, "a number", Value::as_f64)
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<bool>, D::Error> {
    field(d, "true or false", Value::as_bool)
}

fn text<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    field(d, "a string", |v| v.as_str().map(str::to_string))
}

fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn err(source: &str, key: &str, expected: &str, found: &Value) -> Error {
    Error::config(source, format!("field \"{key}\": expected {expected}, found {}", describe(found)))
}

fn required(source: &str, key: &str, v: Option<usize>) -> Result<usize> {
    v.ok_or_else(|| Error::config(source, format!("missing required field \"{key}\"")))
}

/// A required integer in 1..=`max`.
fn sized(source: &str, key: &str, v: Option<usize>, max: usize) -> Result<usize> {
    let n = required(source, key, v)?;
    if !(1..=max).contains(&n) {
        return Err(Error::config(source, format!("field \"{key}\": expected 1 to {max}, found {n}")));
    }
    Ok(n)
}

/// `max_position_embeddings`, or `default` when absent, in MIN_CONTEXT..=MAX_CONTEXT.
fn context(source: &str, v: Option<usize>, default: usize) -> Result<usize> {
    let n = v.unwrap_or(default);
    if !(MIN_CONTEXT..=MAX_CONTEXT).contains(&n) {
        return Err(Error::config(
            source,
            format!("field \"max_position_embeddings\": expected {MIN_CONTEXT} to {MAX_CONTEXT} (room for [CLS], [SEP] and at least one token), found {n}"),
        ));
    }
    Ok(n)
}

fn parse(source: &str, f: &Raw) -> Result<ModernBertConfig> {
    match f.model_type.as_deref() {
        Some("modernbert") => {}
        Some(other) => {
            return Err(Error::config(
                source,
                format!("field \"model_type\": \"{other}\" is not supported; this runtime runs ModernBERT-family models (model_type \"modernbert\")"),
            ))
        }
        None => return Err(Error::config(source, "missing required field \"model_type\" (expected \"modernbert\")")),
    }
    let architecture = match f.architectures.as_ref() {
        None => None,
        Some(v) => {
            let names = v.as_array().ok_or_else(|| err(source, "architectures", "a list of class names", v))?;
            let name = names.first().and_then(Value::as_str).ok_or_else(|| err(source, "architectures", "a list of class names", v))?;
            Some(match name {
                "ModernBertModel" => Architecture::Model,
                "ModernBertForMaskedLM" => Architecture::MaskedLm,
                "ModernBertForTokenClassification" => Architecture::TokenClassification,
                "ModernBertForSequenceClassification" => Architecture::SequenceClassification,
                other => {
                    return Err(Error::config(
                        source,
                        format!("field \"architectures\": \"{other}\" is not supported; expected ModernBertModel, ModernBertForMaskedLM, ModernBertForTokenClassification or ModernBertForSequenceClassification"),
                    ))
                }
            })
        }
    };

    let hidden_size = sized(source, "hidden_size", f.hidden_size, MAX_HIDDEN)?;
    let num_hidden_layers = sized(source, "num_hidden_layers", f.num_hidden_layers, MAX_LAYERS)?;
    let num_attention_heads = sized(source, "num_attention_heads", f.num_attention_heads, MAX_HIDDEN)?;
    if hidden_size % num_attention_heads != 0 || (hidden_size / num_attention_heads) % 2 != 0 {
        return Err(Error::config(
            source,
            format!(
                "fields \"hidden_size\" ({hidden_size}) and \"num_attention_heads\" ({num_attention_heads}): the head dimension must be a whole, even number"
            ),
        ));
    }

    let layer_types = match f.layer_types.as_ref() {
        Some(v) => {
            let list = v.as_array().ok_or_else(|| err(source, "layer_types", "a list of \"full_attention\" / \"sliding_attention\"", v))?;
            if list.len() != num_hidden_layers {
                return Err(Error::config(source, format!("field \"layer_types\": {} entries for {num_hidden_layers} layers", list.len())));
            }
            list.iter()
                .map(|t| match t.as_str() {
                    Some("full_attention") => Ok(LayerType::Full),
                    Some("sliding_attention") => Ok(LayerType::Sliding),
                    _ => Err(err(source, "layer_types", "\"full_attention\" or \"sliding_attention\"", t)),
                })
                .collect::<Result<Vec<_>>>()?
        }
        None => {
            let every = f.global_attn_every_n_layers.unwrap_or(3);
            if every == 0 {
                return Err(Error::config(source, "field \"global_attn_every_n_layers\": expected a positive integer, found 0"));
            }
            (0..num_hidden_layers).map(|i| if i % every == 0 { LayerType::Full } else { LayerType::Sliding }).collect()
        }
    };

    // RoPE: transformers 5's per-layer-type `rope_parameters` win; legacy keys fill what is missing.
    let mut global_rope_theta = None;
    let mut local_rope_theta = None;
    if let Some(rp) = f.rope_parameters.as_ref() {
        let rp_obj = rp.as_object().ok_or_else(|| err(source, "rope_parameters", "an object", rp))?;
        let theta_of = |entry: &Value, key: &str| -> Result<Option<f64>> {
            let name = format!("rope_parameters.{key}");
            let e = entry.as_object().ok_or_else(|| err(source, &name, "an object", entry))?;
            if let Some(t) = e.get("rope_type").filter(|t| !t.is_null()) {
                if t.as_str() != Some("default") {
                    return Err(err(source, &format!("{name}.rope_type"), "\"default\" (other RoPE scalings are not supported)", t));
                }
            }
            // A missing theta is filled from the legacy keys below.
            match e.get("rope_theta").filter(|t| !t.is_null()) {
                None => Ok(None),
                Some(theta) => theta.as_f64().filter(|t| *t > 0.0).map(Some).ok_or_else(|| err(source, &format!("{name}.rope_theta"), "a positive number", theta)),
            }
        };
        if rp_obj.contains_key("rope_theta") {
            // One set of parameters for every layer type.
            let t = theta_of(rp, "")?;
            global_rope_theta = t;
            local_rope_theta = t;
        } else {
            if let Some(e) = rp_obj.get("full_attention") {
                global_rope_theta = theta_of(e, "full_attention")?;
            }
            if let Some(e) = rp_obj.get("sliding_attention") {
                local_rope_theta = theta_of(e, "sliding_attention")?;
            }
        }
    }
    let global_rope_theta = match global_rope_theta {
        Some(t) => t,
        None => f.global_rope_theta.unwrap_or(160_000.0),
    };
    let local_rope_theta = match local_rope_theta {
        Some(t) => t,
        None => f.local_rope_theta.unwrap_or(10_000.0),
    };
    for (key, t) in [("global_rope_theta", global_rope_theta), ("local_rope_theta", local_rope_theta)] {
        if !(t > 0.0) {
            return Err(Error::config(source, format!("field \"{key}\": expected a positive number, found {t}")));
        }
    }

    for (key, value) in [("hidden_activation", &f.hidden_activation), ("classifier_activation", &f.classifier_activation)] {
        match value.as_deref() {
            None | Some("gelu") | Some("gelu_python") => {}
            Some(other) => {
                return Err(Error::config(source, format!("field \"{key}\": \"{other}\" is not supported; ModernBERT uses the exact (erf) \"gelu\"")))
            }
        }
    }

    let norm_eps = match f.norm_eps {
        Some(e) => e,
        None => f.layer_norm_eps.unwrap_or(1e-5),
    };
    if !(norm_eps > 0.0) {
        return Err(Error::config(source, format!("field \"norm_eps\": expected a positive number, found {norm_eps}")));
    }

    let classifier_pooling = match f.classifier_pooling.as_deref() {
        None | Some("cls") => Pooling::Cls,
        Some("mean") => Pooling::Mean,
        Some(other) => return Err(Error::config(source, format!("field \"classifier_pooling\": expected \"cls\" or \"mean\", found \"{other}\""))),
    };

    let labels = parse_labels(source, f)?;
    let vocab_size = sized(source, "vocab_size", f.vocab_size, MAX_VOCAB)?;
    // transformers' ModernBertConfig default, ModernBERT's own [PAD].
    const DEFAULT_PAD: u32 = 50283;
    let declared_pad = f.pad_token_id;
    let pad_token_id = declared_pad.unwrap_or(DEFAULT_PAD);
    if declared_pad.is_none() && pad_token_id as usize >= vocab_size {
        return Err(Error::config(
            source,
            format!("field \"pad_token_id\" is absent, and transformers' default for ModernBERT ({DEFAULT_PAD}, ModernBERT's own [PAD]) is outside this model's vocabulary of {vocab_size} (field \"vocab_size\"); add \"pad_token_id\" with the id of the tokenizer's padding token"),
        ));
    }
    let cls_token_id = f.cls_token_id.or(f.bos_token_id);
    let sep_token_id = f.sep_token_id.or(f.eos_token_id);
    let mask_token_id = f.mask_token_id;
    for (key, id) in [("pad_token_id", Some(pad_token_id)), ("cls_token_id", cls_token_id), ("sep_token_id", sep_token_id), ("mask_token_id", mask_token_id)] {
        if let Some(id) = id.filter(|&id| id as usize >= vocab_size) {
            return Err(Error::config(
                source,
                format!("field \"{key}\": token id {id} is outside the vocabulary of {vocab_size} tokens (field \"vocab_size\": ids 0 to {})", vocab_size - 1),
            ));
        }
    }
    let max_position_embeddings = context(source, f.max_position_embeddings, 8192)?;
    let local_attention = f.local_attention.unwrap_or(128);
    if !(2..=2 * MAX_CONTEXT).contains(&local_attention) {
        return Err(Error::config(source, format!("field \"local_attention\": expected a window of 2 to {} tokens, found {local_attention}", 2 * MAX_CONTEXT)));
    }

    Ok(ModernBertConfig {
        source: source.to_string(),
        architecture,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size: sized(source, "intermediate_size", f.intermediate_size, MAX_INTERMEDIATE)?,
        layer_types,
        global_rope_theta,
        local_rope_theta,
        local_attention,
        max_position_embeddings,
        norm_eps: norm_eps as f32,
        norm_bias: f.norm_bias.unwrap_or(false),
        attention_bias: f.attention_bias.unwrap_or(false),
        mlp_bias: f.mlp_bias.unwrap_or(false),
        decoder_bias: f.decoder_bias.unwrap_or(true),
        classifier_bias: f.classifier_bias.unwrap_or(false),
        classifier_pooling,
        pad_token_id,
        cls_token_id,
        sep_token_id,
        mask_token_id,
        labels,
        problem_type: f.problem_type.as_deref().map(str::to_string),
        tie_word_embeddings: f.tie_word_embeddings.unwrap_or(true),
        initializer_range: f.initializer_range.unwrap_or(0.02),
        initializer_cutoff_factor: f.initializer_cutoff_factor.unwrap_or(2.0),
    })
}

fn parse_bert(source: &str, f: &Raw) -> Result<BertConfig> {
    let declares_model_type = match f.model_type.as_deref() {
        Some("bert") => true,
        None => false,
        Some(other) => return Err(Error::config(source, format!("field \"model_type\": expected \"bert\", found \"{other}\""))),
    };
    let architecture_name = match f.architectures.as_ref() {
        None => None,
        Some(v) => {
            let names = v.as_array().ok_or_else(|| err(source, "architectures", "a list of class names", v))?;
            Some(names.first().and_then(Value::as_str).ok_or_else(|| err(source, "architectures", "a list of class names", v))?.to_string())
        }
    };
    let architecture = match architecture_name.as_deref() {
        None => None,
        Some("BertModel") => Some(Architecture::Model),
        // The pre-training model's MLM head is a BertForMaskedLM's; its NSP head is not used.
        Some("BertForMaskedLM" | "BertForPreTraining" | "BertLMHeadModel") => Some(Architecture::MaskedLm),
        Some("BertForTokenClassification") => Some(Architecture::TokenClassification),
        Some("BertForSequenceClassification") => Some(Architecture::SequenceClassification),
        Some(other) => {
            return Err(Error::config(
                source,
                format!("field \"architectures\": \"{other}\" is not supported; expected BertModel, BertForMaskedLM, BertForPreTraining, BertForTokenClassification or BertForSequenceClassification"),
            ))
        }
    };
    if architecture_name.as_deref() == Some("BertLMHeadModel") || f.is_decoder.unwrap_or(false) {
        return Err(Error::config(source, "field \"is_decoder\": a decoder (causal) BERT is not supported; this runtime runs bidirectional encoders"));
    }
    if f.add_cross_attention.unwrap_or(false) {
        return Err(Error::config(source, "field \"add_cross_attention\": cross-attention is not supported"));
    }
    let hidden_size = sized(source, "hidden_size", f.hidden_size, MAX_HIDDEN)?;
    let num_hidden_layers = sized(source, "num_hidden_layers", f.num_hidden_layers, MAX_LAYERS)?;
    let num_attention_heads = sized(source, "num_attention_heads", f.num_attention_heads, MAX_HIDDEN)?;
    if hidden_size % num_attention_heads != 0 {
        return Err(Error::config(
            source,
            format!("fields \"hidden_size\" ({hidden_size}) and \"num_attention_heads\" ({num_attention_heads}): the head dimension must be a whole number"),
        ));
    }
    match f.hidden_act.as_deref() {
        None | Some("gelu") | Some("gelu_python") => {}
        Some(other) => return Err(Error::config(source, format!("field \"hidden_act\": \"{other}\" is not supported; expected the exact (erf) \"gelu\""))),
    }
    match f.position_embedding_type.as_deref() {
        None | Some("absolute") => {}
        Some(other) => {
            return Err(Error::config(
                source,
                format!("field \"position_embedding_type\": \"{other}\" is not supported; expected \"absolute\" (learned positions)"),
            ))
        }
    }
    let vocab_size = sized(source, "vocab_size", f.vocab_size, MAX_VOCAB)?;
    // transformers' BertConfig defaults.
    let pad_token_id = f.pad_token_id.unwrap_or(0);
    if pad_token_id as usize >= vocab_size {
        return Err(Error::config(
            source,
            format!(
                "field \"pad_token_id\": token id {pad_token_id} is outside the vocabulary of {vocab_size} tokens (field \"vocab_size\": ids 0 to {})",
                vocab_size - 1
            ),
        ));
    }
    let max_position_embeddings = context(source, f.max_position_embeddings, 512)?;
    let type_vocab_size = f.type_vocab_size.unwrap_or(2);
    if !(1..=MAX_TYPE_VOCAB).contains(&type_vocab_size) {
        return Err(Error::config(source, format!("field \"type_vocab_size\": expected 1 to {MAX_TYPE_VOCAB}, found {type_vocab_size}")));
    }
    let layer_norm_eps = f.layer_norm_eps.unwrap_or(1e-12);
    if !(layer_norm_eps > 0.0) {
        return Err(Error::config(source, format!("field \"layer_norm_eps\": expected a positive number, found {layer_norm_eps}")));
    }
    Ok(BertConfig {
        source: source.to_string(),
        architecture,
        architecture_name,
        declares_model_type,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size: sized(source, "intermediate_size", f.intermediate_size, MAX_INTERMEDIATE)?,
        max_position_embeddings,
        type_vocab_size,
        layer_norm_eps: layer_norm_eps as f32,
        pad_token_id,
        labels: parse_labels(source, f)?,
        problem_type: f.problem_type.as_deref().map(str::to_string),
        tie_word_embeddings: f.tie_word_embeddings.unwrap_or(true),
        initializer_range: f.initializer_range.unwrap_or(0.02),
    })
}

/// `id2label` as a list in id order; or `num_labels` generic names; or none. Label names must be
/// non-empty and distinct: a classifier whose labels cannot be told apart cannot be read.
fn parse_labels(source: &str, f: &Raw) -> Result<Vec<String>> {
    if let Some(v) = f.id2label.as_ref() {
        let map = v.as_object().ok_or_else(|| err(source, "id2label", "an object mapping ids to label names", v))?;
        if map.len() > MAX_LABELS {
            return Err(Error::config(source, format!("field \"id2label\": {} labels, more than the {MAX_LABELS} a classifier may have", map.len())));
        }
        let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for (k, name) in map {
            if let Some(name) = name.as_str() {
                if name.trim().is_empty() {
                    return Err(Error::config(source, format!("field \"id2label.{k}\": expected a label name, found an empty one")));
                }
                if let Some(other) = seen.insert(name, k) {
                    return Err(Error::config(
                        source,
                        format!("field \"id2label\": ids {other} and {k} have the same label \"{name}\"; every label must be distinct"),
                    ));
                }
            }
        }
        let mut labels = vec![None; map.len()];
        for (k, name) in map {
            let id: usize = k
                .parse()
                .ok()
                .filter(|&i| i < map.len())
                .ok_or_else(|| Error::config(source, format!("field \"id2label\": key \"{k}\" is not an id in 0..{}", map.len())))?;
            let name = name.as_str().ok_or_else(|| err(source, &format!("id2label.{k}"), "a label name", name))?;
            if labels[id].replace(name.to_string()).is_some() {
                return Err(Error::config(source, format!("field \"id2label\": id {id} appears twice")));
            }
        }
        return Ok(labels.into_iter().map(|l| l.expect("ids are distinct and below the count")).collect());
    }
    Ok(match f.num_labels {
        Some(n) if n > MAX_LABELS => return Err(Error::config(source, format!("field \"num_labels\": expected 0 to {MAX_LABELS}, found {n}"))),
        Some(n) => (0..n).map(|i| format!("LABEL_{i}")).collect(),
        None => Vec::new(),
    })
}
