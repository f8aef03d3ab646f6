//! Presidio's analyzer and anonymizer routes (`/analyze`, `/anonymize`, `/supportedentities`,
//! `/anonymizers`) and this project's own `/deid`, over a token-classification model. Offsets
//! count Unicode code points, as Presidio's Python strings do.
//!
//! Entity names: the model's categories are mapped to Presidio's (`presidio_entity`): NAME →
//! PERSON, DATE → DATE_TIME, LOCATION → LOCATION, CONTACT → EMAIL_ADDRESS (with an `@`), URL
//! (`http…`, `www.…`) or PHONE_NUMBER, ID → US_SSN (NNN-NN-NNNN) or ID; AGE, PROFESSION and
//! OTHER keep their names, as do categories the table does not know.

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256, Sha512};

use super::api::{answer, choose, parse, run, tokenize, ApiError, Needs, OneOrMany, Request, Style, Usage};
use super::worker::{ModelInfo, Work};
use runtime::deid::{deidentify, Operator as Op, Span};

const STYLE: Style = Style::Presidio;

/// The most analyzer results one `/anonymize` request may carry (a long note has hundreds).
const MAX_RESULTS: usize = 100_000;

/// Presidio's name for a span of a model category.
pub fn presidio_entity(category: &str, text: &str) -> String {
    let c = category.to_ascii_uppercase();
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let ssn = |s: &str| {
        let b = s.as_bytes();
        b.len() == 11 && b[3] == b'-' && b[6] == b'-' && s.chars().enumerate().all(|(i, ch)| if i == 3 || i == 6 { ch == '-' } else { ch.is_ascii_digit() })
    };
    match c.as_str() {
        "NAME" | "PERSON" | "PATIENT" | "DOCTOR" | "PER" | "USERNAME" => "PERSON".into(),
        "DATE" | "DATE_TIME" | "TIME" => "DATE_TIME".into(),
        "LOCATION" | "LOC" | "ADDRESS" | "CITY" | "STATE" | "COUNTRY" | "STREET" | "ZIP" | "HOSPITAL" => "LOCATION".into(),
        "PHONE" | "FAX" | "PHONE_NUMBER" => "PHONE_NUMBER".into(),
        "EMAIL" | "EMAIL_ADDRESS" => "EMAIL_ADDRESS".into(),
        "SSN" | "US_SSN" => "US_SSN".into(),
        "URL" => "URL".into(),
        "CONTACT" => {
            let lower = digits.to_ascii_lowercase();
            if lower.contains('@') {
                "EMAIL_ADDRESS".into()
            } else if lower.starts_with("http") || lower.starts_with("www.") {
                "URL".into()
            } else {
                "PHONE_NUMBER".into()
            }
        }
        "ID" | "IDNUM" | "MEDICALRECORD" | "MRN" if ssn(&digits) => "US_SSN".into(),
        _ => c,
    }
}

/// Every name `presidio_entity` can give for the model's categories.
fn entities_of(info: &ModelInfo) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in info.scheme.as_ref().map(|s| s.categories.clone()).unwrap_or_default() {
        let names: Vec<String> = match c.to_ascii_uppercase().as_str() {
            "CONTACT" => vec!["PHONE_NUMBER".into(), "EMAIL_ADDRESS".into(), "URL".into()],
            "ID" | "IDNUM" | "MEDICALRECORD" | "MRN" => vec!["US_SSN".into(), presidio_entity(&c, "")],
            _ => vec![presidio_entity(&c, "")],
        };
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

fn check_language(language: &str) -> Result<(), ApiError> {
    if language.eq_ignore_ascii_case("en") {
        Ok(())
    } else {
        Err(ApiError::field(STYLE, "language", format!("{language:?}: the served models are English; expected \"en\"")))
    }
}

/// How `/deid` replaces what it finds (`"operator"`), as `runtime-cli deid`'s flags do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replace {
    Placeholder,
    Surrogate,
    ShiftDates,
    Hash,
}

