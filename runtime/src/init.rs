//! Fresh weights, initialised like transformers' `_init_weights` (spec/MODERNBERT.md §7):
//! truncated normal N(0, σ²) cut at ±2σ, LayerNorm weights 1, biases 0. Used for benchmarks and
//! tests with the real configs, and by the trainer for new heads and from-scratch models.

use crate::config::{Architecture, BertConfig, ModernBertConfig};
use crate::weights::{serialize_f32, WeightSource};
use crate::{Error, Result};

/// How a parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal with this σ, truncated at ± `initializer_cutoff_factor` σ.
    Normal(f32),
    Ones,
    Zeros,
}

/// Every parameter of a task model, in the order of transformers' `named_parameters()`, with its
/// shape and initialisation. The tied decoder weight is not listed (it is the embedding).
pub fn parameters(c: &ModernBertConfig, arch: Architecture, num_labels: usize) -> Vec<(String, Vec<usize>, Init)> {
    let (h, i, v, l) = (c.hidden_size, c.intermediate_size, c.vocab_size, c.num_hidden_layers);
    let p = if arch == Architecture::Model { "" } else { "model." };
    let std = c.initializer_range as f32;
    let std_out = std / (2.0 * l as f32).sqrt();
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, init: Init| out.push((name, shape, init));
    let norm = |push: &mut dyn FnMut(String, Vec<usize>, Init), name: String| {
        push(format!("{name}.weight"), vec![h], Init::Ones);
        if c.norm_bias {
            push(format!("{name}.bias"), vec![h], Init::Zeros);
        }
    };
    let linear = |push: &mut dyn FnMut(String, Vec<usize>, Init), name: String, o: usize, n: usize, bias: bool, s: f32| {
        push(format!("{name}.weight"), vec![o, n], Init::Normal(s));
        if bias {
            push(format!("{name}.bias"), vec![o], Init::Zeros);
        }
    };
    push(format!("{p}embeddings.tok_embeddings.weight"), vec![v, h], Init::Normal(std));
    norm(&mut push, format!("{p}embeddings.norm"));
    for n in 0..l {
        if n > 0 {
            norm(&mut push, format!("{p}layers.{n}.attn_norm"));
        }
        linear(&mut push, format!("{p}layers.{n}.attn.Wqkv"), 3 * h, h, c.attention_bias, std);
        linear(&mut push, format!("{p}layers.{n}.attn.Wo"), h, h, c.attention_bias, std_out);
        norm(&mut push, format!("{p}layers.{n}.mlp_norm"));
        linear(&mut push, format!("{p}layers.{n}.mlp.Wi"), 2 * i, h, c.mlp_bias, std);
        linear(&mut push, format!("{p}layers.{n}.mlp.Wo"), h, i, c.mlp_bias, std_out);
    }
    norm(&mut push, format!("{p}final_norm"));
    if arch != Architecture::Model {
        linear(&mut push, "head.dense".into(), h, h, c.classifier_bias, std_out);
        norm(&mut push, "head.norm".into());
    }
    match arch {
        Architecture::MaskedLm if c.decoder_bias => push("decoder.bias".into(), vec![v], Init::Zeros),
        Architecture::TokenClassification | Architecture::SequenceClassification => {
            linear(&mut push, "classifier".into(), num_labels, h, true, (h as f32).powf(-0.5))
        }
        _ => {}
    }
    out
}

/// Every parameter of a classic BERT task model, in the order of transformers'
/// `named_parameters()` (the tied decoder not listed), initialised like its `_init_weights`:
/// N(0, initializer_range²) not truncated, LayerNorm weights 1, biases 0. A bare `BertModel`
/// includes its pooler; the task models name the encoder `bert.*`.
pub fn bert_parameters(c: &BertConfig, arch: Architecture, num_labels: usize) -> Vec<(String, Vec<usize>, Init)> {
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let p = if arch == Architecture::Model { "" } else { "bert." };
    let std = Init::Normal(c.initializer_range as f32);
    let mut out: Vec<(String, Vec<usize>, Init)> = Vec::new();
    let linear = |out: &mut Vec<(String, Vec<usize>, Init)>, name: String, o: usize, n: usize| {
        out.push((format!("{name}.weight"), vec![o, n], std));
        out.push((format!("{name}.bias"), vec![o], Init::Zeros));
    };
    let norm = |out: &mut Vec<(String, Vec<usize>, Init)>, name: String| {
        out.push((format!("{name}.weight"), vec![h], Init::Ones));
        out.push((format!("{name}.bias"), vec![h], Init::Zeros));
    };
    out.push((format!("{p}embeddings.word_embeddings.weight"), vec![v, h], std));
    out.push((format!("{p}embeddings.position_embeddings.weight"), vec![c.max_position_embeddings, h], std));
    out.push((format!("{p}embeddings.token_type_embeddings.weight"), vec![c.type_vocab_size, h], std));
    norm(&mut out, format!("{p}embeddings.LayerNorm"));
    for l in 0..c.num_hidden_layers {
        let e = format!("{p}encoder.layer.{l}");
        for part in ["query", "key", "value"] {
            linear(&mut out, format!("{e}.attention.self.{part}"), h, h);
        }
        linear(&mut out, format!("{e}.attention.output.dense"), h, h);
        norm(&mut out, format!("{e}.attention.output.LayerNorm"));
        linear(&mut out, format!("{e}.intermediate.dense"), i, h);
        linear(&mut out, format!("{e}.output.dense"), h, i);
        norm(&mut out, format!("{e}.output.LayerNorm"));
    }
    match arch {
        Architecture::Model | Architecture::SequenceClassification => linear(&mut out, format!("{p}pooler.dense"), h, h),
        _ => {}
    }
    match arch {
        Architecture::MaskedLm => {
            out.push(("cls.predictions.bias".into(), vec![v], Init::Zeros));
            linear(&mut out, "cls.predictions.transform.dense".into(), h, h);
            norm(&mut out, "cls.predictions.transform.LayerNorm".into());
        }
        Architecture::TokenClassification | Architecture::SequenceClassification => linear(&mut out, "classifier".into(), num_labels, h),
        Architecture::Model => {}
    }
    out
}

