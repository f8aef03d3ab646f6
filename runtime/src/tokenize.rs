//! Tokenizers through the `tokenizers` crate (the same code natively and in the browser), with
//! the special tokens checked against `config.json`: a folder's `tokenizer.json`; or, for classic
//! BERT folders that ship none, WordPiece from `vocab.txt` or byte-level BPE from `vocab.json` +
//! `merges.txt`, built as transformers builds them (`tokenize_files`) with the options of
//! `tokenizer_config.json`.

use crate::config::ModelConfig;
use crate::tokenize_files::{self, FileTokenizerOptions};
use crate::{Error, Result};

/// The names of the special tokens, from `special_tokens_map.json` / `tokenizer_config.json`.
#[derive(Clone, Debug)]
pub struct SpecialNames {
    pub cls: String,
    pub sep: String,
    pub pad: String,
    pub mask: String,
    pub unk: String,
}

impl Default for SpecialNames {
    fn default() -> Self {
        SpecialNames { cls: "[CLS]".into(), sep: "[SEP]".into(), pad: "[PAD]".into(), mask: "[MASK]".into(), unk: "[UNK]".into() }
    }
}

impl SpecialNames {
    /// Override the defaults with what a `special_tokens_map.json` or `tokenizer_config.json`
    /// says (entries are strings or `{"content": …}` objects). Unknown keys are ignored.
    pub fn update_from_json(&mut self, source: &str, text: &str) -> Result<()> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::tokenizer(source, format!("not valid JSON: {e}")))?;
        let get = |key: &str| -> Option<String> {
            match v.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        for (key, slot) in [
            ("cls_token", &mut self.cls),
            ("sep_token", &mut self.sep),
            ("pad_token", &mut self.pad),
            ("mask_token", &mut self.mask),
            ("unk_token", &mut self.unk),
        ] {
            if let Some(name) = get(key) {
                *slot = name;
            }
        }
        Ok(())
    }
}

/// Ids of the special tokens in this tokenizer.
#[derive(Clone, Debug)]
pub struct SpecialIds {
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
    pub mask: Option<u32>,
    pub unk: Option<u32>,
}

/// A tokenized text: ids with their byte offsets into the text (specials get (0, 0)) and the
/// index of the pre-tokenizer word each token belongs to.
#[derive(Clone, Debug, Default)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Segment of each token: 0, and 1 for the second text of a pair (BERT's token types).
    pub type_ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
    pub special: Vec<bool>,
    pub words: Vec<Option<u32>>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A tokenizer with its special tokens resolved.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: String,
    /// How it was built, for `info`.
    pub description: String,
    pub names: SpecialNames,
    pub specials: SpecialIds,
}

