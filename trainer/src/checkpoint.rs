//! Checkpoints: a Hugging Face model folder (`config.json`, `model.safetensors`, tokenizer files)
//! that `runtime-cli` and transformers load unchanged, plus the optimizer's moments
//! (`optimizer.safetensors`) and where the run was (`trainer_state.json`). A checkpoint is
//! written into a temporary directory and renamed into place, so a crash never leaves a
//! half-written one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kernels::Backend;
use runtime::weights::{serialize_f32, Checkpoint};
use serde::{Deserialize, Serialize};

use crate::data::{write_atomic, LoaderState};
use crate::optim::{Moments, Optimizer};
use crate::{Error, Result};
use runtime::model::Encoder;

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source: e }
}

/// Where a run stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Index of the phase in the run configuration.
    pub phase: usize,
    /// Optimizer steps done in this phase.
    pub phase_step: u64,
    /// Optimizer steps done in the whole run.
    pub global_step: u64,
    /// Tokens trained on in the whole run.
    pub tokens: u64,
    pub loader: LoaderState,
    /// The masking random generator's state.
    pub mask_rng: u64,
}

/// Files copied from the model's source folder into every checkpoint.
pub const TOKENIZER_FILES: [&str; 6] = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt"];

/// The model's parameters, read back, in checkpoint order and under transformers' names (BERT's
/// fused q|k|v split back into query, key and value).
pub fn parameters<B: Backend>(be: &B, model: &mut dyn Encoder<B>) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
    read_named(be, model.parameters_mut().into_iter().map(|(name, t)| (name, &*t)))
}

/// Read back named device tensors (parameters, gradients) with their shapes, under transformers'
/// names (BERT's fused q|k|v split back into query, key and value).
pub fn read_named<'t, B: Backend + 't>(be: &B, named: impl IntoIterator<Item = (String, &'t B::Tensor)>) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
    let mut out = Vec::new();
    for (name, t) in named {
        out.push((name, be.shape(t).to_vec(), kernels::block_on(be.read(t))?));
    }
    Ok(unfuse(out))
}

/// Write a checkpoint folder `dir`: the model as a Hugging Face folder (config text as given,
/// tokenizer files copied from `tokenizer_dir`), the optimizer and the state.
pub fn save<B: Backend>(
    be: &B,
    dir: &Path,
    config_json: &str,
    tokenizer_dir: Option<&Path>,
    model: &mut dyn Encoder<B>,
    optimizer: Option<&Optimizer<B>>,
    state: Option<&TrainerState>,
) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let params = parameters(be, model)?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_atomic(&tmp.join("model.safetensors"), &serialize_f32(&params, Some(meta))?)?;
    write_atomic(&tmp.join("config.json"), config_json.as_bytes())?;
    if let Some(src) = tokenizer_dir {
        for f in TOKENIZER_FILES {
            let from = src.join(f);
            if from.exists() {
                std::fs::copy(&from, tmp.join(f)).map_err(|e| io(&from, e))?;
            }
        }
    }
    if let Some(opt) = optimizer {
        let mut tensors = Vec::new();
        let mut names: Vec<&String> = opt.state.keys().collect();
        names.sort();
        for name in names {
            let m = &opt.state[name];
            let shape = be.shape(&m.m).to_vec();
            tensors.push((format!("m.{name}"), shape.clone(), kernels::block_on(be.read(&m.m))?));
            tensors.push((format!("v.{name}"), shape, kernels::block_on(be.read(&m.v))?));
        }
        let mut meta = HashMap::new();
        meta.insert("step".to_string(), opt.step.to_string());
        meta.insert("config".to_string(), serde_json::to_string(&opt.config).expect("serialisable"));
        write_atomic(&tmp.join("optimizer.safetensors"), &serialize_f32(&tensors, Some(meta))?)?;
    }
    if let Some(s) = state {
        write_atomic(&tmp.join("trainer_state.json"), &serde_json::to_vec_pretty(s).expect("serialisable"))?;
    }
    // Replace an older checkpoint of the same name only once the new one is complete.
    if dir.exists() {
        let old = dir.with_extension("old");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
        }
        std::fs::rename(dir, &old).map_err(|e| io(dir, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| io(dir, e))?;
        // What the run keeps beside the model (fine-tuning's TensorBoard events, whose writer
        // is still open: a rename keeps its file) moves into the new folder.
        for keep in KEPT {
            let from = old.join(keep);
            if from.exists() && !dir.join(keep).exists() {
                std::fs::rename(&from, dir.join(keep)).map_err(|e| io(&from, e))?;
            }
        }
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| io(dir, e))?;
    }
    Ok(())
}

/// Entries of a model folder that are the run's, not the model's: kept when the model is replaced.
const KEPT: [&str; 1] = ["tensorboard"];

