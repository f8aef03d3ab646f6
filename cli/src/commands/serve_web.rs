//! `runtime-cli serve-web`: the browser de-identification page and a model folder, served from this machine.

use std::path::Path;

use super::Outcome;
use crate::Failure;

pub fn serve_web(model: Option<&Path>, root: &Path, port: u16, public: bool) -> Outcome {
    if !root.join("index.html").is_file() {
        return Err(Failure(format!("{}: no index.html; build the page first with web/build.sh (or pass --root)", root.display())));
    }
    if let Some(m) = model {
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !m.join(f).is_file() {
                return Err(Failure(format!("{}: no {f}; --model expects a Hugging Face model folder", m.display())));
            }
        }
    }
    let host = if public { "0.0.0.0" } else { "127.0.0.1" };
    let listener = std::net::TcpListener::bind((host, port)).map_err(|e| Failure(format!("cannot listen on {host}:{port}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Failure(e.to_string()))?;
    eprintln!("serving {} at http://{addr}/{}", root.display(), model.map(|m| format!(" with model {}", m.display())).unwrap_or_default());
    let site = crate::site::Site { root: root.to_path_buf(), model: model.map(Path::to_path_buf), loopback: !public };
    site.serve(listener).map_err(|e| Failure(e.to_string()))?;
    Ok(true)
}
