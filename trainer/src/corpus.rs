//! The public clinical corpus of the bundled models, and the byte-level BPE vocabulary trained
//! on it.
//!
//! `build` reads the shipped public text (`data/` of the repository) and writes JSONL documents
//! (`{"text", "source"}`), split into a training and a held-out file by a seeded hash of each
//! document's source and position:
//! - ACI-BENCH: every encounter's dialogue and its clinical note (two documents);
//! - MTS-Dialog: each note section (`HEADER: text`) and its dialogue;
//! - NegEx: the sentences of both annotation files, 10 per document, in file order;
//! - ICD-9-CM: diagnoses as `ICD 9 code for 250.00: <description>` (Clinical ModernBERT's
//!   serialisation) and procedures as `ICD 9 procedure code for 45.23: <description>`, 20 per
//!   document.
//!
//! `train_tokenizer` trains a ModernBERT-style tokenizer (NFC, byte-level BPE without a prefix
//! space, `[CLS] … [SEP]` template, `[MASK]` with lstrip) on the training file only.

use std::path::Path;

use serde::Serialize;

use crate::data::{read_text as read, write_atomic, write_jsonl};
use crate::{Error, Result};

/// One corpus document.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Doc {
    pub text: String,
    /// Where it came from (`aci-bench/train.csv:12/note`).
    pub source: String,
}

/// Documents per source and split, as `build` reports them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CorpusReport {
    pub train_documents: usize,
    pub heldout_documents: usize,
    pub train_chars: usize,
    pub heldout_chars: usize,
    /// (source file, documents).
    pub sources: Vec<(String, usize)>,
}

/// Rows of a CSV file as (line, the named columns' values, trimmed).
pub(crate) fn csv_rows(path: &Path, columns: &[&str]) -> Result<Vec<(usize, Vec<String>)>> {
    let name = path.display().to_string();
    let file = runtime::files::open_regular(path)?;
    let mut reader = csv::ReaderBuilder::new().from_reader(file);
    let headers = reader.headers().map_err(|e| Error::file(&name, format!("CSV header: {e}")))?.clone();
    let idx: Vec<usize> = columns
        .iter()
        .map(|c| headers.iter().position(|h| h == *c).ok_or_else(|| Error::file(&name, format!("no column \"{c}\" (expected columns {})", columns.join(", ")))))
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| Error::file(&name, e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        rows.push((line, idx.iter().map(|&i| rec.get(i).unwrap_or_default().trim().to_string()).collect()));
    }
    Ok(rows)
}

/// `25000` → `250.00`, `V1011` → `V10.11`, `E8889` → `E888.9`; procedures `4523` → `45.23`.
pub fn icd9_code(raw: &str, procedure: bool) -> String {
    let head = if procedure { 2 } else if raw.starts_with('E') { 4 } else { 3 };
    if raw.len() > head {
        format!("{}.{}", &raw[..head], &raw[head..])
    } else {
        raw.to_string()
    }
}