/// A deterministic generator (SplitMix64) with a truncated-normal sampler.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The whole state (a resumed run continues from it with `Rng::new`).
    pub fn state(&self) -> u64 {
        self.0
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// n token ids below `bound` (random batches for benchmarks).
    pub fn ids(&mut self, n: usize, bound: usize) -> Vec<u32> {
        (0..n).map(|_| (self.next_u64() % bound.max(1) as u64) as u32).collect()
    }
    /// n values uniform in [−scale, scale).
    pub fn uniform_vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| (self.uniform() * 2.0 - 1.0) as f32 * scale).collect()
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// N(0, σ²) truncated to ±cutoff·σ (rejection).
    pub fn truncated_normal(&mut self, std: f32, cutoff: f64) -> f32 {
        loop {
            let z = self.normal();
            if z.abs() <= cutoff {
                return (z * std as f64) as f32;
            }
        }
    }
}

/// Values of one parameter; normals are cut at ±`cutoff`·σ.
pub fn init_values(shape: &[usize], init: Init, cutoff: f64, rng: &mut Rng) -> Vec<f32> {
    let n = shape.iter().product();
    match init {
        Init::Ones => vec![1.0; n],
        Init::Zeros => vec![0.0; n],
        Init::Normal(s) => (0..n).map(|_| rng.truncated_normal(s, cutoff)).collect(),
    }
}

/// Fresh weights generated on demand, tensor by tensor (never all in memory at once): each
/// tensor's values depend only on the seed and its name.
pub struct RandomWeights {
    params: Vec<(String, Vec<usize>, Init)>,
    seed: u64,
    cutoff: f64,
}

impl RandomWeights {
    pub fn new(c: &ModernBertConfig, arch: Architecture, num_labels: usize, seed: u64) -> Self {
        RandomWeights { params: parameters(c, arch, num_labels), seed, cutoff: c.initializer_cutoff_factor }
    }
    /// Fresh classic-BERT weights (`bert_parameters`; normals not truncated).
    pub fn bert(c: &BertConfig, arch: Architecture, num_labels: usize, seed: u64) -> Self {
        RandomWeights { params: bert_parameters(c, arch, num_labels), seed, cutoff: f64::INFINITY }
    }
    fn find(&self, name: &str) -> Option<&(String, Vec<usize>, Init)> {
        self.params.iter().find(|(n, _, _)| n == name)
    }
    /// Every tensor, in `named_parameters()` order.
    pub fn tensors(&self) -> impl Iterator<Item = (String, Vec<usize>, Vec<f32>)> + '_ {
        self.params.iter().map(|(n, s, i)| (n.clone(), s.clone(), self.values(n, s, *i)))
    }
    fn values(&self, name: &str, shape: &[usize], init: Init) -> Vec<f32> {
        // FNV-1a of the name mixed into the seed: independent of the order tensors are made in.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
        init_values(shape, init, self.cutoff, &mut Rng::new(self.seed ^ h))
    }
}

impl WeightSource for RandomWeights {
    fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.find(name).map(|p| p.1.clone())
    }
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (_, s, init) = self.find(name).ok_or_else(|| self.missing(name))?;
        if s != shape {
            return Err(Error::weights("random initialisation", format!("tensor \"{name}\" has shape {s:?}, expected {shape:?}")));
        }
        Ok(self.values(name, s, *init))
    }
    fn missing(&self, name: &str) -> Error {
        Error::weights("random initialisation", format!("no tensor \"{name}\""))
    }
    fn location(&self, _name: &str) -> String {
        "random initialisation".into()
    }
}

/// A whole random checkpoint as `model.safetensors` bytes (seeded, reproducible).
pub fn random_checkpoint(c: &ModernBertConfig, arch: Architecture, num_labels: usize, seed: u64) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = RandomWeights::new(c, arch, num_labels, seed).tensors().collect();
    let meta = [("format".to_string(), "pt".to_string())].into_iter().collect();
    serialize_f32(&tensors, Some(meta))
}
