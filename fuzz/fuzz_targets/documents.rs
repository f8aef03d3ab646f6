//! Input documents as users give them: JSONL, CSV, lines or one text, read as a stream with a
//! small document limit. Every document handed out is within the limit; everything else is an
//! error naming the input; never a panic, never more memory than the limit allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::input::{DocumentReader, InputOptions};

const MAX: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let format = ["jsonl", "csv", "txt", "txt"][mode as usize % 4];
    let opts = InputOptions {
        lines: mode % 4 == 3,
        text_column: Some("text".into()),
        id_column: (mode & 4 != 0).then(|| "id".into()),
        skip_invalid: mode & 8 != 0,
        stdin_format: None,
        max_doc_bytes: MAX,
        names: Default::default(),
    };
    let mut reader = match DocumentReader::from_reader("input", format, Box::new(std::io::Cursor::new(rest.to_vec())), &opts) {
        Ok(r) => r,
        Err(e) => return assert!(e.to_string().starts_with("input")),
    };
    loop {
        match reader.next_chunk(1024, 16) {
            Ok(Some(docs)) => {
                for d in docs {
                    assert!(d.text.len() <= MAX);
                }
            }
            Ok(None) => break,
            Err(e) => {
                let m = e.to_string();
                assert!(m.starts_with("input") || m.starts_with("--format"), "{m}");
                break;
            }
        }
    }
});
