//! What every route shares: the server's state, errors in each protocol's own shape, request
//! bodies read within the limit and parsed with the failing field named, choosing the model a
//! request names, and handing work to a model's queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::metrics::Metrics;
use super::worker::{Done, Job, JobError, ModelInfo, Queue, Refused, Work};
use runtime::tokenize::Encoded;

/// A loaded model as the routes see it.
pub struct Served {
    pub info: Arc<ModelInfo>,
    pub queue: Queue,
}

/// Limits on what one request may ask.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_inputs: usize,
    pub max_input_tokens: usize,
    pub timeout: Duration,
}

pub struct AppState {
    pub models: Vec<Served>,
    /// One permit per request in the server (`--max-concurrent-requests`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub in_flight_limit: usize,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub api_key: Option<String>,
    pub threshold: f32,
    /// `/deid`'s surrogates, under the server's key.
    pub surrogates: runtime::deid::Surrogates,
}

pub type State = Arc<AppState>;

/// Which protocol's error body a route answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// text-embeddings-inference: `{"error": "...", "error_type": "Validation"}`.
    Tei,
    /// OpenAI: `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
    /// Presidio: `{"error": "..."}`.
    Presidio,
}

/// A refused or failed request: the status, a message that names the field (never note text).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, where there is one.
    pub field: Option<String>,
    pub style: Style,
    /// Seconds a client should wait before trying again (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(style: Style, status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), field: None, style, retry_after: None }
    }
    /// A field that is missing, empty or of the wrong kind (422).
    pub fn field(style: Style, field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("field \"{field}\": {}", message.into()),
            field: Some(field.to_string()),
            style,
            retry_after: None,
        }
    }
    pub fn too_large(style: Style, field: &str, message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, ..ApiError::field(style, field, message) }
    }
    pub fn not_found(style: Style, message: impl Into<String>) -> Self {
        ApiError::new(style, StatusCode::NOT_FOUND, message)
    }
    pub fn internal(style: Style, message: impl Into<String>) -> Self {
        ApiError::new(style, StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// TEI's error type for a status.
    fn tei_type(&self) -> &'static str {
        match self.status {
            StatusCode::TOO_MANY_REQUESTS => "Overloaded",
            StatusCode::SERVICE_UNAVAILABLE => "Unhealthy",
            StatusCode::INTERNAL_SERVER_ERROR => "Backend",
            StatusCode::BAD_REQUEST if self.field.is_some() => "Empty",
            _ => "Validation",
        }
    }

    /// OpenAI's error type for a status.
    fn openai_type(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.style {
            Style::Tei => serde_json::json!({"error": self.message, "error_type": self.tei_type()}),
            Style::OpenAi => serde_json::json!({"error": {"message": self.message, "type": self.openai_type(), "param": self.field, "code": null}}),
            Style::Presidio => serde_json::json!({"error": self.message}),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// What a request did, for its log line and the metrics (counts and times only: no text).
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub documents: usize,
    pub tokens: usize,
    pub queue: Duration,
    pub compute: Duration,
}

/// A JSON response with its usage attached for the log line, and TEI's timing headers
/// (milliseconds): `x-queue-time`, `x-inference-time`, `x-compute-tokens`.
pub fn answer(body: serde_json::Value, usage: Usage) -> Response {
    let mut r = axum::Json(body).into_response();
    let h = r.headers_mut();
    let ms = |d: Duration| HeaderValue::from(d.as_millis() as u64);
    h.insert("x-queue-time", ms(usage.queue));
    h.insert("x-inference-time", ms(usage.compute));
    h.insert("x-compute-tokens", HeaderValue::from(usage.tokens as u64));
    r.extensions_mut().insert(usage);
    r
}

/// Read a body of at most the limit (413 beyond) and parse it as `T`, naming the field that does
/// not fit (422) or saying where the JSON is malformed (400).
pub async fn parse<T: DeserializeOwned>(state: &AppState, style: Style, body: Body) -> Result<T, ApiError> {
    let limit = state.limits.max_body_bytes;
    // A body that arrives too slowly holds its place no longer than a request may take.
    let bytes = match tokio::time::timeout(state.limits.timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => return Err(ApiError::new(style, StatusCode::REQUEST_TIMEOUT, "the request body did not arrive within the server's deadline (--timeout-ms)")),
        Ok(Err(_)) => {
            return Err(ApiError::new(
                style,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than the server's limit of {limit} bytes (--max-body-bytes)"),
            ))
        }
        Ok(Ok(b)) => b,
    };
    if bytes.is_empty() {
        return Err(ApiError::new(style, StatusCode::BAD_REQUEST, "the request has no body: expected a JSON object"));
    }
    if std::str::from_utf8(&bytes).is_err() {
        return Err(ApiError::new(style, StatusCode::BAD_REQUEST, "the request body is not valid UTF-8"));
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // Syntax errors are the JSON's; data errors (wrong kind, missing field) the request's.
        let message = strip_position(&inner.to_string());
        if inner.is_data() {
            let field = if path == "." { missing_field(&message).unwrap_or_else(|| "body".into()) } else { path };
            ApiError::field(style, &field, message)
        } else {
            ApiError::new(style, StatusCode::BAD_REQUEST, format!("the request body is not valid JSON: {message}"))
        }
    })
}

/// serde_json's " at line L column C" tail: the position is of no use to a caller and, for a
/// value, the text near it is never echoed anyway.
fn strip_position(m: &str) -> String {
    m.split(" at line ").next().unwrap_or(m).to_string()
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Which kind of model a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Embedder,
    SequenceClassifier,
    TokenClassifier,
    Any,
}

impl Needs {
    fn fits(self, m: &ModelInfo) -> bool {
        match self {
            Needs::Embedder => m.is_embedder(),
            Needs::SequenceClassifier => m.has_sequence_classifier(),
            Needs::TokenClassifier => m.has_token_classifier(),
            Needs::Any => true,
        }
    }
    fn what(self) -> &'static str {
        match self {
            Needs::Embedder => "an embedding model (an encoder without a classification head)",
            Needs::SequenceClassifier => "a sequence-classification model",
            Needs::TokenClassifier => "a token-classification (de-identification) model",
            Needs::Any => "a model",
        }
    }
}