impl Tokenizer {
    /// From the bytes of `tokenizer.json`; `source` names the file in messages.
    pub fn from_bytes(source: &str, bytes: &[u8], names: SpecialNames) -> Result<Self> {
        // The JSON first, whole (UTF-8 in strings, numbers in range): the tokenizers crate panics
        // ("Helper") when its decoder section fails to parse instead of returning an error (found
        // by fuzz/fuzz_targets/tokenizer_json.rs; tests/data/fuzz-regressions).
        let bytes = crate::files::utf8(source, bytes)?.as_bytes();
        drop(serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| Error::tokenizer(source, format!("not valid JSON ({e})")))?);
        let built = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes))
            .map_err(|_| Error::tokenizer(source, "the tokenizers library failed on this file (it panicked); the file is malformed"))?;
        let inner = built.map_err(|e| Error::tokenizer(source, explain_tokenizer_json(bytes, &e.to_string())))?;
        let description = format!("{source} ({} tokens)", inner.get_vocab_size(true));
        Self::wrap(source, inner, names, description)
    }

    /// The tokenizer of a model folder whose files `get` returns by name (`Ok(None)`: absent):
    /// `tokenizer.json` when present, else WordPiece from `vocab.txt`, else byte-level BPE from
    /// `vocab.json` + `merges.txt`; options and special-token names from `tokenizer_config.json`
    /// and `special_tokens_map.json`. `folder` names the folder in messages.
    pub fn from_files(folder: &str, get: &dyn Fn(&str) -> Result<Option<Vec<u8>>>) -> Result<Self> {
        let shown = |file: &str| if folder.is_empty() { file.to_string() } else { format!("{folder}/{file}") };
        let text = |file: &str| -> Result<Option<String>> {
            match get(file)? {
                None => Ok(None),
                Some(bytes) => crate::files::text(&shown(file), bytes).map(Some),
            }
        };
        let mut names = SpecialNames::default();
        let mut options = FileTokenizerOptions::default();
        let mut configured = false;
        for file in ["tokenizer_config.json", "special_tokens_map.json"] {
            if let Some(t) = text(file)? {
                names.update_from_json(&shown(file), &t)?;
                options.update_from_json(&shown(file), &t).map_err(|m| file_error(&shown(file), m))?;
                configured |= file == "tokenizer_config.json";
            }
        }
        if let Some(bytes) = get("tokenizer.json")? {
            return Self::from_bytes(&shown("tokenizer.json"), &bytes, names);
        }
        let from_config = |o: &FileTokenizerOptions| SpecialNames { cls: o.cls.clone(), sep: o.sep.clone(), pad: o.pad.clone(), mask: o.mask.clone(), unk: o.unk.clone() };
        if let Some(vocab) = text("vocab.txt")? {
            let source = shown("vocab.txt");
            let inner = tokenize_files::wordpiece(&vocab, &options).map_err(|m| file_error(&source, m))?;
            let case = match (options.do_lower_case, configured) {
                (true, true) => "lowercased (do_lower_case in tokenizer_config.json)",
                (true, false) => "lowercased (no tokenizer_config.json: transformers' default do_lower_case = true)",
                (false, _) => "cased (do_lower_case false)",
            };
            let description = format!("{source} (WordPiece, {} tokens, {case})", inner.get_vocab_size(true));
            return Self::wrap(&source, inner, from_config(&options), description);
        }
        if let (Some(vocab), Some(merges)) = (text("vocab.json")?, text("merges.txt")?) {
            let source = shown("vocab.json");
            let inner = tokenize_files::bpe(&vocab, &merges, &options).map_err(|m| file_error(&format!("{source} + merges.txt"), m))?;
            let description = format!("{source} + merges.txt (byte-level BPE, {} tokens)", inner.get_vocab_size(true));
            return Self::wrap(&source, inner, from_config(&options), description);
        }
        Err(Error::tokenizer(folder, "no tokenizer: expected tokenizer.json, or vocab.txt (WordPiece), or vocab.json with merges.txt (byte-level BPE)"))
    }

    fn wrap(source: &str, mut inner: tokenizers::Tokenizer, names: SpecialNames, description: String) -> Result<Self> {
        // Never truncate or pad behind the caller's back: long documents are windowed explicitly.
        inner.with_truncation(None).map_err(|e| Error::tokenizer(source, e.to_string()))?;
        inner.with_padding(None);
        let id = |name: &str, what: &str| {
            inner.token_to_id(name).ok_or_else(|| Error::tokenizer(source, format!("has no {what} token \"{name}\"")))
        };
        let specials = SpecialIds {
            cls: id(&names.cls, "CLS")?,
            sep: id(&names.sep, "SEP")?,
            pad: id(&names.pad, "padding")?,
            mask: inner.token_to_id(&names.mask),
            unk: inner.token_to_id(&names.unk),
        };
        Ok(Tokenizer { inner, source: source.to_string(), description, names, specials })
    }

    /// From a model folder (see `from_files`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        let get = |file: &str| -> Result<Option<Vec<u8>>> {
            let p = dir.join(file);
            if !crate::files::present(&p) {
                return Ok(None);
            }
            crate::files::read(&p).map(Some)
        };
        Self::from_files(&dir.display().to_string(), &get)
    }

    /// True when a folder has files a tokenizer can be built from.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn present_in(dir: &std::path::Path) -> bool {
        ["tokenizer.json", "vocab.txt", "vocab.json"].iter().any(|f| crate::files::present(&dir.join(f)))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Largest id the tokenizer can produce + 1.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Refuse a tokenizer whose special tokens or vocabulary disagree with the config.
    pub fn check_config(&self, config: &ModelConfig) -> Result<()> {
        let s = &self.specials;
        let n = &self.names;
        // ModernBERT configs name their special ids; BERT configs only the padding id.
        let (cls, sep, mask) = match config {
            ModelConfig::ModernBert(c) => (c.cls_token_id, c.sep_token_id, c.mask_token_id),
            ModelConfig::Bert(_) => (None, None, None),
        };
        for (name, id, field, expected) in [
            (&n.cls, Some(s.cls), "cls_token_id", cls),
            (&n.sep, Some(s.sep), "sep_token_id", sep),
            (&n.pad, Some(s.pad), "pad_token_id", Some(config.pad_token_id())),
            (&n.mask, s.mask, "mask_token_id", mask),
        ] {
            if let (Some(id), Some(expected)) = (id, expected) {
                if id != expected {
                    return Err(Error::tokenizer(
                        &self.source,
                        format!("special token \"{name}\" has id {id}, but {} field \"{field}\" is {expected}", config.source()),
                    ));
                }
            }
        }
        let largest = self.inner.get_vocab(true).into_values().max().unwrap_or(0) as usize;
        if largest >= config.vocab_size() {
            return Err(Error::tokenizer(
                &self.source,
                format!("produces token ids up to {largest}, but {} field \"vocab_size\" is {}", config.source(), config.vocab_size()),
            ));
        }
        Ok(())
    }

    /// Tokenize with the tokenizer's template (`[CLS] … [SEP]` for ModernBERT).
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        self.encode_with(text, true)
    }

    /// Tokenize without special tokens (for windows cut by the caller).
    pub fn encode_plain(&self, text: &str) -> Result<Encoded> {
        self.encode_with(text, false)
    }

    /// Tokenize without special tokens, a long text in pieces of about `piece_bytes` cut where
    /// a run of whitespace starts: the tokenizers crate needs about a kilobyte of working memory
    /// per byte of text at once (a 20 MB line took 5.9 GB), pieces keep that bounded. Pre-
    /// tokenizers split at whitespace (BERT's) or attach a whitespace run to the word after it
    /// (byte-level BPE's), so cutting where a run starts gives the same tokens as one call; a
    /// piece with no whitespace at all is cut at a character boundary.
    pub fn encode_plain_in_pieces(&self, text: &str, piece_bytes: usize) -> Result<Encoded> {
        if text.len() <= piece_bytes {
            return self.encode_plain(text);
        }
        let mut out = Encoded::default();
        let mut start = 0;
        let mut next_word = 0u32;
        while start < text.len() {
            let end = cut_point(text, start, piece_bytes);
            let e = self.encode_plain(&text[start..end])?;
            let words = e.words.iter().filter_map(|w| *w).max().map_or(0, |m| m + 1);
            out.ids.extend_from_slice(&e.ids);
            out.type_ids.extend_from_slice(&e.type_ids);
            out.offsets.extend(e.offsets.iter().map(|&(a, b)| (a + start, b + start)));
            out.special.extend_from_slice(&e.special);
            out.words.extend(e.words.iter().map(|w| w.map(|w| w + next_word)));
            next_word += words;
            start = end;
        }
        Ok(out)
    }

    /// Tokenize a pair of texts with the template (`[CLS] A [SEP] B [SEP]` for BERT, token types
    /// 0 then 1).
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<Encoded> {
        let e = self.inner.encode((a, b), true).map_err(|e| Error::tokenizer(&self.source, format!("cannot tokenize: {e}")))?;
        Ok(Self::encoded(&e))
    }

    fn encode_with(&self, text: &str, special: bool) -> Result<Encoded> {
        let e = self.inner.encode(text, special).map_err(|e| Error::tokenizer(&self.source, format!("cannot tokenize: {e}")))?;
        Ok(Self::encoded(&e))
    }

    fn encoded(e: &tokenizers::Encoding) -> Encoded {
        Encoded {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            offsets: e.get_offsets().to_vec(),
            special: e.get_special_tokens_mask().iter().map(|&m| m == 1).collect(),
            words: e.get_word_ids().to_vec(),
        }
    }

    /// The token string of an id.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Ids back to text.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::tokenizer(&self.source, format!("cannot decode: {e}")))
    }
}

