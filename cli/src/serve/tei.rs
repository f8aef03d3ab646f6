//! text-embeddings-inference's routes: `/embed` (and `/`, where TEI answers an embedding model),
//! `/predict`, `/tokenize`, `/info`, with TEI's request and response shapes.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::api::{answer, choose, normalize, parse, run, tokenize as tokenize_texts, ApiError, Needs, OneOrMany, Request, Style, Usage};
use super::worker::Work;
use runtime::config::Pooling;
use runtime::pipeline::softmax;

const STYLE: Style = Style::Tei;

#[derive(Deserialize)]
struct EmbedRequest {
    inputs: OneOrMany,
    #[serde(default)]
    normalize: Option<bool>,
    /// Cut each input to one window instead of windowing it.
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Option<String>,
    /// Keep the first `dimensions` values (then normalise), as TEI does.
    #[serde(default)]
    dimensions: Option<usize>,
    /// TEI's extension for naming a model; accepted where several are loaded.
    #[serde(default)]
    model: Option<String>,
}

/// Cut each encoding to `window` tokens, from the start (`Right`, TEI's default) or the end.
fn truncate(encs: &mut [runtime::tokenize::Encoded], window: usize, from_left: bool) {
    for e in encs {
        if e.len() > window {
            let keep = if from_left { e.len() - window..e.len() } else { 0..window };
            e.ids = e.ids[keep.clone()].to_vec();
            e.type_ids = e.type_ids[keep.clone()].to_vec();
            e.offsets = e.offsets[keep.clone()].to_vec();
            e.special = e.special[keep.clone()].to_vec();
            e.words = e.words[keep].to_vec();
        }
    }
}

/// Embeddings of the inputs as TEI returns them: one list per input.
pub(super) async fn embed_values(
    state: &super::api::AppState,
    style: Style,
    model: Option<&str>,
    texts: Vec<String>,
    field: &str,
    normalize_it: Option<bool>,
    cut: Option<(bool, bool)>,
    dimensions: Option<usize>,
) -> Result<(Vec<Vec<f32>>, Usage, String), ApiError> {
    let served = choose(state, style, Needs::Embedder, model)?;
    let mut encs = tokenize_texts(state, style, &served.info, texts, field).await?;
    if let Some((true, from_left)) = cut {
        truncate(&mut encs, served.info.settings.window, from_left);
    }
    let width = served.info.hidden_size;
    if let Some(d) = dimensions {
        if d == 0 || d > width {
            return Err(ApiError::field(style, "dimensions", format!("{d}: expected 1 to {width} (the model's embedding size)")));
        }
    }
    let (done, usage) = run(state, style, served, Work::Embed, encs).await?;
    let mut rows = done.rows;
    if let Some(d) = dimensions {
        rows.iter_mut().for_each(|r| r.truncate(d));
    }
    if normalize_it.unwrap_or(true) {
        rows.iter_mut().for_each(|r| normalize(r));
    }
    Ok((rows, usage, served.info.name.clone()))
}

fn direction(d: Option<&str>) -> Result<bool, ApiError> {
    match d {
        None | Some("Right") | Some("right") => Ok(false),
        Some("Left") | Some("left") => Ok(true),
        Some(other) => Err(ApiError::field(STYLE, "truncation_direction", format!("{other:?}: expected \"Left\" or \"Right\""))),
    }
}

pub async fn embed(State(state): State<super::api::State>, request: Request) -> Result<Response, ApiError> {
    let req: EmbedRequest = parse(&state, STYLE, request.into_body()).await?;
    let (texts, _) = req.inputs.into_vec();
    let from_left = direction(req.truncation_direction.as_deref())?;
    let (rows, usage, _) =
        embed_values(&state, STYLE, req.model.as_deref(), texts, "inputs", req.normalize, Some((req.truncate.unwrap_or(false), from_left)), req.dimensions)
            .await?;
    Ok(answer(json!(rows), usage))
}

/// `POST /`: TEI answers its model's main route there; here, embeddings.
pub async fn root(state: State<super::api::State>, request: Request) -> Result<Response, ApiError> {
    embed(state, request).await
}

/// TEI's `inputs` of `/predict`: a text, a pair `["a", "b"]`, or a batch `[["a"], ["b", "c"]]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum PredictInputs {
    One(String),
    Pair(Vec<String>),
    Batch(Vec<Vec<String>>),
}

#[derive(Deserialize)]
struct PredictRequest {
    inputs: PredictInputs,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    model: Option<String>,
}

