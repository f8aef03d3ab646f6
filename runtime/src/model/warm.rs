//! Compile a model's GPU pipelines before its weights are ready: a forward of a miniature of the
//! same configuration (the same hidden size, heads, intermediate size, biases, layer kinds and
//! heads, so the same kernels with the same compile-time arguments; a vocabulary of 64 and one
//! layer of each kind) over random weights. The browser issues it first thing when loading, so
//! the GPU compiles while the real checkpoint is parsed and uploaded, instead of during the first
//! note. The kernels take every length as a runtime argument, so nothing is compiled again at a
//! new length.

use kernels::Backend;

use super::{Encoder, ModernBert};
use crate::config::{Architecture, ModelConfig};
use crate::init::RandomWeights;
use crate::Result;

/// Issue the miniature's token-classification forward and return its logits, which the caller
/// reads (or drops) whenever it likes: the compilation happens as the kernels are launched.
/// `None` for families other than ModernBERT and for models without labels.
pub fn warm_up<B: Backend>(be: &B, config: &ModelConfig) -> Result<Option<B::Tensor>> {
    let ModelConfig::ModernBert(c) = config else { return Ok(None) };
    if c.num_labels() == 0 {
        return Ok(None);
    }
    let mut small = c.clone();
    small.vocab_size = 64;
    small.layer_types.clear();
    for kind in &c.layer_types {
        if !small.layer_types.contains(kind) {
            small.layer_types.push(*kind);
        }
    }
    small.num_hidden_layers = small.layer_types.len();
    small.max_position_embeddings = c.max_position_embeddings.min(256);
    small.architecture = Some(Architecture::TokenClassification);
    let weights = RandomWeights::new(&small, Architecture::TokenClassification, small.num_labels(), 7);
    let model = ModernBert::load(be, small, &weights)?;
    let ids: Vec<u32> = (0..16).collect();
    let batch = model.batch(be, &[&ids])?;
    Ok(Some(model.token_logits(be, &model.encode(be, &batch, None)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::Checkpoint;
    use kernels::linear::GemmPath;
    use kernels::prelude::*;
    use kernels::profile::profile;

    /// After the miniature's forward, the real model's forward at other lengths compiles nothing
    /// new on the register-tiled GEMM (the browser's path on CPU adapters); the logits have the
    /// real model's labels.
    #[test]
    fn the_miniature_compiles_every_pipeline_of_the_forward() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-modernbert-tokcls");
        let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let be = kernels::GpuBackend::new(kernels::device::wgpu_device(kernels::device::AdapterChoice::Default).unwrap()).with_gemm(GemmPath::Tiled);
        let (logits, warm) = profile(false, || warm_up(&be, &config).unwrap().unwrap());
        let ModelConfig::ModernBert(c) = &config else { panic!("a ModernBERT fixture") };
        assert_eq!(be.shape(&logits), &[16, c.num_labels()]);
        kernels::block_on(be.read(&logits)).unwrap();
        assert!(warm.pipelines > 0, "{warm:?}");
        let model = crate::Model::load(&be, config.clone(), &Checkpoint::open_dir(&dir).unwrap()).unwrap();
        for n in [5usize, 37, 130] {
            let ids: Vec<u32> = (0..n as u32).map(|i| 5 + i % 50).collect();
            let ((), p) = profile(false, || {
                let b = model.batch(&be, &[&ids]).unwrap();
                kernels::block_on(be.read(&model.token_logits(&be, &model.encode(&be, &b, None).unwrap()).unwrap())).unwrap();
            });
            assert!(p.launches() > 0, "{p:?}");
            assert_eq!(p.new_pipelines, 0, "{n} tokens compiled {} pipeline(s) the miniature did not: {:?}", p.new_pipelines, p.kernels);
        }
    }
}
