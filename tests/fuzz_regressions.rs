//! Inputs the fuzz targets (fuzz/) found to crash a parser, kept as regression tests: each file of
//! tests/data/fuzz-regressions is named `<target>-<what>` and is handed to what that target calls;
//! it must now give an error naming the file, never a panic.

use runtime::tokenize::{SpecialNames, Tokenizer};
use workspace_tests::data;

#[test]
fn every_input_that_crashed_a_fuzz_target_is_now_an_error() {
    let mut seen = 0;
    for entry in std::fs::read_dir(data("fuzz-regressions")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let message = match name.split_once('-').map(|(target, _)| target) {
            // tokenizer.json that is not JSON, or not UTF-8, in its decoder section: tokenizers 0.22
            // panics there ("Helper") instead of returning an error.
            Some("tokenizer_json") => Tokenizer::from_bytes("tokenizer.json", &bytes, SpecialNames::default()).err().map(|e| e.to_string()),
            other => panic!("{name}: unknown fuzz target {other:?}"),
        };
        let m = message.unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(m.starts_with("tokenizer.json: not valid JSON") || (m.starts_with("tokenizer.json:") && m.contains(": not UTF-8 text (byte")), "{name}: {m}");
        seen += 1;
    }
    assert!(seen >= 1);
}