/// The model a request is for: when one model of the kind the route needs is loaded, that one,
/// whatever `model` says (as TEI does, so clients that hard-code a name work); with several, the
/// one named (404 listing the loaded ones for another name; the first when none is named).
pub fn choose<'a>(state: &'a AppState, style: Style, needs: Needs, name: Option<&str>) -> Result<&'a Served, ApiError> {
    let fitting: Vec<&Served> = state.models.iter().filter(|m| needs.fits(&m.info)).collect();
    let loaded = || state.models.iter().map(|m| format!("{} ({})", m.info.name, kind_of(&m.info))).collect::<Vec<_>>().join(", ");
    match (fitting.as_slice(), name) {
        ([], _) => Err(ApiError::not_found(style, format!("this route needs {}; the server has none loaded (loaded: {})", needs.what(), loaded()))),
        ([only], _) => Ok(only),
        (many, Some(n)) => many.iter().find(|m| m.info.name == n).copied().ok_or_else(|| {
            let mut e = ApiError::not_found(style, format!("no model named \"{n}\" for this route; loaded: {}", loaded()));
            e.field = Some("model".into());
            e
        }),
        ([first, ..], None) => Ok(first),
    }
}

pub fn kind_of(m: &ModelInfo) -> &'static str {
    if m.has_token_classifier() {
        "token classification"
    } else if m.has_sequence_classifier() {
        "sequence classification"
    } else {
        "embeddings"
    }
}

