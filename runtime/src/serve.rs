//! `runtime-cli serve-web`: a small static file server for the browser page (`web/dist`), with a
//! model folder mounted at `/models/deid/` (the page's default model). Loopback by default, GET
//! and HEAD only, no directory listings, nothing outside the two folders.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

/// What is served.
#[derive(Clone, Debug)]
pub struct Site {
    /// The built page (`web/dist`).
    pub root: PathBuf,
    /// A model folder served at `/models/deid/`.
    pub model: Option<PathBuf>,
}

/// The URL prefix of the mounted model folder.
pub const MODEL_PREFIX: &str = "/models/deid/";

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// `%XX` escapes decoded; `None` for malformed escapes or non-UTF-8 results.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The relative path `rest` under `base`, refusing anything that could leave it.
fn under(base: &Path, rest: &str) -> Option<PathBuf> {
    let rel = Path::new(rest);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(base.join(rel))
}

impl Site {
    /// The file a request path names, if it is one this site serves.
    pub fn resolve(&self, target: &str) -> Option<PathBuf> {
        let path = percent_decode(target.split(['?', '#']).next().unwrap_or(""))?;
        let file = if let Some(rest) = path.strip_prefix(MODEL_PREFIX) {
            under(self.model.as_ref()?, rest)?
        } else {
            let rest = path.strip_prefix('/')?;
            under(&self.root, if rest.is_empty() { "index.html" } else { rest })?
        };
        file.is_file().then_some(file)
    }

    fn respond(&self, stream: TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request = String::new();
        reader.read_line(&mut request)?;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
                break;
            }
        }
        let mut out = std::io::BufWriter::new(stream);
        let mut parts = request.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let simple = |out: &mut dyn Write, status: &str| write!(out, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        if method != "GET" && method != "HEAD" {
            return simple(&mut out, "405 Method Not Allowed");
        }
        let Some(path) = self.resolve(target) else { return simple(&mut out, "404 Not Found") };
        let mut file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        write!(out, "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {len}\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n", content_type(&path))?;
        if method == "GET" {
            std::io::copy(&mut file, &mut out)?;
        }
        out.flush()
    }

    /// Serve until the process ends, one thread per connection.
    pub fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let site = std::sync::Arc::new(self);
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let site = site.clone();
            std::thread::spawn(move || {
                // A client that goes away mid-response is not an error of the server.
                let _ = site.respond(stream);
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_page_and_the_model_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (root, model) = (dir.path().join("dist"), dir.path().join("model"));
        std::fs::create_dir_all(root.join("pkg")).unwrap();
        std::fs::create_dir_all(&model).unwrap();
        for f in [root.join("index.html"), root.join("pkg/web.js"), model.join("config.json"), dir.path().join("secret.txt")] {
            std::fs::write(f, "x").unwrap();
        }
        let site = Site { root: root.clone(), model: Some(model.clone()) };
        assert_eq!(site.resolve("/"), Some(root.join("index.html")));
        assert_eq!(site.resolve("/?model=x"), Some(root.join("index.html")));
        assert_eq!(site.resolve("/pkg/web.js"), Some(root.join("pkg/web.js")));
        assert_eq!(site.resolve("/models/deid/config.json"), Some(model.join("config.json")));
        for bad in ["/../secret.txt", "/%2e%2e/secret.txt", "/models/deid/../../secret.txt", "/pkg", "/missing", "relative", "/%zz"] {
            assert_eq!(site.resolve(bad), None, "{bad}");
        }
        assert_eq!(Site { root, model: None }.resolve("/models/deid/config.json"), None);
    }
}
