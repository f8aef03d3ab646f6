//! What a forward pass keeps besides its result: nothing (inference), the named intermediate
//! tensors of transformers' reference files (the parity check), or every activation the
//! trainer's backward reads (training). The forward is the same code in all three cases.

use std::collections::HashMap;

use kernels::Backend;

use super::parts::Ropes;
use super::Batch;
use crate::{Error, Result};

/// A saved activation's key: the layer it belongs to (`None` outside the layers) and its name.
type Key = (Option<usize>, &'static str);

pub struct Tape<B: Backend> {
    /// The reference file's names (`embeddings`, `layer_{i}`, …) in the order they were made.
    pub trace: Option<Vec<(String, B::Tensor)>>,
    saved: Option<HashMap<Key, B::Tensor>>,
}

impl<B: Backend> Tape<B> {
    /// Keep nothing.
    pub fn none() -> Self {
        Tape { trace: None, saved: None }
    }
    /// Keep the intermediate tensors that transformers' reference files name.
    pub fn trace() -> Self {
        Tape { trace: Some(Vec::new()), saved: None }
    }
    /// Keep every activation a backward pass reads.
    pub fn backward() -> Self {
        Tape { trace: None, saved: Some(HashMap::new()) }
    }
    pub fn saving(&self) -> bool {
        self.saved.is_some()
    }
    /// A saved activation: `name` of `layer` (`None` outside the layers).
    pub fn get(&self, layer: Option<usize>, name: &'static str) -> Result<&B::Tensor> {
        let missing = || {
            let at = layer.map(|l| format!(" of layer {l}")).unwrap_or_default();
            Error::Input(format!("the forward pass kept no \"{name}\"{at}: run it with Tape::backward() before the backward"))
        };
        self.saved.as_ref().and_then(|s| s.get(&(layer, name))).ok_or_else(missing)
    }
    pub(crate) fn save(&mut self, layer: Option<usize>, name: &'static str, t: &B::Tensor) {
        if let Some(s) = self.saved.as_mut() {
            s.insert((layer, name), t.clone());
        }
    }
    pub(crate) fn record(&mut self, name: impl FnOnce() -> String, t: &B::Tensor) {
        if let Some(tr) = self.trace.as_mut() {
            tr.push((name(), t.clone()));
        }
    }
}

/// What every part of one forward pass reads besides its input: the batch's layout, the
/// rotary tables (ModernBERT), the layer it runs in, and the tape.
pub struct Ctx<'a, B: Backend> {
    pub batch: &'a Batch<B>,
    pub ropes: Option<&'a Ropes<B>>,
    pub layer: Option<usize>,
    pub tape: &'a mut Tape<B>,
}

impl<B: Backend> Ctx<'_, B> {
    /// Keep `t` for the backward, under this layer.
    pub fn save(&mut self, name: &'static str, t: &B::Tensor) {
        self.tape.save(self.layer, name, t);
    }
    /// Keep `t` under a reference-file name (made only when tracing).
    pub fn record(&mut self, name: impl FnOnce() -> String, t: &B::Tensor) {
        self.tape.record(name, t);
    }
    pub fn saving(&self) -> bool {
        self.tape.saving()
    }
}
