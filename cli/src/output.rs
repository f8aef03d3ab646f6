//! Output that is never half written and never lost: a file goes to a temporary file in the same
//! directory, renamed over the target only when complete (on every failure the temporary file is
//! removed); the target is checked before any work starts (not a directory, not the input, a
//! directory that can be written); a closed or failing standard output is an error, not a
//! silent success. Results are written as they come (JSONL lines, `.npy` rows, `.safetensors`
//! data), so memory does not grow with the input. Embeddings as JSONL, `.npy` (ids in
//! `<file>.ids.json`) or `.safetensors` (ids in the metadata).

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use runtime::{Error, Result};

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source: e }
}

/// Temporary files of this process not yet renamed or removed: an interrupted command (Ctrl-C,
/// SIGTERM) removes them on its way out (`remove_temporaries`).
static TEMPORARIES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn temporaries() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    TEMPORARIES.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Remove every temporary file this process still has (for a signal handler, before exiting).
pub fn remove_temporaries() {
    for p in temporaries().drain(..) {
        let _ = std::fs::remove_file(p);
    }
}

/// A temporary file beside `target`, removed when dropped unless renamed.
struct Temp {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl Temp {
    fn beside(target: &Path, tag: &str) -> Result<Self> {
        let shown = target.display().to_string();
        let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(Error::Input(format!("{shown}: cannot write: the directory {} does not exist", dir.display())));
        }
        let name = target.file_name().ok_or_else(|| Error::Input(format!("{shown}: not a file path")))?;
        let path = dir.join(format!(".{}.{tag}-{}", name.to_string_lossy(), std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .or_else(|e| {
                // A temporary file of an earlier process with this id that died before cleaning up.
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    std::fs::remove_file(&path)?;
                    std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)
                } else {
                    Err(e)
                }
            })
            .map_err(|e| Error::Io { path: format!("{shown} (cannot create a file in {})", dir.display()), source: e })?;
        temporaries().push(path.clone());
        Ok(Temp { path, file: Some(std::io::BufWriter::new(file)) })
    }

    fn writer(&mut self) -> &mut std::io::BufWriter<std::fs::File> {
        self.file.as_mut().expect("open until finished")
    }

    /// Flush and sync; the file stays open for reading back.
    fn finish(&mut self) -> std::io::Result<std::fs::File> {
        let writer = self.file.take().expect("finished once");
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(file)
    }
}

impl Temp {
    /// The file is no longer this process's to remove (renamed into place).
    fn release(&mut self) {
        temporaries().retain(|p| p != &self.path);
        self.path = PathBuf::new();
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
            self.release();
        }
    }
}

/// A file written atomically: `commit` renames the finished temporary file over the target;
/// dropping it uncommitted, or a failed commit, removes the temporary file and leaves any old
/// target untouched.
pub struct AtomicFile {
    target: PathBuf,
    temp: Temp,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self> {
        check_target(target)?;
        Ok(AtomicFile { target: target.to_path_buf(), temp: Temp::beside(target, "tmp")? })
    }

    pub fn commit(mut self) -> Result<()> {
        let file = self.temp.finish().map_err(|e| io_err(&self.target, e))?;
        drop(file);
        std::fs::rename(&self.temp.path, &self.target).map_err(|e| io_err(&self.target, e))?;
        self.temp.release();
        Ok(())
    }

    /// Overwrite the start of the file (a header whose size is fixed in advance).
    fn rewrite_start(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let w = self.temp.writer();
        w.flush()?;
        let end = w.stream_position()?;
        w.seek(std::io::SeekFrom::Start(0))?;
        w.write_all(bytes)?;
        w.seek(std::io::SeekFrom::Start(end))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.temp.writer().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.temp.writer().flush()
    }
}

/// Refuse a target that is a directory or anything but a regular file.
fn check_target(target: &Path) -> Result<()> {
    let shown = target.display();
    if target.as_os_str().is_empty() {
        return Err(Error::Input("the output path is empty".into()));
    }
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Err(Error::Input(format!("{shown}: is a directory; -o expects a file name"))),
        Ok(m) if m.file_type().is_symlink() || m.is_file() => match std::fs::metadata(target) {
            Ok(m) if m.is_dir() => Err(Error::Input(format!("{shown}: is a directory; -o expects a file name"))),
            Ok(m) if !m.is_file() => Err(Error::Input(format!("{shown}: is {}; -o expects a regular file", runtime::files::kind_of(&m)))),
            _ => Ok(()),
        },
        Ok(m) => Err(Error::Input(format!("{shown}: is {}; -o expects a regular file", runtime::files::kind_of(&m)))),
        Err(_) => Ok(()),
    }
}

