//! The optimizer: AdamW or StableAdamW over every parameter of a model, one `adam_step` kernel
//! per tensor, optional global gradient-norm clipping. Weight decay only on matrices (ndim ≥ 2)
//! whose name does not end in `.bias`: never on norms and biases.

use std::collections::HashMap;

use kernels::optim::{AdamStep, Rule};
use kernels::Backend;
use serde::{Deserialize, Serialize};

use runtime::model::Encoder;

use crate::backward::Grads;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// torch.optim.AdamW (decay lr·wd).
    AdamW,
    /// optimi's StableAdamW with fully decoupled weight decay (ModernBERT's `decoupled_stableadamw`).
    StableAdamW,
}

/// Hyper-parameters. `lr` is the peak learning rate (StableAdamW's decay is relative to it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    #[serde(default = "default_betas")]
    pub betas: (f64, f64),
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the global L2 norm of the gradient to this value.
    #[serde(default)]
    pub grad_clip: Option<f64>,
}

fn default_betas() -> (f64, f64) {
    (0.9, 0.98)
}
fn default_eps() -> f64 {
    1e-6
}

impl OptimizerConfig {
    /// ModernBERT / BioClinical ModernBERT: StableAdamW, betas (0.9, 0.98), eps 1e-6, wd 1e-5.
    pub fn modernbert(lr: f64) -> Self {
        OptimizerConfig { kind: OptimizerKind::StableAdamW, lr, betas: (0.9, 0.98), eps: 1e-6, weight_decay: 1e-5, grad_clip: None }
    }
}

/// Whether a parameter decays: matrices, not norms or biases.
pub fn decays(name: &str, shape: &[usize]) -> bool {
    shape.len() >= 2 && !name.ends_with(".bias")
}

/// Moments of one parameter.
pub struct Moments<B: Backend> {
    pub m: B::Tensor,
    pub v: B::Tensor,
}

/// What a step reports.
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    /// Global L2 norm of the gradient (before clipping).
    pub grad_norm: f64,
    /// StableAdamW's per-tensor update RMS, in parameter order.
    pub rms: Vec<(String, f32)>,
}

pub struct Optimizer<B: Backend> {
    pub config: OptimizerConfig,
    /// Steps taken (the next step is `step + 1`).
    pub step: u64,
    pub state: HashMap<String, Moments<B>>,
}

impl<B: Backend> Optimizer<B> {
    pub fn new(config: OptimizerConfig) -> Self {
        Optimizer { config, step: 0, state: HashMap::new() }
    }