/// Spans of each text, from the token classifier through the model's queue, and the text
/// redacted as `replace` says, under the server's key; `ids` name the documents whose dates
/// `ShiftDates` moves (the same offset for every text without one).
async fn find_spans(
    state: &super::api::AppState,
    model: Option<&str>,
    texts: Vec<String>,
    field: &str,
    replace: Replace,
    ids: Option<&[String]>,
) -> Result<(Vec<(Vec<Span>, String)>, Usage), ApiError> {
    let served = choose(state, STYLE, Needs::TokenClassifier, model)?;
    let encs = tokenize(state, STYLE, &served.info, texts.clone(), field).await?;
    let (done, usage) = run(state, STYLE, served, Work::TokenProbs, encs).await?;
    let kept = &done.encs;
    let scheme = served.info.scheme.as_ref().ok_or_else(|| ApiError::internal(STYLE, "the model has no tagging scheme"))?;
    let out = texts
        .iter()
        .zip(kept)
        .zip(&done.rows)
        .enumerate()
        .map(|(i, ((t, e), p))| {
            let op = match replace {
                Replace::Placeholder => Op::Placeholder,
                Replace::Surrogate => Op::Surrogate(&state.surrogates),
                Replace::ShiftDates => Op::ShiftDates(&state.surrogates, ids.and_then(|ids| ids.get(i)).map_or("", String::as_str)),
                Replace::Hash => Op::Hash(&state.surrogates),
            };
            deidentify(t, e, p, scheme, state.threshold, op)
        })
        .collect();
    Ok((out, usage))
}

#[derive(Deserialize)]
struct AnalyzeRequest {
    text: OneOrMany,
    language: String,
    #[serde(default)]
    entities: Option<Vec<String>>,
    #[serde(default)]
    score_threshold: Option<f32>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

pub async fn analyze(State(state): State<super::api::State>, request: Request) -> Result<Response, ApiError> {
    let req: AnalyzeRequest = parse(&state, STYLE, request.into_body()).await?;
    check_language(&req.language)?;
    if let Some(t) = req.score_threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::field(STYLE, "score_threshold", format!("{t}: expected 0 to 1")));
        }
    }
    let (texts, many) = req.text.into_vec();
    // Presidio answers an empty text with no results; the others go to the model.
    let asked: Vec<String> = texts.iter().filter(|t| !t.trim().is_empty()).cloned().collect();
    let (found, usage) = if asked.is_empty() { (Vec::new(), Usage::default()) } else { find_spans(&state, req.model.as_deref(), asked, "text", Replace::Placeholder, None).await? };
    let mut found = found.into_iter();
    let threshold = req.score_threshold.unwrap_or(0.0);
    let per_text: Vec<serde_json::Value> = texts
        .iter()
        .map(|t| {
            let spans = if t.trim().is_empty() { Vec::new() } else { found.next().map(|(s, _)| s).unwrap_or_default() };
            let results: Vec<serde_json::Value> = spans
                .iter()
                .map(|s| (s, presidio_entity(&s.label, &s.text)))
                .filter(|(s, e)| s.score >= threshold && req.entities.as_ref().is_none_or(|want| want.iter().any(|w| w == e)))
                .map(|(s, e)| json!({"analysis_explanation": null, "end": s.end, "entity_type": e, "recognition_metadata": {"recognizer_name": s.source, "recognizer_identifier": s.source}, "score": s.score, "start": s.start}))
                .collect();
            json!(results)
        })
        .collect();
    let _ = req.correlation_id;
    let body = if many { json!(per_text) } else { per_text.into_iter().next().unwrap_or(json!([])) };
    Ok(answer(body, usage))
}

#[derive(Deserialize)]
pub struct EntitiesQuery {
    #[serde(default)]
    language: Option<String>,
}

pub async fn supported_entities(State(state): State<super::api::State>, Query(q): Query<EntitiesQuery>) -> Result<Response, ApiError> {
    if let Some(l) = &q.language {
        check_language(l)?;
    }
    let served = choose(&state, STYLE, Needs::TokenClassifier, None)?;
    Ok(answer(json!(entities_of(&served.info)), Usage::default()))
}

