//! OpenAI's `POST /v1/embeddings`: `input` (a string or a list of strings), `model`,
//! `encoding_format` (`float`, or `base64`: little-endian f32 bytes), with OpenAI's response and
//! error objects. Embeddings are L2-normalised, as OpenAI's are.

use axum::extract::State;
use axum::response::Response;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::api::{answer, parse, ApiError, OneOrMany, Request, Style};
use super::tei::embed_values;

const STYLE: Style = Style::OpenAi;

#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: OneOrMany,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// Accepted and ignored, as OpenAI's own optional fields.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

pub async fn embeddings(State(state): State<super::api::State>, request: Request) -> Result<Response, ApiError> {
    let req: EmbeddingsRequest = parse(&state, STYLE, request.into_body()).await?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::field(STYLE, "encoding_format", format!("{other:?}: expected \"float\" or \"base64\""))),
    };
    let (texts, _) = req.input.into_vec();
    let (rows, usage, model) = embed_values(&state, STYLE, req.model.as_deref(), texts, "input", Some(true), None, req.dimensions).await?;
    let data: Vec<serde_json::Value> = rows
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": req.model.unwrap_or(model),
        "usage": {"prompt_tokens": usage.tokens, "total_tokens": usage.tokens},
    });
    Ok(answer(body, usage))
}