    /// One update of every parameter that has a gradient, at learning rate `lr`. With
    /// `want_rms`, StableAdamW's per-tensor RMS values are read back.
    pub fn step(&mut self, be: &B, model: &mut dyn Encoder<B>, grads: &Grads<B>, lr: f64, want_rms: bool) -> Result<StepStats> {
        let c = self.config.clone();
        // One Σg² per tensor on the device, gathered into one vector: a single read-back.
        let per_tensor = grads.tensors.values().map(|g| be.sum_squares(g)).collect::<kernels::Result<Vec<_>>>()?;
        let sq: f64 = if per_tensor.is_empty() { 0.0 } else { kernels::block_on(be.read(&be.concat_rows(&per_tensor)?))?.iter().map(|&v| v as f64).sum() };
        let grad_norm = sq.sqrt();
        if !grad_norm.is_finite() {
            return Err(Error::Input(format!("the gradient norm is {grad_norm}: the loss diverged (lower the learning rate)")));
        }
        let clip = match c.grad_clip {
            Some(max) if grad_norm > max => Some((max / (grad_norm + 1e-6)) as f32),
            _ => None,
        };
        self.step += 1;
        let rule = match c.kind {
            OptimizerKind::AdamW => Rule::AdamW,
            OptimizerKind::StableAdamW => Rule::StableAdamW { max_lr: c.lr },
        };
        let mut stats = StepStats { grad_norm, rms: Vec::new() };
        for (name, param) in model.parameters_mut() {
            let Some(g) = grads.get(&name) else { continue };
            let shape = be.shape(param).to_vec();
            if be.shape(g) != shape.as_slice() {
                return Err(Error::Input(format!("gradient of {name} has shape {:?}, the parameter {shape:?}", be.shape(g))));
            }
            let g = match clip {
                Some(s) => be.scale(g, s)?,
                None => g.clone(),
            };
            let n: usize = shape.iter().product();
            let state = match self.state.remove(&name) {
                Some(s) => s,
                None => Moments { m: be.upload_vec(vec![0.0; n], &shape)?, v: be.upload_vec(vec![0.0; n], &shape)? },
            };
            let s = AdamStep {
                rule,
                lr,
                beta1: c.betas.0,
                beta2: c.betas.1,
                eps: c.eps,
                weight_decay: if decays(&name, &shape) { c.weight_decay } else { 0.0 },
                step: self.step,
            };
            let up = be.adam_step(param, &g, &state.m, &state.v, &s)?;
            *param = up.param;
            if want_rms {
                if let Some(r) = &up.rms {
                    stats.rms.push((name.clone(), kernels::block_on(be.read(r))?[0]));
                }
            }
            self.state.insert(name, Moments { m: up.m, v: up.v });
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::prelude::*;
    use kernels::CpuBackend;
    use runtime::config::Architecture;
    use runtime::ModernBert;

    #[test]
    fn clipping_scales_the_gradient_to_the_norm_and_decay_skips_norms() {
        let be = CpuBackend::new();
        let folder = runtime::folder::ModelFolder::open(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-modernbert-mlm")).unwrap();
        let mut config = folder.config.modernbert("test").unwrap().clone();
        config.architecture = Some(Architecture::MaskedLm);
        let mut model = ModernBert::load_trainable(&be, config, &folder.checkpoint).unwrap();
        // Gradients of norm 5 on two tensors: 3 on a matrix entry, 4 on a norm weight.
        let mut grads = Grads::default();
        let mut g1 = vec![0f32; 144 * 48];
        g1[0] = 3.0;
        let mut g2 = vec![0f32; 48];
        g2[0] = 4.0;
        grads.tensors.insert("model.layers.0.attn.Wqkv.weight".into(), be.upload_vec(g1, &[144, 48]).unwrap());
        grads.tensors.insert("model.final_norm.weight".into(), be.upload_vec(g2, &[48]).unwrap());
        let mut opt = Optimizer::new(OptimizerConfig { kind: OptimizerKind::AdamW, lr: 0.1, betas: (0.9, 0.98), eps: 1e-6, weight_decay: 0.5, grad_clip: Some(1.0) });
        let before = kernels::block_on(be.read(&model.layers[0].attn.Wqkv.weight)).unwrap();
        let norm_before = kernels::block_on(be.read(&model.final_norm.weight)).unwrap();
        let stats = opt.step(&be, &mut model, &grads, 0.1, false).unwrap();
        assert!((stats.grad_norm - 5.0).abs() < 1e-9);
        // First moments hold (1 − β₁)·g·(1/5): the gradient was scaled to norm 1.
        let m = kernels::block_on(be.read(&opt.state["model.layers.0.attn.Wqkv.weight"].m)).unwrap();
        assert!((m[0] - 0.1 * 3.0 / 5.0).abs() < 1e-6, "{}", m[0]);
        let m2 = kernels::block_on(be.read(&opt.state["model.final_norm.weight"].m)).unwrap();
        assert!((m2[0] - 0.1 * 4.0 / 5.0).abs() < 1e-6, "{}", m2[0]);
        // Weight decay: the matrix's untouched entries shrink by lr·wd, the norm's do not.
        let after = kernels::block_on(be.read(&model.layers[0].attn.Wqkv.weight)).unwrap();
        assert!((after[1] - before[1] * (1.0 - 0.05)).abs() < 1e-6);
        let norm_after = kernels::block_on(be.read(&model.final_norm.weight)).unwrap();
        assert_eq!(norm_after[1], norm_before[1]);
        // Only tensors with gradients have state.
        assert_eq!(opt.state.len(), 2);
    }
}
