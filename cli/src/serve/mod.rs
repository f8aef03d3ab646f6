//! `runtime-cli serve`: one HTTP server for embeddings, classification and de-identification
//! that text-embeddings-inference, OpenAI and Presidio clients talk to unchanged.
//!
//! - `worker.rs`: one thread per model, a bounded queue shared by every connection, batches
//!   packed across clients.
//! - `api.rs`: state, limits, errors in each protocol's shape, body parsing, model choice.
//! - `tei.rs`, `openai.rs`, `presidio.rs` (with this project's `/deid`): the routes.
//! - `metrics.rs`: `/metrics`.
//!
//! Every request gets one log line on stderr (id, route, status, documents, tokens, queue and
//! compute milliseconds): never a byte of its text.

mod api;
mod metrics;
mod openai;
mod presidio;
mod tei;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use crate::args::ServeArgs;
use crate::Failure;
use api::{ApiError, AppState, Limits, Served, Style, Usage};
use metrics::Metrics;
use worker::Batching;

/// The models to serve: `NAME=DIR` or `DIR` (named after the folder); none: the bundled two.
fn model_specs(specs: &[String]) -> Result<Vec<(String, PathBuf)>, Failure> {
    if specs.is_empty() {
        let mut out = Vec::new();
        for name in [runtime::bundled::CLINICAL_SMALL, runtime::bundled::DEID_SMALL] {
            let dir = runtime::bundled::locate(name).map_err(|e| Failure(format!("no --model given, and {e}")))?;
            out.push((name.to_string(), dir));
        }
        return Ok(out);
    }
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for spec in specs {
        let (name, dir) = match spec.split_once('=') {
            Some((n, d)) if !n.is_empty() && !n.contains('/') => (n.to_string(), PathBuf::from(d)),
            _ => {
                let dir = PathBuf::from(spec);
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).filter(|n| !n.is_empty()).unwrap_or_else(|| spec.clone());
                (name, dir)
            }
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(Failure(format!("--model {spec}: a second model named \"{name}\"; name them apart with NAME=DIR")));
        }
        out.push((name, dir));
    }
    Ok(out)
}

fn read_api_key(path: &std::path::Path) -> Result<String, Failure> {
    let bytes = runtime::files::read_limited(path, 4096, "an API key file")?;
    let key = String::from_utf8(bytes).map_err(|_| Failure(format!("{}: the API key file is not UTF-8 text", path.display())))?;
    let key = key.trim().to_string();
    if key.is_empty() {
        return Err(Failure(format!("{}: the API key file is empty", path.display())));
    }
    Ok(key)
}

/// Few malloc arenas. The CPU backend keeps freed buffers in the heap for the next forward pass
/// (`kernels::cpu`: no trimming below 1 GiB free); with glibc's default of an arena per thread,
/// every HTTP and compute thread would keep its own such pool, and a burst of requests would
/// raise the server's memory for good (+40% in `bench/serve.py`'s overload; with two arenas
/// still up to +65%). With one arena per sixteen cores (one on this project's machines) it stays
/// within 5% of where the warm-up batch put it, and ran no slower there.
fn few_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: mallopt only sets a parameter; called before the server's threads start.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, (cores / 16).max(1) as libc::c_int);
        }
    }
}

/// A panic prints where it happened, never its message: a message can quote the text a request
/// carried (a failed string slice shows the string).
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map_or_else(|| "an unknown place".to_string(), |l| format!("{}:{}", l.file(), l.line()));
        eprintln!("internal error (a panic) at {at}; its message is withheld as it may quote request text");
    }));
}

pub fn serve(args: &ServeArgs) -> Result<bool, Failure> {
    few_arenas();
    quiet_panics();
    crate::device::set_threads(args.backend.threads)?;
    let api_key = match (&args.api_key, &args.api_key_file) {
        (Some(k), _) if k.trim().is_empty() => return Err(Failure("--api-key: the key is empty".into())),
        (Some(k), _) => Some(k.trim().to_string()),
        (None, Some(path)) => Some(read_api_key(path)?),
        (None, None) => None,
    };
    let metrics = Arc::new(Metrics::default());
    let batching = Batching {
        max_wait: Duration::from_millis(args.max_batch_wait_ms as u64),
        max_queue_docs: args.max_queue_docs,
        max_queue_time: Duration::from_millis(args.max_queue_ms as u64),
    };
    let mut models = Vec::new();
    for (name, dir) in model_specs(&args.models)? {
        let m = metrics.clone();
        let (info, queue) = worker::start(name, dir, args.backend, args.batch, batching, Arc::new(move |b| m.batch(&b)))?;
        eprintln!(
            "model {}: {} ({}) from {} on {}, {} weights",
            info.name,
            api::kind_of(&info),
            info.architecture.map_or("encoder".into(), |a| format!("{a:?}")),
            info.dir.display(),
            info.device,
            info.dtype
        );
        models.push(Served { info, queue });
    }
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_inputs: args.max_inputs,
        max_input_tokens: args.max_input_tokens,
        timeout: Duration::from_millis(args.timeout_ms as u64),
    };
    let key = match &args.surrogate_key {
        Some(path) => {
            let bytes = runtime::files::read_limited(path, 1 << 20, "a surrogate key file")?;
            runtime::deid::SurrogateKey::from_file_bytes(&path.display().to_string(), &bytes)?
        }
        None => runtime::deid::SurrogateKey::random()?,
    };
    let surrogates = runtime::deid::Surrogates::new(key);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_concurrent_requests));
    let state = Arc::new(AppState {
        models,
        in_flight,
        in_flight_limit: args.max_concurrent_requests,
        limits,
        metrics,
        api_key,
        threshold: args.threshold,
        surrogates,
    });
    let addr = SocketAddr::new(args.host, args.port);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| Failure(format!("starting the server: {e}")))?;
    runtime.block_on(run(state, addr, Duration::from_secs(args.shutdown_timeout_s as u64)))?;
    Ok(true)
}