/// Tokenize the inputs on the blocking pool (without special tokens, like the CLI: windows add
/// them), checking the per-input token limit. `field` names the inputs in messages.
pub async fn tokenize(state: &AppState, style: Style, model: &ModelInfo, texts: Vec<String>, field: &str) -> Result<Vec<Encoded>, ApiError> {
    let empty = |at: &str, what: &str| ApiError { status: StatusCode::BAD_REQUEST, ..ApiError::field(style, at, what) };
    if texts.is_empty() {
        return Err(empty(field, "no inputs: expected a non-empty string or a non-empty list of strings"));
    }
    if texts.len() > state.limits.max_inputs {
        return Err(ApiError::too_large(
            style,
            field,
            format!("{} inputs, more than the server's limit of {} per request (--max-inputs)", texts.len(), state.limits.max_inputs),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        let at = if texts.len() > 1 { format!("{field}[{i}]") } else { field.to_string() };
        return Err(empty(&at, "an empty input: expected text"));
    }
    let small = texts.iter().map(String::len).sum::<usize>() <= 16 << 10;
    let tokenizer = model.tokenizer.clone();
    let encode = move || texts.iter().map(|t| tokenizer.encode_plain_in_pieces(t, runtime::pipeline::TOKENIZE_PIECE_BYTES)).collect::<Result<Vec<_>, _>>();
    // A short request is tokenized in place (tens of microseconds); a long one on the blocking
    // pool, so that it does not hold up the connections sharing this thread.
    let encs = if small { encode() } else { tokio::task::spawn_blocking(encode).await.map_err(|_| ApiError::internal(style, "tokenization failed"))? }
        .map_err(|e| ApiError::new(style, StatusCode::UNPROCESSABLE_ENTITY, format!("tokenization failed: {e}")))?;
    let limit = state.limits.max_input_tokens;
    if let Some((i, e)) = encs.iter().enumerate().find(|(_, e)| e.len() > limit) {
        let at = if encs.len() > 1 { format!("{field}[{i}]") } else { field.to_string() };
        return Err(ApiError::too_large(style, &at, format!("{} tokens, more than the server's limit of {limit} per input (--max-input-tokens)", e.len())));
    }
    if let Some(i) = encs.iter().position(|e| e.is_empty()) {
        let at = if encs.len() > 1 { format!("{field}[{i}]") } else { field.to_string() };
        return Err(ApiError::field(style, &at, "the input has no tokens"));
    }
    Ok(encs)
}

/// Queue the work and wait for its rows: 429 with Retry-After when the queue is full, 503 past
/// the deadline, 500 when its batch failed. A client that disconnects drops this future, which
/// closes the answer channel, and the worker skips the request.
pub async fn run(state: &AppState, style: Style, served: &Served, work: Work, encs: Vec<Encoded>) -> Result<(Done, Usage), ApiError> {
    let tokens = encs.iter().map(|e| e.len()).sum();
    let documents = encs.len();
    if documents > served.queue.capacity() {
        return Err(ApiError::too_large(
            style,
            "inputs",
            format!("{documents} inputs, more than model {}'s whole queue holds ({}, --max-queue-docs)", served.info.name, served.queue.capacity()),
        ));
    }
    let (answer, wait) = tokio::sync::oneshot::channel();
    let now = Instant::now();
    let deadline = now + state.limits.timeout;
    served.queue.submit(Job { work, encs, deadline, enqueued: now, answer }, state.limits.timeout).map_err(|r| match r {
        Refused::Full { wait } => ApiError {
            retry_after: Some(wait.as_secs().clamp(1, 60)),
            ..ApiError::new(style, StatusCode::TOO_MANY_REQUESTS, format!("model {} has its queue full; try again shortly", served.info.name))
        },
        Refused::Closed => ApiError::new(style, StatusCode::SERVICE_UNAVAILABLE, format!("model {} has stopped", served.info.name)),
    })?;
    let unavailable = || ApiError {
        retry_after: Some(1),
        ..ApiError::new(
            style,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no answer within the server's deadline of {} ms (--timeout-ms)", state.limits.timeout.as_millis()),
        )
    };
    let done = match tokio::time::timeout_at(deadline.into(), wait).await {
        Err(_) => return Err(unavailable()),
        Ok(Err(_)) => return Err(ApiError::internal(style, "the model's worker stopped")),
        Ok(Ok(Err(JobError::Deadline))) => return Err(unavailable()),
        Ok(Ok(Err(JobError::Failed(m)))) => return Err(ApiError::internal(style, m)),
        Ok(Ok(Ok(done))) => done,
    };
    let usage = Usage { documents, tokens, queue: done.queue, compute: done.compute };
    Ok((done, usage))
}

/// One input or several, as TEI, OpenAI and Presidio accept them.
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> serde::Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(OneOrMany::One(s)),
            serde_json::Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    serde_json::Value::String(s) => Ok(s),
                    other => {
                        // Token ids (numbers, or lists of them) come from another model's tokenizer.
                        let ids = matches!(other, serde_json::Value::Number(_) | serde_json::Value::Array(_));
                        let hint = if ids { " (token ids are not taken: they would be another tokenizer's; LangChain's OpenAIEmbeddings sends them unless check_embedding_ctx_length=False)" } else { "" };
                        Err(D::Error::custom(format!("item {i} is {}: expected a string or a list of strings{hint}", kind(&other))))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(OneOrMany::Many),
            other => Err(D::Error::custom(format!("{}: expected a string or a list of strings", kind(&other)))),
        }
    }
}

/// A JSON value's kind, for messages (never its content: it may be note text).
fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

impl OneOrMany {
    pub fn into_vec(self) -> (Vec<String>, bool) {
        match self {
            OneOrMany::One(s) => (vec![s], false),
            OneOrMany::Many(v) => (v, true),
        }
    }
}

/// L2-normalise a vector (in f64), as `runtime-cli embed --normalize` does.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
}

/// A response body to `Body` for handlers that take the raw request.
pub type Request = axum::extract::Request;