pub async fn anonymizers() -> Response {
    answer(json!(["hash", "keep", "mask", "redact", "replace"]), Usage::default())
}

#[derive(Deserialize)]
struct AnalyzerResult {
    start: usize,
    end: usize,
    entity_type: String,
    #[serde(default)]
    score: f32,
}

#[derive(Deserialize)]
struct AnonymizeRequest {
    text: String,
    analyzer_results: Vec<AnalyzerResult>,
    #[serde(default)]
    anonymizers: std::collections::HashMap<String, serde_json::Value>,
}

/// One operator's configuration, checked.
enum Operator {
    Keep,
    Replace(Option<String>),
    Redact,
    Mask {
        char: String,
        count: usize,
        from_end: bool,
    },
    /// `salt` given, or a fresh random one per entity (Presidio's default since 2.2.361).
    Hash {
        sha512: bool,
        salt: Option<String>,
    },
}

impl Operator {
    fn name(&self) -> &'static str {
        match self {
            Operator::Keep => "keep",
            Operator::Replace(_) => "replace",
            Operator::Redact => "redact",
            Operator::Mask { .. } => "mask",
            Operator::Hash { .. } => "hash",
        }
    }

    fn read(entity: &str, v: &serde_json::Value) -> Result<Operator, ApiError> {
        let field = |k: &str| format!("anonymizers.{entity}.{k}");
        let kind =
            v.get("type").and_then(|t| t.as_str()).ok_or_else(|| ApiError::field(STYLE, &field("type"), "missing: expected replace, redact, mask or hash"))?;
        let string = |k: &str| -> Result<Option<String>, ApiError> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ApiError::field(STYLE, &field(k), "expected a string")),
            }
        };
        Ok(match kind {
            "keep" => Operator::Keep,
            "replace" => Operator::Replace(string("new_value")?),
            "redact" => Operator::Redact,
            "mask" => {
                let char = string("masking_char")?.ok_or_else(|| ApiError::field(STYLE, &field("masking_char"), "missing: expected one character"))?;
                if char.chars().count() != 1 {
                    return Err(ApiError::field(STYLE, &field("masking_char"), "expected exactly one character"));
                }
                let count = v
                    .get("chars_to_mask")
                    .and_then(|c| c.as_u64())
                    .ok_or_else(|| ApiError::field(STYLE, &field("chars_to_mask"), "missing: expected a whole number ≥ 0"))?;
                let from_end = match v.get("from_end") {
                    None | Some(serde_json::Value::Null) => false,
                    Some(serde_json::Value::Bool(b)) => *b,
                    Some(_) => return Err(ApiError::field(STYLE, &field("from_end"), "expected true or false")),
                };
                Operator::Mask { char, count: count as usize, from_end }
            }
            "hash" => {
                let sha512 = match string("hash_type")?.as_deref() {
                    None | Some("sha256") => false,
                    Some("sha512") => true,
                    Some(other) => return Err(ApiError::field(STYLE, &field("hash_type"), format!("{other:?}: expected sha256 or sha512"))),
                };
                let salt = string("salt")?;
                if salt.as_ref().is_some_and(|s| s.len() < 16) {
                    return Err(ApiError::field(STYLE, &field("salt"), "a salt must be at least 16 bytes"));
                }
                Operator::Hash { sha512, salt }
            }
            other => {
                return Err(ApiError::field(STYLE, &field("type"), format!("{other:?}: expected replace, redact, mask, hash or keep (encrypt is not offered)")))
            }
        })
    }

    fn apply(&self, entity: &str, original: &str) -> String {
        match self {
            Operator::Keep => original.to_string(),
            Operator::Replace(v) => v.clone().filter(|v| !v.is_empty()).unwrap_or_else(|| format!("<{entity}>")),
            Operator::Redact => String::new(),
            Operator::Mask { char, count, from_end } => {
                let chars: Vec<char> = original.chars().collect();
                let n = (*count).min(chars.len());
                let range = if *from_end { chars.len() - n..chars.len() } else { 0..n };
                chars.iter().enumerate().map(|(i, c)| if range.contains(&i) { char.clone() } else { c.to_string() }).collect()
            }
            Operator::Hash { sha512, salt } => {
                let mut input = original.as_bytes().to_vec();
                match salt {
                    Some(s) => input.extend_from_slice(s.as_bytes()),
                    None => {
                        let mut random = [0u8; 32];
                        // Without randomness, refuse to hash rather than hash unsalted.
                        if getrandom::fill(&mut random).is_err() {
                            return "<HASH UNAVAILABLE>".into();
                        }
                        input.extend_from_slice(&random);
                    }
                }
                let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
                if *sha512 {
                    hex(&Sha512::digest(&input))
                } else {
                    hex(&Sha256::digest(&input))
                }
            }
        }
    }
}

