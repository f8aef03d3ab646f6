//! The models that ship in the repository's `models/` folder, trained by the project itself
//! (`models/recipe/build.sh`): the defaults when no `--model` is given.
//!
//! - `clinical-small`: a small ModernBERT masked-LM (6 layers, hidden 256, an 8,192-token BPE
//!   vocabulary) pretrained on a few MB of public clinical text;
//! - `deid-small`: that encoder fine-tuned for de-identification on synthetic notes.
//!
//! They make the tools work on a fresh clone without a model hub; they are not substitutes for
//! BioClinical ModernBERT or any model trained on real clinical data (see models/README.md).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The masked-LM encoder: default of `embed`, `fill-mask` and `info`.
pub const CLINICAL_SMALL: &str = "clinical-small";
/// The de-identification model: default of `deid` and of the web page.
pub const DEID_SMALL: &str = "deid-small";

/// Folders searched for the bundled models, in order: `$RUNTIME_MODELS_DIR`, `models/` of the
/// repository the executable was built in (found from the executable's own path, `target/<profile>/`),
/// `models/` next to the executable, and the repository this crate was compiled from.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("RUNTIME_MODELS_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        // target/release/runtime-cli and target/debug/deps/<test binary>.
        for up in exe_dir.ancestors().skip(1).take(3) {
            dirs.push(up.join("models"));
        }
        dirs.push(exe_dir.join("models"));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("models"));
    dirs
}

/// The folder of a bundled model, or an error naming where it was looked for.
pub fn locate(name: &str) -> Result<PathBuf> {
    let dirs = search_dirs();
    for d in &dirs {
        let m = d.join(name);
        if m.join("config.json").is_file() && m.join("model.safetensors").is_file() {
            return Ok(m);
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.join(name).display().to_string()).collect();
    Err(Error::Input(format!(
        "the bundled model \"{name}\" was not found (looked in {}); give a Hugging Face model folder instead, or set RUNTIME_MODELS_DIR to the folder that holds {name}/",
        looked.join(", ")
    )))
}
