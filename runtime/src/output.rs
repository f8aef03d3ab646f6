//! Output files that are never half written: everything goes to a temporary file in the same
//! directory, renamed over the target only when complete. Embeddings as JSONL, `.npy` (with the
//! ids in `<file>.ids.json`) or `.safetensors` (ids in the metadata).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A file written atomically: `commit` renames the finished temporary file over the target;
/// dropping it uncommitted removes the temporary file and leaves any old target untouched.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self> {
        let shown = target.display().to_string();
        let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(Error::Input(format!("{shown}: cannot write: the directory {} does not exist", dir.display())));
        }
        let name = target.file_name().ok_or_else(|| Error::Input(format!("{shown}: not a file path")))?;
        let temp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        let file = std::fs::File::create(&temp).map_err(|e| Error::Io { path: shown.clone(), source: e })?;
        Ok(AtomicFile { target: target.to_path_buf(), temp, file: Some(std::io::BufWriter::new(file)) })
    }

    pub fn commit(mut self) -> Result<()> {
        let shown = self.target.display().to_string();
        let file = self.file.take().expect("committed once");
        let file = file.into_inner().map_err(|e| Error::Io { path: shown.clone(), source: e.into_error() })?;
        file.sync_all().map_err(|e| Error::Io { path: shown.clone(), source: e })?;
        drop(file);
        std::fs::rename(&self.temp, &self.target).map_err(|e| Error::Io { path: shown, source: e })
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.as_mut().expect("not committed").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Where results go: standard output or a file written atomically.
pub enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(AtomicFile),
}

impl Sink {
    pub fn open(path: Option<&Path>) -> Result<Self> {
        Ok(match path {
            None => Sink::Stdout(std::io::BufWriter::new(std::io::stdout())),
            Some(p) if p.as_os_str() == "-" => Sink::Stdout(std::io::BufWriter::new(std::io::stdout())),
            Some(p) => Sink::File(AtomicFile::create(p)?),
        })
    }
    pub fn finish(self) -> Result<()> {
        match self {
            Sink::Stdout(mut s) => s.flush().map_err(|e| Error::Io { path: "<stdout>".into(), source: e }),
            Sink::File(f) => f.commit(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(s) => s.write(buf),
            Sink::File(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(s) => s.flush(),
            Sink::File(f) => f.flush(),
        }
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source: e }
}

/// A `.npy` (format 1.0) little-endian f32 matrix [rows, cols].
pub fn npy_bytes(values: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic (6) + version (2) + header length (2) + header, padded with spaces to 64 bytes, '\n' last.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header = format!("{dict}{}\n", " ".repeat(pad));
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Write embeddings [N, H] to `path` by its extension: `.npy` (+ `<path>.ids.json`),
/// `.safetensors` (tensor `embeddings`, ids in the metadata), anything else JSONL.
pub fn write_embeddings(path: Option<&Path>, ids: &[String], embeddings: &[Vec<f32>], metadata: &[(&str, String)]) -> Result<()> {
    let ext = path.and_then(|p| p.extension()).and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let h = embeddings.first().map_or(0, Vec::len);
    let flat = || embeddings.iter().flatten().copied().collect::<Vec<f32>>();
    match (path, ext.as_deref()) {
        (Some(p), Some("npy")) => {
            let ids_path = PathBuf::from(format!("{}.ids.json", p.display()));
            let mut ids_file = AtomicFile::create(&ids_path)?;
            ids_file.write_all(serde_json::to_string(ids).expect("strings serialise").as_bytes()).map_err(|e| io_err(&ids_path, e))?;
            let mut f = AtomicFile::create(p)?;
            f.write_all(&npy_bytes(&flat(), embeddings.len(), h)).map_err(|e| io_err(p, e))?;
            f.commit()?;
            ids_file.commit()
        }
        (Some(p), Some("safetensors")) => {
            let mut meta: std::collections::HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            meta.insert("ids".into(), serde_json::to_string(ids).expect("strings serialise"));
            let bytes = crate::weights::serialize_f32(&[("embeddings".into(), vec![embeddings.len(), h], flat())], Some(meta))?;
            let mut f = AtomicFile::create(p)?;
            f.write_all(&bytes).map_err(|e| io_err(p, e))?;
            f.commit()
        }
        _ => {
            let mut sink = Sink::open(path)?;
            let shown = path.map_or("<stdout>".to_string(), |p| p.display().to_string());
            for (id, e) in ids.iter().zip(embeddings) {
                let line = serde_json::json!({"id": id, "embedding": e});
                writeln!(sink, "{line}").map_err(|err| Error::Io { path: shown.clone(), source: err })?;
            }
            sink.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned() {
        let b = npy_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        assert_eq!(b.len(), 10 + hl + 24);
        assert!(std::str::from_utf8(&b[10..10 + hl]).unwrap().contains("'shape': (2, 3)"));
    }

    #[test]
    fn atomic_file_leaves_nothing_when_dropped() {
        let dir = std::env::temp_dir().join(format!("atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.jsonl");
        std::fs::write(&target, "old").unwrap();
        {
            let mut f = AtomicFile::create(&target).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "the temporary file was removed");
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert!(AtomicFile::create(&dir.join("missing/out.jsonl")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