/// Check an output path before any work: not the input (or `also`, e.g. `.npy`'s ids file),
/// not a directory; its directory must exist (writability is checked by creating the temporary
/// file, which the command does before it starts).
pub fn check_output(output: &Path, input: Option<&Path>) -> Result<()> {
    if output.as_os_str() == "-" {
        return Ok(());
    }
    let mut targets = vec![output.to_path_buf()];
    if output.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        targets.push(ids_path(output));
    }
    for t in &targets {
        check_target(t)?;
        if let Some(input) = input {
            if runtime::input::same_file(t, input)
                || (input.is_dir()
                    && t.parent().is_some_and(|p| runtime::input::same_file(p, input))
                    && t.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt")))
            {
                return Err(Error::Input(format!("-o {}: this is the input {}; write the output to another file", t.display(), input.display())));
            }
        }
    }
    Ok(())
}

fn ids_path(npy: &Path) -> PathBuf {
    PathBuf::from(format!("{}.ids.json", npy.display()))
}

/// Refuse to start when standard output is closed (`cmd >&-`): the results would be lost with
/// exit code 0. Rust's runtime reopens a closed standard descriptor on /dev/null before `main`
/// (read-write, which a shell's `> /dev/null` never does), so a descriptor 1 that is /dev/null
/// opened read-write is read as closed; `> /dev/null`, a deliberate discard, is allowed.
pub fn check_stdout_open() -> Result<()> {
    #[cfg(unix)]
    {
        // SAFETY: fcntl and fstat only query descriptor 1; stat reads a path we name.
        let closed = unsafe {
            let flags = libc::fcntl(1, libc::F_GETFL);
            if flags == -1 {
                true
            } else {
                let (mut fd, mut null): (libc::stat, libc::stat) = (std::mem::zeroed(), std::mem::zeroed());
                flags & libc::O_ACCMODE == libc::O_RDWR
                    && libc::fstat(1, &mut fd) == 0
                    && libc::stat(c"/dev/null".as_ptr(), &mut null) == 0
                    && fd.st_mode & libc::S_IFMT == libc::S_IFCHR
                    && fd.st_rdev == null.st_rdev
            }
        };
        if closed {
            return Err(Error::Input("standard output is closed: the results would be lost; give -o FILE, or run with standard output open".into()));
        }
    }
    Ok(())
}

/// Where results go: standard output or a file written atomically.
pub enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(AtomicFile),
}