/// Where the piece of `text` that starts at `start` ends: at most `piece_bytes` later, where a
/// run of whitespace starts (the last such place in the second half of the piece), else at a
/// character boundary.
fn cut_point(text: &str, start: usize, piece_bytes: usize) -> usize {
    let limit = start + piece_bytes;
    if limit >= text.len() {
        return text.len();
    }
    let mut limit_at = limit;
    while !text.is_char_boundary(limit_at) {
        limit_at -= 1;
    }
    let window = &text[start..limit_at];
    let half = window.len() / 2;
    let mut prev_ws = true;
    let mut best = None;
    for (i, ch) in window.char_indices() {
        let ws = ch.is_whitespace();
        if ws && !prev_ws && i >= half {
            best = Some(start + i);
        }
        prev_ws = ws;
    }
    match best {
        Some(b) => b,
        None if limit_at > start => limit_at,
        // A single character longer than the piece: take it whole.
        None => start + text[start..].chars().next().map_or(text.len() - start, char::len_utf8),
    }
}

/// Why a `tokenizer.json` could not be read, naming the section at fault: the tokenizers crate
/// reports a malformed section as e.g. "data did not match any variant of untagged enum
/// ModelUntagged", which names neither the section nor what it expected.
pub fn explain_tokenizer_json(bytes: &[u8], library_message: &str) -> String {
    use serde_json::Value;
    let v: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return format!("not valid JSON ({e})"),
    };
    let Some(obj) = v.as_object() else { return "expected a JSON object at the top level".into() };
    let Some(model) = obj.get("model") else { return "missing the \"model\" section (the vocabulary and how words are split)".into() };
    if let Some(kind) = model.get("type") {
        match kind.as_str() {
            Some("BPE" | "WordPiece" | "WordLevel" | "Unigram") => {}
            Some(other) => return format!("section \"model\": type \"{other}\" is not a tokenizer model; expected \"BPE\", \"WordPiece\", \"WordLevel\" or \"Unigram\""),
            None => return format!("section \"model\": field \"type\": expected a string, found {kind}"),
        }
    }
    fn section<T: serde::de::DeserializeOwned>(obj: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
        let v = obj.get(key).filter(|v| !v.is_null())?;
        let kind = v.get("type").and_then(Value::as_str).map(|t| format!(" (type \"{t}\")")).unwrap_or_default();
        serde_json::from_value::<T>(v.clone()).err().map(|e| format!("section \"{key}\"{kind} is malformed: {e}"))
    }
    section::<tokenizers::ModelWrapper>(obj, "model")
        .or_else(|| section::<tokenizers::NormalizerWrapper>(obj, "normalizer"))
        .or_else(|| section::<tokenizers::PreTokenizerWrapper>(obj, "pre_tokenizer"))
        .or_else(|| section::<tokenizers::PostProcessorWrapper>(obj, "post_processor"))
        .or_else(|| section::<tokenizers::DecoderWrapper>(obj, "decoder"))
        .unwrap_or_else(|| format!("cannot read tokenizer: {library_message}"))
}

/// A message of `tokenize_files` (which names the file itself or not) as this crate's error.
fn file_error(source: &str, message: String) -> Error {
    let message = message.strip_prefix(&format!("{source}: ")).map(str::to_string).unwrap_or(message);
    Error::tokenizer(source, message)
}
