//! The older tokenizer files of classic BERT folders: `vocab.txt` (WordPiece), or `vocab.json` +
//! `merges.txt` (byte-level BPE), with `tokenizer_config.json`. The first byte picks the layout,
//! the rest is split at 0xFF bytes into the files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::tokenize::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut parts = rest.split(|&b| b == 0xFF).map(<[u8]>::to_vec);
    let (first, second, config) = (parts.next().unwrap_or_default(), parts.next(), parts.next());
    let files: Vec<(&str, Vec<u8>)> = match mode % 2 {
        0 => vec![("vocab.txt", first)],
        _ => vec![("vocab.json", first), ("merges.txt", second.clone().unwrap_or_default())],
    };
    let config = if mode & 2 != 0 { config.or(second) } else { None };
    let get = |name: &str| -> runtime::Result<Option<Vec<u8>>> {
        if name == "tokenizer_config.json" {
            return Ok(config.clone());
        }
        Ok(files.iter().find(|(n, _)| *n == name).map(|(_, b)| b.clone()))
    };
    if let Ok(t) = Tokenizer::from_files("folder", &get) {
        if let Ok(e) = t.encode("Seen by Dr. Zoë Ödegaard on 3/14/2019.") {
            assert_eq!(e.ids.len(), e.words.len());
        }
    }
});
