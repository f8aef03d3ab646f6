//! `tokenizer.json`: a tokenizer is built and tokenizes, or the error names the file and the
//! section at fault; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::tokenize::{SpecialNames, Tokenizer};

fuzz_target!(|data: &[u8]| {
    match Tokenizer::from_bytes("tokenizer.json", data, SpecialNames::default()) {
        Ok(t) => {
            if let Ok(e) = t.encode_plain_in_pieces("The patient, a 93-year-old man, was seen on 3/14/2019 at [MASK].", 16) {
                assert_eq!(e.ids.len(), e.offsets.len());
            }
        }
        Err(e) => assert!(e.to_string().starts_with("tokenizer.json:")),
    }
});