/// The sentences of a NegEx annotation file (tab-separated; the sentence is the third field).
fn negex_sentences(path: &Path) -> Result<Vec<String>> {
    let name = path.display().to_string();
    let mut out = Vec::new();
    for (n, line) in read(path)?.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < 4 {
            return Err(Error::file(&name, format!("line {}: expected at least 4 tab-separated fields", n + 1)));
        }
        if n == 0 && fields[0].eq_ignore_ascii_case("line number") {
            continue;
        }
        let s = fields[2].trim().trim_matches('"').trim();
        if !s.is_empty() {
            out.push(s.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    Ok(out)
}

/// Every document of the corpus under `data` (the repository's `data/` folder), in a fixed order.
pub fn documents(data: &Path) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    for f in ["train.csv", "valid.csv", "clinicalnlp_taskB_test1.csv", "clinicalnlp_taskC_test2.csv"] {
        let path = data.join("aci-bench").join(f);
        for (line, row) in csv_rows(&path, &["dialogue", "note"])? {
            for (text, part) in row.into_iter().zip(["dialogue", "note"]) {
                if !text.is_empty() {
                    docs.push(Doc { text, source: format!("aci-bench/{f}:{line}/{part}") });
                }
            }
        }
    }
    for f in ["MTS-Dialog-TrainingSet.csv", "MTS-Dialog-ValidationSet.csv", "MTS-Dialog-TestSet-1-MEDIQA-Chat-2023.csv"] {
        let path = data.join("mts-dialog").join(f);
        for (line, row) in csv_rows(&path, &["section_header", "section_text", "dialogue"])? {
            if !row[1].is_empty() {
                docs.push(Doc { text: format!("{}: {}", row[0], row[1]), source: format!("mts-dialog/{f}:{line}/section") });
            }
            if !row[2].is_empty() {
                docs.push(Doc { text: row[2].clone(), source: format!("mts-dialog/{f}:{line}/dialogue") });
            }
        }
    }
    for f in ["Annotations-1-120-random.txt", "rsAnnotations-1-120-random.txt"] {
        let sentences = negex_sentences(&data.join("negex-testset").join(f))?;
        for (i, group) in sentences.chunks(10).enumerate() {
            docs.push(Doc { text: group.join("\n"), source: format!("negex-testset/{f}#{}", i + 1) });
        }
    }
    for (f, procedure) in [("CMS32_DESC_LONG_DX.txt", false), ("CMS32_DESC_LONG_SG.txt", true)] {
        let path = data.join("icd9").join(f);
        let name = path.display().to_string();
        let mut lines = Vec::new();
        for (n, line) in read(&path)?.lines().enumerate() {
            let (code, desc) = line.split_once('\t').ok_or_else(|| Error::file(&name, format!("line {}: expected CODE<TAB>description", n + 1)))?;
            let kind = if procedure { "ICD 9 procedure code" } else { "ICD 9 code" };
            lines.push(format!("{kind} for {}: {}", icd9_code(code.trim(), procedure), desc.trim()));
        }
        for (i, group) in lines.chunks(20).enumerate() {
            docs.push(Doc { text: group.join("\n"), source: format!("icd9/{f}#{}", i + 1) });
        }
    }
    Ok(docs)
}

/// A stable 64-bit hash (FNV-1a then a mixer) of a string and a seed.
pub fn hash(s: &str, seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Whether a document is held out: a seeded hash of its source below `fraction`.
pub fn is_heldout(doc: &Doc, fraction: f64, seed: u64) -> bool {
    (hash(&doc.source, seed) >> 11) as f64 / (1u64 << 53) as f64 <= fraction
}

/// Write `train.jsonl` and `heldout.jsonl` under `out`.
pub fn build(data: &Path, out: &Path, heldout_fraction: f64, seed: u64) -> Result<CorpusReport> {
    if !(0.0..1.0).contains(&heldout_fraction) {
        return Err(Error::Input(format!("a held-out fraction of {heldout_fraction}: expected a fraction in [0, 1)")));
    }
    let docs = documents(data)?;
    std::fs::create_dir_all(out).map_err(|e| Error::Io { path: out.display().to_string(), source: e })?;
    let (heldout, train): (Vec<&Doc>, Vec<&Doc>) = docs.iter().partition(|d| is_heldout(d, heldout_fraction, seed));
    write_jsonl(&out.join("train.jsonl"), &train)?;
    write_jsonl(&out.join("heldout.jsonl"), &heldout)?;
    let mut sources: Vec<(String, usize)> = Vec::new();
    for d in &docs {
        let file = d.source.split([':', '#']).next().unwrap_or_default().to_string();
        match sources.last_mut() {
            Some((f, n)) if *f == file => *n += 1,
            _ => sources.push((file, 1)),
        }
    }
    Ok(CorpusReport {
        train_documents: train.len(),
        heldout_documents: heldout.len(),
        train_chars: train.iter().map(|d| d.text.chars().count()).sum(),
        heldout_chars: heldout.iter().map(|d| d.text.chars().count()).sum(),
        sources,
    })
}

/// The special tokens of the trained vocabulary, ids 0 to 4 (ModernBERT's names).
pub const SPECIALS: [&str; 5] = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"];

/// Train a byte-level BPE tokenizer of `vocab_size` entries on the `text` fields of a JSONL file
/// and write `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` to `out`.
pub fn train_tokenizer(jsonl: &Path, vocab_size: usize, out: &Path) -> Result<usize> {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::models::TrainerWrapper;
    use tokenizers::normalizers::unicode::NFC;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::{AddedToken, Tokenizer};

    if !(256 + SPECIALS.len()..=65_535).contains(&vocab_size) {
        return Err(Error::Input(format!("a vocabulary of {vocab_size}: expected {} to 65535 tokens (token ids are stored as uint16)", 256 + SPECIALS.len())));
    }
    let name = jsonl.display().to_string();
    let mut texts = Vec::new();
    for (n, line) in read(jsonl)?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::file(&name, format!("line {}: {e}", n + 1)))?;
        let text = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| Error::file(&name, format!("line {}: expected a string field \"text\"", n + 1)))?;
        texts.push(text.to_string());
    }
    let fail = |e: tokenizers::Error| Error::Input(format!("training the tokenizer on {name}: {e}"));
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_normalizer(Some(NFC));
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::new(false, true, true)));
    let specials: Vec<AddedToken> = SPECIALS.iter().map(|s| AddedToken::from(*s, true)).collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    tok.train(&mut TrainerWrapper::BpeTrainer(trainer), texts.iter()).map_err(fail)?;
    // [MASK] swallows the space before it, as ModernBERT's does.
    tok.add_special_tokens(&[AddedToken::from("[MASK]", true).lstrip(true)]);
    let id = |s: &str| tok.token_to_id(s).ok_or_else(|| Error::Input(format!("the trained vocabulary lacks {s}")));
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    let template = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .and_then(|b| b.try_pair("[CLS] $A [SEP] $B [SEP]"))
        .map_err(|e| Error::Input(format!("tokenizer template: {e}")))?
        .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
        .build()
        .map_err(|e| Error::Input(format!("tokenizer template: {e}")))?;
    tok.with_post_processor(Some(template));
    std::fs::create_dir_all(out).map_err(|e| Error::Io { path: out.display().to_string(), source: e })?;
    let json = tok.to_string(true).map_err(fail)?;
    write_atomic(&out.join("tokenizer.json"), json.as_bytes())?;
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 8192,
        "clean_up_tokenization_spaces": false,
        "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]",
        "model_input_names": ["input_ids", "attention_mask"],
    });
    write_atomic(&out.join("tokenizer_config.json"), serde_json::to_string_pretty(&config).expect("json").as_bytes())?;
    let map = serde_json::json!({
        "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "mask_token": {"content": "[MASK]", "lstrip": true, "normalized": false, "rstrip": false, "single_word": false},
    });
    write_atomic(&out.join("special_tokens_map.json"), serde_json::to_string_pretty(&map).expect("json").as_bytes())?;
    Ok(tok.get_vocab_size(true))
}
