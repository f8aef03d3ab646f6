//! A Hugging Face model folder: `config.json`, `model.safetensors` (or shards), `tokenizer.json`.

use std::path::{Path, PathBuf};

use crate::config::ModernBertConfig;
use crate::tokenize::Tokenizer;
use crate::weights::Checkpoint;
use crate::{Error, Result};

/// The files of a model folder, read and cross-checked.
pub struct ModelFolder {
    pub dir: PathBuf,
    pub config: ModernBertConfig,
    pub checkpoint: Checkpoint,
    /// `None` when the folder has no `tokenizer.json`.
    pub tokenizer: Option<Tokenizer>,
}

impl ModelFolder {
    /// Open a folder; the tokenizer, when present, must agree with the config.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Input(format!("{}: not a model folder (expected a directory with config.json and model.safetensors)", dir.display())));
        }
        let config = ModernBertConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open_dir(dir)?;
        let tokenizer = if dir.join("tokenizer.json").exists() {
            let t = Tokenizer::from_dir(dir)?;
            t.check_config(&config)?;
            Some(t)
        } else {
            None
        };
        Ok(ModelFolder { dir: dir.to_path_buf(), config, checkpoint, tokenizer })
    }
}