impl Sink {
    /// Standard output (`None` or `-`) or a new atomic file; call before any work, so that an
    /// output that cannot be written fails the command at once.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        Ok(match path {
            None => Self::stdout()?,
            Some(p) if p.as_os_str() == "-" => Self::stdout()?,
            Some(p) => Sink::File(AtomicFile::create(p)?),
        })
    }
    fn stdout() -> Result<Self> {
        check_stdout_open()?;
        Ok(Sink::Stdout(std::io::BufWriter::new(std::io::stdout())))
    }
    fn name(&self) -> String {
        match self {
            Sink::Stdout(_) => "<stdout>".into(),
            Sink::File(f) => f.target.display().to_string(),
        }
    }
    /// One line (a JSON value, a row of text); a write error names the output.
    pub fn line(&mut self, value: impl std::fmt::Display) -> Result<()> {
        writeln!(self, "{value}").map_err(|e| Error::Io { path: self.name(), source: e })
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

/// The `.npy` (format 1.0) header of a little-endian f32 matrix [rows, cols], padded with
/// spaces to `total` bytes (a multiple of 64) so that it can be written before the row count is
/// known and rewritten in place after.
fn npy_header(rows: usize, cols: usize, total: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let pad = total - 10 - dict.len() - 1;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// Header size of the streamed `.npy`: room for any row and column count.
const NPY_HEADER: usize = 128;

/// A `.npy` (format 1.0) little-endian f32 matrix [rows, cols], whole (the tests' reference for
/// the streamed writer).
#[cfg(test)]
fn npy_bytes(values: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut out = npy_header(rows, cols, NPY_HEADER);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Embeddings [N, H] written as they come, to `path` by its extension: `.npy` (+
/// `<path>.ids.json`), `.safetensors` (tensor `embeddings`, ids in the metadata), anything else
/// (and standard output) JSONL.
pub struct EmbeddingWriter(Writer);

enum Writer {
    Jsonl(Sink),
    Npy { file: AtomicFile, ids_path: PathBuf, ids: Vec<String>, cols: Option<usize> },
    Safetensors { target: PathBuf, data: Temp, ids: Vec<String>, cols: Option<usize>, metadata: Vec<(String, String)> },
}

impl EmbeddingWriter {
    /// Open the output (before any work: a target that cannot be written fails at once).
    pub fn create(path: Option<&Path>, metadata: &[(&str, String)]) -> Result<Self> {
        let ext = path.and_then(|p| p.extension()).and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        Ok(EmbeddingWriter(match (path, ext.as_deref()) {
            (Some(p), Some("npy")) => {
                let ids_path = ids_path(p);
                check_target(&ids_path)?;
                let mut file = AtomicFile::create(p)?;
                file.write_all(&npy_header(0, 0, NPY_HEADER)).map_err(|e| io_err(p, e))?;
                Writer::Npy { file, ids_path, ids: Vec::new(), cols: None }
            }
            (Some(p), Some("safetensors")) => {
                check_target(p)?;
                Writer::Safetensors {
                    target: p.to_path_buf(),
                    data: Temp::beside(p, "data")?,
                    ids: Vec::new(),
                    cols: None,
                    metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
                }
            }
            _ => Writer::Jsonl(Sink::open(path)?),
        }))
    }

    /// Append rows.
    pub fn write(&mut self, ids: &[String], embeddings: &[Vec<f32>]) -> Result<()> {
        fn width(cols: &mut Option<usize>, e: &[Vec<f32>]) -> Result<()> {
            for v in e {
                match *cols {
                    None => *cols = Some(v.len()),
                    Some(c) if c != v.len() => return Err(Error::Input(format!("embeddings of {} and {c} values cannot share one matrix", v.len()))),
                    _ => {}
                }
            }
            Ok(())
        }
        match &mut self.0 {
            Writer::Jsonl(sink) => {
                for (id, e) in ids.iter().zip(embeddings) {
                    sink.line(serde_json::json!({"id": id, "embedding": e}))?;
                }
                Ok(())
            }
            Writer::Npy { file, ids: all, cols, .. } => {
                width(cols, embeddings)?;
                let shown = file.target.clone();
                for e in embeddings {
                    let bytes: Vec<u8> = e.iter().flat_map(|v| v.to_le_bytes()).collect();
                    file.write_all(&bytes).map_err(|err| io_err(&shown, err))?;
                }
                all.extend_from_slice(ids);
                Ok(())
            }
            Writer::Safetensors { target, data, ids: all, cols, .. } => {
                width(cols, embeddings)?;
                for e in embeddings {
                    let bytes: Vec<u8> = e.iter().flat_map(|v| v.to_le_bytes()).collect();
                    data.writer().write_all(&bytes).map_err(|err| io_err(target, err))?;
                }
                all.extend_from_slice(ids);
                Ok(())
            }
        }
    }

    /// Complete the output: the `.npy` header gets its row count, the ids file and the
    /// `.safetensors` file are written; every file appears at once or not at all.
    pub fn finish(self) -> Result<()> {
        match self.0 {
            Writer::Jsonl(sink) => sink.finish(),
            Writer::Npy { mut file, ids_path, ids, cols } => {
                let shown = file.target.clone();
                file.rewrite_start(&npy_header(ids.len(), cols.unwrap_or(0), NPY_HEADER)).map_err(|e| io_err(&shown, e))?;
                let mut ids_file = AtomicFile::create(&ids_path)?;
                ids_file.write_all(serde_json::to_string(&ids).expect("strings serialise").as_bytes()).map_err(|e| io_err(&ids_path, e))?;
                file.commit()?;
                ids_file.commit()
            }
            Writer::Safetensors { target, mut data, ids, cols, metadata } => {
                let (rows, cols) = (ids.len(), cols.unwrap_or(0));
                let mut meta: serde_json::Map<String, serde_json::Value> = metadata.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
                meta.insert("ids".into(), serde_json::Value::String(serde_json::to_string(&ids).expect("strings serialise")));
                let header = serde_json::json!({
                    "__metadata__": meta,
                    "embeddings": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [0, rows * cols * 4]},
                });
                let mut header = header.to_string().into_bytes();
                // Data aligned to 8 bytes, as the safetensors writer does.
                while header.len() % 8 != 0 {
                    header.push(b' ');
                }
                let mut source = data.finish().map_err(|e| io_err(&target, e))?;
                source.seek(std::io::SeekFrom::Start(0)).map_err(|e| io_err(&target, e))?;
                let mut out = AtomicFile::create(&target)?;
                out.write_all(&(header.len() as u64).to_le_bytes()).map_err(|e| io_err(&target, e))?;
                out.write_all(&header).map_err(|e| io_err(&target, e))?;
                std::io::copy(&mut source, &mut out).map_err(|e| io_err(&target, e))?;
                out.commit()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("output-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn npy_header_is_aligned() {
        let b = npy_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        assert_eq!(b.len(), 10 + hl + 24);
        assert!(std::str::from_utf8(&b[10..10 + hl]).unwrap().contains("'shape': (2, 3)"));
        assert_eq!(npy_header(usize::MAX, usize::MAX, NPY_HEADER).len(), NPY_HEADER);
    }

    #[test]
    fn atomic_file_leaves_nothing_when_dropped_or_failing() {
        let dir = scratch("atomic");
        let target = dir.join("out.jsonl");
        std::fs::write(&target, "old").unwrap();
        {
            let mut f = AtomicFile::create(&target).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(entries(&dir), vec!["out.jsonl"], "the temporary file was removed");
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert!(AtomicFile::create(&dir.join("missing/out.jsonl")).is_err());
        // A rename that fails (the target became a directory while the work ran) leaves no
        // temporary file behind.
        let late = dir.join("late.jsonl");
        let mut f = AtomicFile::create(&late).unwrap();
        f.write_all(b"x").unwrap();
        std::fs::create_dir(&late).unwrap();
        std::fs::write(late.join("keep"), "").unwrap();
        assert!(f.commit().is_err());
        assert_eq!(entries(&dir), vec!["late.jsonl", "out.jsonl"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outputs_are_checked_before_any_work() {
        let dir = scratch("check");
        let m = check_output(&dir, None).unwrap_err().to_string();
        assert!(m.ends_with("is a directory; -o expects a file name"), "{m}");
        let input = dir.join("notes.jsonl");
        std::fs::write(&input, "{}").unwrap();
        let m = check_output(&input, Some(&input)).unwrap_err().to_string();
        assert!(m.contains("this is the input"), "{m}");
        // The same file under another name.
        let m = check_output(&dir.join(".").join("notes.jsonl"), Some(&input)).unwrap_err().to_string();
        assert!(m.contains("this is the input"), "{m}");
        std::fs::create_dir(dir.join("e.npy.ids.json")).unwrap();
        let m = check_output(&dir.join("e.npy"), Some(&input)).unwrap_err().to_string();
        assert!(m.contains("e.npy.ids.json: is a directory"), "{m}");
        assert!(check_output(&dir.join("fresh.jsonl"), Some(&input)).is_ok());
        assert!(EmbeddingWriter::create(Some(&dir.join("nowhere/e.npy")), &[]).is_err());
        assert_eq!(entries(&dir), vec!["e.npy.ids.json", "notes.jsonl"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn streamed_npy_and_safetensors_hold_every_row() {
        let dir = scratch("stream");
        let rows: Vec<Vec<f32>> = (0..5).map(|i| vec![i as f32, -(i as f32), 0.5]).collect();
        let ids: Vec<String> = (0..5).map(|i| format!("d{i}")).collect();
        for name in ["e.npy", "e.safetensors"] {
            let p = dir.join(name);
            let mut w = EmbeddingWriter::create(Some(&p), &[("model", "m".into())]).unwrap();
            w.write(&ids[..2], &rows[..2]).unwrap();
            w.write(&ids[2..], &rows[2..]).unwrap();
            w.finish().unwrap();
        }
        let npy = std::fs::read(dir.join("e.npy")).unwrap();
        assert_eq!(npy, npy_bytes(&rows.concat(), 5, 3));
        let ids_json: Vec<String> = serde_json::from_str(&std::fs::read_to_string(dir.join("e.npy.ids.json")).unwrap()).unwrap();
        assert_eq!(ids_json, ids);
        let st = runtime::weights::Checkpoint::open_file(&dir.join("e.safetensors")).unwrap();
        let t = st.get("embeddings").unwrap();
        assert_eq!(t.shape, &[5, 3]);
        assert_eq!(t.to_f32().unwrap(), rows.concat());
        let bytes = std::fs::read(dir.join("e.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let ids_meta: Vec<String> = serde_json::from_str(&meta.metadata().as_ref().unwrap()["ids"]).unwrap();
        assert_eq!(ids_meta, ids);
        assert_eq!(entries(&dir), vec!["e.npy", "e.npy.ids.json", "e.safetensors"], "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