fn router(state: api::State) -> Router {
    Router::new()
        // text-embeddings-inference
        .route("/", post(tei::root))
        .route("/embed", post(tei::embed))
        .route("/predict", post(tei::predict))
        .route("/tokenize", post(tei::tokenize))
        .route("/info", get(tei::info))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        // OpenAI
        .route("/v1/embeddings", post(openai::embeddings))
        // Presidio
        .route("/analyze", post(presidio::analyze))
        .route("/anonymize", post(presidio::anonymize))
        .route("/supportedentities", get(presidio::supported_entities))
        .route("/anonymizers", get(presidio::anonymizers))
        // this project's own
        .route("/deid", post(presidio::deid))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

async fn run(state: api::State, addr: SocketAddr, grace: Duration) -> Result<(), Failure> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| Failure(format!("listening on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| Failure(format!("listening on {addr}: {e}")))?;
    eprintln!("listening on http://{local}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("shutting down: no new connections; finishing requests in flight (at most {} s)", grace.as_secs());
        let _ = stop_tx.send(true);
    });
    let mut stop = stop_rx.clone();
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let mut stop = stop_rx;
    let deadline = async move {
        let _ = stop.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = server => r.map_err(|e| Failure(format!("the server failed: {e}")))?,
        _ = deadline => eprintln!("shutdown deadline passed: closing the requests still in flight"),
    }
    eprintln!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        // Without a handler, never fire (rather than stop at once).
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The style of error body a path answers with.
fn style_of(path: &str) -> Style {
    match path {
        p if p.starts_with("/v1/") => Style::OpenAi,
        "/analyze" | "/anonymize" | "/supportedentities" | "/anonymizers" | "/deid" => Style::Presidio,
        _ => Style::Tei,
    }
}

/// Every request: the API key (all routes but /health), then one log line and the metrics.
async fn guard(State(state): State<api::State>, request: axum::extract::Request, next: Next) -> Response {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let style = style_of(request.uri().path());
    let response = match &state.api_key {
        Some(key) if route != "/health" && !authorized(request.headers(), key) => {
            ApiError::new(style, StatusCode::UNAUTHORIZED, "a valid API key is required: send `Authorization: Bearer KEY`").into_response()
        }
        // Health and metrics answer even when the server is full.
        _ if route == "/health" || route == "/metrics" => next.run(request).await,
        _ => match state.in_flight.clone().try_acquire_owned() {
            Ok(_permit) => next.run(request).await,
            Err(_) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    style,
                    StatusCode::TOO_MANY_REQUESTS,
                    "the server has as many requests as it takes at once (--max-concurrent-requests); try again shortly",
                )
            }
            .into_response(),
        },
    };
    let mut response = response;
    response.headers_mut().insert("x-request-id", axum::http::HeaderValue::from(id));
    let usage = response.extensions().get::<Usage>().copied().unwrap_or_default();
    let status = response.status().as_u16();
    let total = start.elapsed();
    state.metrics.request(&route, status, total.as_secs_f64());
    response.headers_mut().insert("x-total-time", axum::http::HeaderValue::from(total.as_millis() as u64));
    eprintln!(
        "request id={id} route={route} status={status} documents={} tokens={} queue_ms={:.1} compute_ms={:.1} total_ms={:.1}",
        usage.documents,
        usage.tokens,
        usage.queue.as_secs_f64() * 1e3,
        usage.compute.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3
    );
    response
}

fn authorized(headers: &axum::http::HeaderMap, key: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(given) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) else { return false };
    given.trim().as_bytes().ct_eq(key.as_bytes()).into()
}

async fn health(State(state): State<api::State>) -> Response {
    // Healthy while every model's worker takes work.
    if state.models.iter().all(|m| m.queue.is_open()) {
        StatusCode::OK.into_response()
    } else {
        ApiError::new(Style::Tei, StatusCode::SERVICE_UNAVAILABLE, "a model's worker has stopped").into_response()
    }
}

async fn metrics_text(State(state): State<api::State>) -> Response {
    let depths: Vec<(String, usize, f64)> = state.models.iter().map(|m| (m.info.name.clone(), m.queue.depth(), m.queue.rate())).collect();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render(&depths)).into_response()
}

async fn wrong_method(request: axum::extract::Request) -> Response {
    let path = request.uri().path().to_string();
    ApiError::new(style_of(&path), StatusCode::METHOD_NOT_ALLOWED, format!("{path} does not take {}", request.method())).into_response()
}

async fn not_found(request: axum::extract::Request) -> Response {
    let path = request.uri().path().to_string();
    let routes = "/embed, /predict, /tokenize, /info, /health, /metrics, /v1/embeddings, /analyze, /anonymize, /supportedentities, /anonymizers, /deid";
    ApiError::not_found(style_of(&path), format!("no route {} {path}; the routes are {routes}", request.method())).into_response()
}