/// Restore the optimizer's moments and step from a checkpoint folder.
pub fn load_optimizer<B: Backend>(be: &B, dir: &Path, optimizer: &mut Optimizer<B>) -> Result<()> {
    let path = dir.join("optimizer.safetensors");
    let ck = Checkpoint::open_file(&path)?;
    let file = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
    let (_, meta) = safetensors_metadata(&bytes).map_err(|m| Error::file(&file, m))?;
    optimizer.step = meta.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| Error::file(&file, "metadata \"step\": expected an integer"))?;
    optimizer.state.clear();
    let names: Vec<String> = ck.names().filter_map(|n| n.strip_prefix("m.").map(str::to_string)).collect();
    for name in names {
        let m = ck.require(&format!("m.{name}"))?;
        let v = ck.require(&format!("v.{name}"))?;
        let shape = m.shape.to_vec();
        optimizer.state.insert(name, Moments { m: be.upload_vec(m.to_f32()?, &shape)?, v: be.upload_vec(v.to_f32()?, &shape)? });
    }
    Ok(())
}

/// The `__metadata__` of a safetensors file.
fn safetensors_metadata(bytes: &[u8]) -> std::result::Result<((), HashMap<String, String>), String> {
    if bytes.len() < 8 {
        return Err("not a safetensors file".into());
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8 + n).ok_or("truncated header")?).map_err(|e| format!("header: {e}"))?;
    let meta = header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default();
    Ok(((), meta))
}

/// Read `trainer_state.json` of a checkpoint.
pub fn load_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path.display().to_string(), format!("not a trainer state: {e}")))
}

/// The newest complete checkpoint under `root` (folders `step-NNNNNNNN` with a state file).
pub fn latest(root: &Path) -> Result<Option<PathBuf>> {
    if !root.exists() {
        return Ok(None);
    }
    let mut best: Option<(u64, PathBuf)> = None;
    for e in std::fs::read_dir(root).map_err(|e| io(root, e))? {
        let p = e.map_err(|e| io(root, e))?.path();
        let Some(n) = p.file_name().and_then(|f| f.to_str()).and_then(|f| f.strip_prefix("step-")).and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if p.join("trainer_state.json").exists() && best.as_ref().is_none_or(|(b, _)| n > *b) {
            best = Some((n, p));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// Copy a model folder to `out` with its weights stored as `dtype` (F16 or BF16 halve the size;
/// F32 copies): `config.json`, the tokenizer files and `model.safetensors`, nothing of the
/// optimizer. Returns the size of the written weights file in bytes.
pub fn export(src: &Path, out: &Path, dtype: runtime::weights::StoredDtype) -> Result<u64> {
    let ck = Checkpoint::open_dir(src)?;
    let mut names: Vec<String> = ck.names().map(str::to_string).collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let t = ck.require(&name)?;
        tensors.push((name, t.shape.to_vec(), t.to_f32()?));
    }
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = runtime::weights::serialize(&tensors, dtype, Some(meta))?;
    let tmp = out.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    write_atomic(&tmp.join("model.safetensors"), &bytes)?;
    for f in std::iter::once("config.json").chain(TOKENIZER_FILES) {
        let from = src.join(f);
        if from.exists() {
            std::fs::copy(&from, tmp.join(f)).map_err(|e| io(&from, e))?;
        } else if f == "config.json" {
            return Err(Error::Input(format!("{}: no config.json (expected a model folder)", src.display())));
        }
    }
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| io(out, e))?;
    Ok(bytes.len() as u64)
}

/// Named tensors (parameters, gradients, optimizer moments) with the fused
/// `….attention.self.qkv.{weight,bias}` split into transformers' `query`, `key` and `value`
/// (row blocks of H); everything else unchanged and in order.
pub fn unfuse(tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::with_capacity(tensors.len() + tensors.len() / 4);
    for (name, shape, values) in tensors {
        let Some((stem, kind)) = name.rsplit_once('.').and_then(|(s, k)| Some((s.strip_suffix(".attention.self.qkv")?, k))) else {
            out.push((name, shape, values));
            continue;
        };
        let rows = shape[0] / 3;
        let per = values.len() / 3;
        let mut part_shape = shape.clone();
        part_shape[0] = rows;
        for (j, part) in ["query", "key", "value"].into_iter().enumerate() {
            out.push((format!("{stem}.attention.self.{part}.{kind}"), part_shape.clone(), values[j * per..(j + 1) * per].to_vec()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unfuse;

    #[test]
    fn unfuse_splits_qkv_rows_and_keeps_the_rest() {
        let w: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let out = unfuse(vec![
            ("bert.encoder.layer.0.attention.self.qkv.weight".into(), vec![6, 2], w),
            ("bert.encoder.layer.0.attention.self.qkv.bias".into(), vec![6], vec![0., 1., 2., 3., 4., 5.]),
            ("classifier.bias".into(), vec![2], vec![7., 8.]),
        ]);
        let names: Vec<&str> = out.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bert.encoder.layer.0.attention.self.query.weight",
                "bert.encoder.layer.0.attention.self.key.weight",
                "bert.encoder.layer.0.attention.self.value.weight",
                "bert.encoder.layer.0.attention.self.query.bias",
                "bert.encoder.layer.0.attention.self.key.bias",
                "bert.encoder.layer.0.attention.self.value.bias",
                "classifier.bias"
            ]
        );
        assert_eq!(out[1].1, vec![2, 2]);
        assert_eq!(out[1].2, vec![4., 5., 6., 7.]);
        assert_eq!(out[5].2, vec![4., 5.]);
        assert_eq!(out[6].2, vec![7., 8.]);
    }
}
