//! A Hugging Face model folder: `config.json`, the weights (`model.safetensors`, shards, or
//! PyTorch's `pytorch_model.bin`), and the tokenizer (`tokenizer.json`, or `vocab.txt` /
//! `vocab.json` + `merges.txt` with `tokenizer_config.json`).

use std::path::{Path, PathBuf};

use crate::config::{ModelConfig, Pooling};
use crate::tokenize::Tokenizer;
use crate::weights::Checkpoint;
use crate::{Error, Result};

/// The files of a model folder, read and cross-checked.
pub struct ModelFolder {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub checkpoint: Checkpoint,
    /// `None` when the folder has no tokenizer files (`tokenizer.json`, `vocab.txt`, `vocab.json`).
    pub tokenizer: Option<Tokenizer>,
}

impl ModelFolder {
    /// Open a folder; the tokenizer, when present, must agree with the config.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Input(format!("{}: not a model folder (expected a directory with config.json and model.safetensors)", dir.display())));
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open_dir(dir)?;
        let tokenizer = if Tokenizer::present_in(dir) {
            let t = Tokenizer::from_dir(dir)?;
            t.check_config(&config)?;
            Some(t)
        } else {
            None
        };
        Ok(ModelFolder { dir: dir.to_path_buf(), config, checkpoint, tokenizer })
    }
}

/// The pooling a sentence-transformers folder declares (`modules.json` → its Pooling module's
/// `config.json`), and whether it normalises (a `Normalize` module). `None` without `modules.json`.
pub fn sentence_transformers_pooling(dir: &Path) -> Result<Option<(Pooling, bool)>> {
    let modules_path = dir.join("modules.json");
    if !crate::files::present(&modules_path) {
        return Ok(None);
    }
    let read = |p: &Path| -> Result<serde_json::Value> {
        let shown = p.display().to_string();
        let text = crate::files::read_text(p)?;
        serde_json::from_str(&text).map_err(|e| Error::config(&shown, format!("not valid JSON: {e}")))
    };
    let modules = read(&modules_path)?;
    let list = modules.as_array().ok_or_else(|| Error::config(&modules_path.display().to_string(), "expected a list of modules"))?;
    let kind = |m: &serde_json::Value| m.get("type").and_then(|t| t.as_str()).unwrap_or_default().to_string();
    let normalize = list.iter().any(|m| kind(m).ends_with("Normalize"));
    let Some(pooling) = list.iter().find(|m| kind(m).ends_with("Pooling")) else { return Ok(None) };
    let sub = pooling.get("path").and_then(|p| p.as_str()).unwrap_or("1_Pooling");
    if Path::new(sub).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(Error::config(&modules_path.display().to_string(), format!("field \"path\" of the Pooling module: \"{sub}\" is not a folder inside the model folder")));
    }
    let cfg_path = dir.join(sub).join("config.json");
    let cfg = read(&cfg_path)?;
    let on = |k: &str| cfg.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let shown = cfg_path.display().to_string();
    let others = ["pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"];
    if let Some(k) = others.iter().find(|k| on(k)) {
        return Err(Error::config(&shown, format!("field \"{k}\": only CLS and mean pooling are supported")));
    }
    let mode = match (on("pooling_mode_cls_token"), on("pooling_mode_mean_tokens")) {
        (true, false) => Pooling::Cls,
        (false, true) => Pooling::Mean,
        _ => return Err(Error::config(&shown, "expected exactly one of \"pooling_mode_cls_token\" and \"pooling_mode_mean_tokens\" to be true")),
    };
    Ok(Some((mode, normalize)))
}