/// Presidio's conflict rules: results of one entity type that intersect, or are apart by spaces
/// only, merge into one; a result inside another (or on the same span with a score no higher) is
/// dropped; results of different types that partly overlap are both kept, each anonymized whole.
/// In text order; O(n log n).
fn resolve(mut results: Vec<AnalyzerResult>, chars: &[char]) -> Vec<AnalyzerResult> {
    results.sort_by(|a, b| a.start.cmp(&b.start).then(a.end.cmp(&b.end)));
    let mut merged: Vec<AnalyzerResult> = Vec::new();
    // The last merged result of each type: sorted by start, a result can only join that one.
    let mut last: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for r in results {
        if let Some(&k) = last.get(&r.entity_type) {
            let k = &mut merged[k];
            let spaces = r.start > k.end && chars[k.end..r.start].iter().all(|&c| c == ' ');
            if r.start < k.end || spaces {
                k.end = k.end.max(r.end);
                k.score = k.score.max(r.score);
                continue;
            }
        }
        last.insert(r.entity_type.clone(), merged.len());
        merged.push(r);
    }
    merged.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)).then(b.score.total_cmp(&a.score)));
    let mut kept: Vec<AnalyzerResult> = Vec::new();
    let mut reach = 0;
    for r in merged {
        // Everything kept so far starts at or before r: r is inside one of them if one reaches
        // as far as r's end.
        if !kept.is_empty() && r.end <= reach {
            continue;
        }
        reach = reach.max(r.end);
        kept.push(r);
    }
    kept
}

pub async fn anonymize(State(state): State<super::api::State>, request: Request) -> Result<Response, ApiError> {
    let req: AnonymizeRequest = parse(&state, STYLE, request.into_body()).await?;
    if req.analyzer_results.len() > MAX_RESULTS {
        return Err(ApiError::too_large(
            STYLE,
            "analyzer_results",
            format!("{} results, more than the server's limit of {MAX_RESULTS}", req.analyzer_results.len()),
        ));
    }
    let starts = runtime::deid::CharIndex::new(&req.text).starts;
    let n_chars = starts.len() - 1;
    for (i, r) in req.analyzer_results.iter().enumerate() {
        if r.start >= r.end || r.end > n_chars {
            return Err(ApiError::field(
                STYLE,
                &format!("analyzer_results[{i}]"),
                format!("start {} and end {} must satisfy start < end ≤ {n_chars} (the text's length in characters)", r.start, r.end),
            ));
        }
    }
    let mut operators = std::collections::HashMap::new();
    for (entity, v) in &req.anonymizers {
        operators.insert(entity.clone(), Operator::read(entity, v)?);
    }
    let default = Operator::Replace(None);
    let chars: Vec<char> = req.text.chars().collect();
    let results = resolve(req.analyzer_results, &chars);
    let mut out = String::with_capacity(req.text.len());
    let mut items = Vec::new();
    let mut last = 0;
    let mut out_chars = 0;
    for r in &results {
        // Each result's operator sees its whole span; where two of different types partly
        // overlap, the text between is not repeated (Presidio's output for such a pair).
        let (b0, b1) = (starts[r.start], starts[r.end]);
        let b0g = b0.max(last);
        let before = &req.text[last..b0g];
        out.push_str(before);
        out_chars += before.chars().count();
        let op = operators.get(&r.entity_type).or_else(|| operators.get("DEFAULT")).unwrap_or(&default);
        let replaced = op.apply(&r.entity_type, &req.text[b0..b1]);
        let len = replaced.chars().count();
        items.push(json!({"start": out_chars, "end": out_chars + len, "entity_type": r.entity_type, "text": replaced, "operator": op.name()}));
        out.push_str(&replaced);
        out_chars += len;
        last = last.max(b1);
    }
    out.push_str(&req.text[last..]);
    // Presidio lists the items from the end of the text backwards.
    items.reverse();
    Ok(answer(json!({"text": out, "items": items}), Usage::default()))
}

