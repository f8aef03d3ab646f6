//! Reading the files users hand over, failing closed: a path where a regular file is expected is
//! opened without blocking and checked to be one (a FIFO, socket or device is refused at once
//! instead of hanging the tool), a dangling symbolic link is named as such, text loses a UTF-8
//! byte-order mark, and nothing is read past a stated size. The text checks (`utf8`, `text`)
//! serve the browser too, for files that arrive as bytes.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// The most bytes a JSON or text file of a model folder (config, tokenizer, index) may hold: the
/// largest real `tokenizer.json` files are a few tens of MB.
pub const MAX_SMALL_FILE: u64 = 512 << 20;

/// What kind of file system entry this is, in words (for messages).
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    if t.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// True when something is at `path`, a dangling symbolic link included (so that it is reported,
/// not silently taken for absent).
pub fn present(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source: e }
}

/// Why `path` is not a regular file, if it is not one.
fn not_regular(path: &Path) -> Option<Error> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => None,
        Ok(meta) => Some(Error::Input(format!("{shown}: is {}; expected a regular file", kind_of(&meta)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.symlink_metadata().is_ok() => {
            let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
            Some(Error::Input(format!("{shown}: is a symbolic link to {target}, which does not exist")))
        }
        Err(e) => Some(io(path, e)),
    }
}

/// Open a regular file for reading; anything else (a FIFO, a socket, a device, a directory, a
/// dangling link) is refused before it can block.
pub fn open_regular(path: &Path) -> Result<std::fs::File> {
    if let Some(e) = not_regular(path) {
        return Err(e);
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        // Between the check above and the open, the path could be swapped for a FIFO: opening
        // without blocking and checking the opened file closes that gap.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| io(path, e))?;
    let meta = file.metadata().map_err(|e| io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Input(format!("{}: is {}; expected a regular file", path.display(), kind_of(&meta))));
    }
    Ok(file)
}

/// The bytes of a regular file of at most `limit` bytes (`what` says what the file is, for the
/// message when it is larger).
pub fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata().map_err(|e| io(path, e))?.len();
    if len > limit {
        return Err(Error::Input(format!("{}: {len} bytes, more than the {limit} bytes {what} may hold", path.display())));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::Input(format!("{}: grew past the {limit} bytes {what} may hold while it was read", path.display())));
    }
    Ok(bytes)
}

/// The bytes of a model-folder file (config, tokenizer, index).
pub fn read(path: &Path) -> Result<Vec<u8>> {
    read_limited(path, MAX_SMALL_FILE, "a model folder's file")
}

/// A UTF-8 text file of a model folder, without its byte-order mark.
pub fn read_text(path: &Path) -> Result<String> {
    text(&path.display().to_string(), read(path)?)
}

/// The UTF-8 byte-order mark some editors put at the start of a text file.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bytes as UTF-8 text without a leading byte-order mark; an error names the line and the byte
/// at fault (`shown` names the file).
pub fn utf8<'a>(shown: &str, bytes: &'a [u8]) -> Result<&'a str> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::Input(format!("{shown}:{line}: not UTF-8 text (byte {at} is not part of a UTF-8 character)"))
    })
}

/// `utf8`, owned.
pub fn text(shown: &str, mut bytes: Vec<u8>) -> Result<String> {
    utf8(shown, &bytes)?;
    if bytes.starts_with(UTF8_BOM) {
        bytes.drain(..UTF8_BOM.len());
    }
    Ok(String::from_utf8(bytes).expect("checked above"))
}


#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let d = scratch("kinds");
        let m = open_regular(&d).unwrap_err().to_string();
        assert!(m.ends_with("is a directory; expected a regular file"), "{m}");
        #[cfg(unix)]
        {
            let link = d.join("dangling.json");
            std::os::unix::fs::symlink(d.join("gone.json"), &link).unwrap();
            assert!(present(&link) && !link.exists());
            let m = read(&link).unwrap_err().to_string();
            assert!(m.contains("dangling.json: is a symbolic link to") && m.contains("gone.json, which does not exist"), "{m}");
            let fifo = d.join("pipe");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            // Refused at once: nothing ever writes to this pipe, so a blocking open would hang.
            let m = read(&fifo).unwrap_err().to_string();
            assert!(m.ends_with("pipe: is a named pipe (FIFO); expected a regular file"), "{m}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn limits_and_text() {
        let d = scratch("limits");
        let f = d.join("big.json");
        std::fs::write(&f, vec![b'x'; 100]).unwrap();
        let m = read_limited(&f, 99, "a test file").unwrap_err().to_string();
        assert!(m.ends_with("big.json: 100 bytes, more than the 99 bytes a test file may hold"), "{m}");
        assert_eq!(read_limited(&f, 100, "a test file").unwrap().len(), 100);
        std::fs::write(&f, b"\xEF\xBB\xBF{\"a\": 1}").unwrap();
        assert_eq!(read_text(&f).unwrap(), "{\"a\": 1}");
        let m = text("t.json", b"ok\nbad \xff".to_vec()).unwrap_err().to_string();
        assert_eq!(m, "t.json:2: not UTF-8 text (byte 7 is not part of a UTF-8 character)");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
