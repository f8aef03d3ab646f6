//! Tokenizers: `tokenizer.json` through the `tokenizers` crate (the same code natively and in
//! the browser), with the special tokens checked against `config.json`.

use crate::config::ModelConfig;
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
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: String,
    pub names: SpecialNames,
    pub specials: SpecialIds,
}

impl Tokenizer {
    /// From the bytes of `tokenizer.json`; `source` names the file in messages.
    pub fn from_bytes(source: &str, bytes: &[u8], names: SpecialNames) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::tokenizer(source, format!("cannot read tokenizer: {e}")))?;
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
        Ok(Tokenizer { inner, source: source.to_string(), names, specials })
    }

    /// From a model folder: `tokenizer.json`, with special-token names from
    /// `special_tokens_map.json` or `tokenizer_config.json` when present.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        let mut names = SpecialNames::default();
        for file in ["tokenizer_config.json", "special_tokens_map.json"] {
            let p = dir.join(file);
            if p.exists() {
                let shown = p.display().to_string();
                let text = std::fs::read_to_string(&p).map_err(|e| Error::Io { path: shown.clone(), source: e })?;
                names.update_from_json(&shown, &text)?;
            }
        }
        let p = dir.join("tokenizer.json");
        let shown = p.display().to_string();
        let bytes = std::fs::read(&p).map_err(|e| Error::Io { path: shown.clone(), source: e })?;
        Self::from_bytes(&shown, &bytes, names)
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

    fn encode_with(&self, text: &str, special: bool) -> Result<Encoded> {
        let e = self.inner.encode(text, special).map_err(|e| Error::tokenizer(&self.source, format!("cannot tokenize: {e}")))?;
        Ok(Encoded {
            ids: e.get_ids().to_vec(),
            offsets: e.get_offsets().to_vec(),
            special: e.get_special_tokens_mask().iter().map(|&m| m == 1).collect(),
            words: e.get_word_ids().to_vec(),
        })
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