#[derive(Deserialize)]
struct DeidRequest {
    text: OneOrMany,
    /// Surrogates instead of `[CATEGORY]` placeholders, as `runtime-cli deid --surrogate`.
    #[serde(default)]
    surrogate: bool,
    /// `"placeholder"`, `"surrogate"`, `"shift_dates"` or `"hash"`, as `runtime-cli deid`'s
    /// `--surrogate`, `--shift-dates` and `--hash`.
    #[serde(default)]
    operator: Option<String>,
    /// With `"shift_dates"`: one id per text, naming the document whose dates move together
    /// (the CLI's document ids). Without them every text moves by the server key's offset.
    #[serde(default)]
    document_ids: Option<Vec<String>>,
    #[serde(default)]
    model: Option<String>,
}

/// `POST /deid`: the spans and redacted text `runtime-cli deid` writes (placeholders, or keyed
/// surrogates, shifted dates or hashes under the server's key), for one text
/// (`{"spans", "redacted"}`) or a list of them (a list of those).
pub async fn deid(State(state): State<super::api::State>, request: Request) -> Result<Response, ApiError> {
    let req: DeidRequest = parse(&state, STYLE, request.into_body()).await?;
    let (texts, many) = req.text.into_vec();
    let replace = match req.operator.as_deref() {
        None if req.surrogate => Replace::Surrogate,
        None | Some("placeholder") if !req.surrogate => Replace::Placeholder,
        Some("surrogate") => Replace::Surrogate,
        Some("shift_dates") if !req.surrogate => Replace::ShiftDates,
        Some("hash") if !req.surrogate => Replace::Hash,
        Some(o @ ("placeholder" | "shift_dates" | "hash")) => {
            return Err(ApiError::field(STYLE, "operator", format!("\"{o}\" with \"surrogate\": true; give one of them")));
        }
        Some(o) => return Err(ApiError::field(STYLE, "operator", format!("\"{o}\": expected \"placeholder\", \"surrogate\", \"shift_dates\" or \"hash\""))),
        None => Replace::Placeholder,
    };
    if let Some(ids) = &req.document_ids {
        if replace != Replace::ShiftDates {
            return Err(ApiError::field(STYLE, "document_ids", "only with \"operator\": \"shift_dates\"".to_string()));
        }
        if ids.len() != texts.len() {
            return Err(ApiError::field(STYLE, "document_ids", format!("{} ids for {} texts; expected one per text", ids.len(), texts.len())));
        }
    }
    let (found, usage) = find_spans(&state, req.model.as_deref(), texts, "text", replace, req.document_ids.as_deref()).await?;
    let each: Vec<serde_json::Value> =
        found.iter().map(|(spans, redacted)| json!({"spans": spans.iter().map(Span::to_json).collect::<Vec<_>>(), "redacted": redacted})).collect();
    let body = if many { json!(each) } else { each.into_iter().next().unwrap_or(json!(null)) };
    Ok(answer(body, usage))
}