pub async fn predict(State(state): State<super::api::State>, request: Request) -> Result<Response, ApiError> {
    let req: PredictRequest = parse(&state, STYLE, request.into_body()).await?;
    let pairs =
        || ApiError::field(STYLE, "inputs", "sentence pairs are not supported by this server: send a text, or a batch of one-text lists [[\"a\"], [\"b\"]]");
    let (texts, many) = match req.inputs {
        PredictInputs::One(s) => (vec![s], false),
        PredictInputs::Pair(v) if v.len() == 1 => (v, false),
        PredictInputs::Pair(_) => return Err(pairs()),
        PredictInputs::Batch(b) => {
            if b.iter().any(|s| s.len() != 1) {
                return Err(pairs());
            }
            (b.into_iter().flatten().collect(), true)
        }
    };
    let served = choose(&state, STYLE, Needs::SequenceClassifier, req.model.as_deref())?;
    let mut encs = tokenize_texts(&state, STYLE, &served.info, texts, "inputs").await?;
    if req.truncate.unwrap_or(false) {
        truncate(&mut encs, served.info.settings.window, false);
    }
    let (done, usage) = run(&state, STYLE, served, Work::SequenceLogits, encs).await?;
    let info = &served.info;
    let multi_label = info.problem_type.as_deref() == Some("multi_label_classification");
    let per_input: Vec<serde_json::Value> = done
        .rows
        .iter()
        .map(|logits| {
            let scores: Vec<f32> = if req.raw_scores {
                logits.clone()
            } else if multi_label {
                logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect()
            } else {
                softmax(logits)
            };
            let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            json!(ranked.iter().map(|&(i, s)| json!({"score": s, "label": info.labels[i]})).collect::<Vec<_>>())
        })
        .collect();
    let body = if many { json!(per_input) } else { per_input.into_iter().next().unwrap_or(json!([])) };
    Ok(answer(body, usage))
}

#[derive(Deserialize)]
struct TokenizeRequest {
    inputs: OneOrMany,
    #[serde(default = "yes")]
    add_special_tokens: bool,
    #[serde(default)]
    model: Option<String>,
}

fn yes() -> bool {
    true
}

pub async fn tokenize(State(state): State<super::api::State>, request: Request) -> Result<Response, ApiError> {
    let req: TokenizeRequest = parse(&state, STYLE, request.into_body()).await?;
    let served = choose(&state, STYLE, Needs::Any, req.model.as_deref())?;
    let (texts, _) = req.inputs.into_vec();
    let encs = tokenize_texts(&state, STYLE, &served.info, texts.clone(), "inputs").await?;
    let tok = &served.info.tokenizer;
    let special = |id: u32| json!({"id": id, "text": tok.token(id).unwrap_or_default(), "special": true, "start": null, "stop": null});
    let mut documents = 0;
    let mut tokens = 0;
    let out: Vec<serde_json::Value> = encs
        .iter()
        .zip(&texts)
        .map(|(e, text)| {
            documents += 1;
            let mut list = Vec::with_capacity(e.len() + 2);
            if req.add_special_tokens {
                list.push(special(tok.specials.cls));
            }
            for (k, &id) in e.ids.iter().enumerate() {
                let (a, b) = e.offsets[k];
                list.push(json!({"id": id, "text": text.get(a..b).unwrap_or_default(), "special": e.special[k], "start": a, "stop": b}));
            }
            if req.add_special_tokens {
                list.push(special(tok.specials.sep));
            }
            tokens += list.len();
            json!(list)
        })
        .collect();
    Ok(answer(json!(out), Usage { documents, tokens, ..Usage::default() }))
}

pub async fn info(State(state): State<super::api::State>) -> Result<Response, ApiError> {
    // TEI describes its one model; here, the first embedder (or the first model), with every
    // loaded model listed under `models`.
    let first = state.models.iter().find(|m| m.info.is_embedder()).or(state.models.first()).ok_or_else(|| ApiError::internal(STYLE, "no model loaded"))?;
    let describe = |m: &super::api::Served| {
        let i = &m.info;
        let model_type = if i.has_sequence_classifier() || i.has_token_classifier() {
            let id2label: serde_json::Map<String, serde_json::Value> = i.labels.iter().enumerate().map(|(k, l)| (k.to_string(), json!(l))).collect();
            let label2id: serde_json::Map<String, serde_json::Value> = i.labels.iter().enumerate().map(|(k, l)| (l.clone(), json!(k))).collect();
            json!({"classifier": {"id2label": id2label, "label2id": label2id}})
        } else {
            json!({"embedding": {"pooling": match i.pooling { Pooling::Mean => "mean", Pooling::Cls => "cls" }}})
        };
        json!({
            "model_id": i.name,
            "model_sha": null,
            "model_dtype": i.dtype,
            "model_type": model_type,
            "max_input_length": i.settings.window + 2,
            "max_batch_tokens": i.settings.batch_tokens,
            "device": i.device,
        })
    };
    let mut body = describe(first);
    let limits = state.limits;
    let extra = json!({
        "max_concurrent_requests": state.in_flight_limit,
        "max_batch_requests": null,
        "max_client_batch_size": limits.max_inputs,
        "auto_truncate": false,
        "tokenization_workers": null,
        "version": env!("CARGO_PKG_VERSION"),
        "sha": null,
        "docker_label": null,
        "models": state.models.iter().map(describe).collect::<Vec<_>>(),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    Ok(answer(body, Usage::default()))
}
