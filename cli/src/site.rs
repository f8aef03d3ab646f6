//! `runtime-cli serve-web`: a small static file server for the browser page (`web/dist`), with a
//! model folder mounted at `/models/deid/` (the page's default model). Loopback by default (and
//! then only for requests naming a loopback host, against DNS rebinding), GET and HEAD only, no
//! directory listings, nothing outside the two folders (symbolic links included), bounded request
//! heads, timeouts and a cap on simultaneous connections. Every response makes the page
//! cross-origin isolated (COOP `same-origin`, COEP `require-corp`), which is what lets the page's
//! CPU path run on several threads (wasm threads need `SharedArrayBuffer`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What is served.
#[derive(Clone, Debug)]
pub struct Site {
    /// The built page (`web/dist`).
    pub root: PathBuf,
    /// A model folder served at `/models/deid/`.
    pub model: Option<PathBuf>,
    /// Listening on loopback only: requests must then name a loopback host.
    pub loopback: bool,
}

/// Longest request head read (request line and headers).
const MAX_HEAD: u64 = 16 * 1024;
/// Connections served at once; more get 503.
const MAX_CONNECTIONS: usize = 64;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Headers on every response: cross-origin isolation for the page (its threaded CPU build needs
/// `SharedArrayBuffer`), resources for this origin only, no MIME sniffing.
const HEADERS: &str = "Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Embedder-Policy: require-corp\r\nCross-Origin-Resource-Policy: same-origin\r\nX-Content-Type-Options: nosniff\r\n";

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

/// The relative path `rest` under `base`, refusing anything that could leave it, by its
/// components or through a symbolic link.
fn under(base: &Path, rest: &str) -> Option<PathBuf> {
    let rel = Path::new(rest);
    if rest.contains('\\') || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let file = base.join(rel).canonicalize().ok()?;
    file.starts_with(base.canonicalize().ok()?).then_some(file)
}

/// Whether a `Host` header names this machine's loopback interface.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    matches!(name.to_ascii_lowercase().as_str(), "localhost" | "127.0.0.1" | "::1")
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
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let mut reader = BufReader::new(stream.try_clone()?.take(MAX_HEAD));
        let mut out = std::io::BufWriter::new(stream);
        let simple = |out: &mut dyn Write, status: &str| write!(out, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nAllow: GET, HEAD\r\n{HEADERS}Connection: close\r\n\r\n");
        // The request head, as bytes (a bad client gets 400, not a closed connection).
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 || !line.ends_with(b"\n") {
                return simple(&mut out, "400 Bad Request");
            }
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            lines.push(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        let request = lines.first().cloned().unwrap_or_default();
        let mut parts = request.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if self.loopback {
            let host = lines.iter().skip(1).find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("host")).map(|(_, v)| v.trim().to_string()));
            if !host.as_deref().is_some_and(loopback_host) {
                return simple(&mut out, "403 Forbidden");
            }
        }
        if method != "GET" && method != "HEAD" {
            return simple(&mut out, "405 Method Not Allowed");
        }
        let Some(path) = self.resolve(target) else { return simple(&mut out, "404 Not Found") };
        let Ok(mut file) = std::fs::File::open(&path) else { return simple(&mut out, "500 Internal Server Error") };
        let len = file.metadata()?.len();
        write!(out, "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {len}\r\nCache-Control: no-cache\r\n{HEADERS}Connection: close\r\n\r\n", content_type(&path))?;
        if method == "GET" {
            std::io::copy(&mut file, &mut out)?;
        }
        out.flush()
    }

    /// Serve until the process ends, one thread per connection (at most `MAX_CONNECTIONS`).
    pub fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let site = Arc::new(self);
        let open = Arc::new(AtomicUsize::new(0));
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                open.fetch_sub(1, Ordering::SeqCst);
                let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let (site, open) = (site.clone(), open.clone());
            std::thread::spawn(move || {
                // A client that goes away mid-response is not an error of the server.
                let _ = site.respond(stream);
                open.fetch_sub(1, Ordering::SeqCst);
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
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt")).unwrap();
        let site = Site { root: root.clone(), model: Some(model.clone()), loopback: true };
        let (root, model) = (root.canonicalize().unwrap(), model.canonicalize().unwrap());
        assert_eq!(site.resolve("/"), Some(root.join("index.html")));
        assert_eq!(site.resolve("/?model=x"), Some(root.join("index.html")));
        assert_eq!(site.resolve("/pkg/web.js"), Some(root.join("pkg/web.js")));
        assert_eq!(site.resolve("/models/deid/config.json"), Some(model.join("config.json")));
        for bad in [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/..%2fsecret.txt",
            "/%2e%2e%5csecret.txt",
            "//etc/passwd",
            "/models/deid/../../secret.txt",
            "/link.txt",
            "/pkg",
            "/missing",
            "relative",
            "/%zz",
        ] {
            assert_eq!(site.resolve(bad), None, "{bad}");
        }
        assert_eq!(Site { root: root.clone(), model: None, loopback: true }.resolve("/models/deid/config.json"), None);
    }

    /// One request over a real connection; the response head and body.
    fn get(site: Site, request: &str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || site.serve(listener));
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn responses_make_the_page_cross_origin_isolated() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>page</p>").unwrap();
        let site = Site { root: dir.path().to_path_buf(), model: None, loopback: true };
        for (request, status) in [("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "200 OK"), ("GET /missing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "404 Not Found")] {
            let response = get(site.clone(), request);
            let head = response.split("\r\n\r\n").next().unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{head}");
            for header in ["Cross-Origin-Opener-Policy: same-origin", "Cross-Origin-Embedder-Policy: require-corp", "Cross-Origin-Resource-Policy: same-origin"] {
                assert!(head.lines().any(|l| l == header), "{request:?}: no {header} in\n{head}");
            }
        }
        assert!(get(site, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ends_with("<p>page</p>"));
    }

    #[test]
    fn loopback_hosts() {
        for ok in ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "127.0.0.1"] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in ["attacker.example:8000", "127.0.0.1.attacker.example", "[::2]:80", ""] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }
}
