//! `/metrics`: request counts by route and status, latency histograms by route, queue depth per
//! model, batch sizes in requests, documents and tokens, tokens processed (whose rate is the
//! throughput in tokens/s) and each model's recent compute rate, in the OpenMetrics text format
//! Prometheus scrapes (prometheus-client).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::worker::BatchStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Route {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: Family<Route, Histogram>,
    queue_depth: Family<ModelLabel, Gauge>,
    rate: Family<ModelLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    batch_requests: Family<ModelLabel, Histogram>,
    batch_documents: Family<ModelLabel, Histogram>,
    batch_tokens: Family<ModelLabel, Histogram>,
    batch_seconds: Family<ModelLabel, Histogram>,
    tokens: Family<ModelLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("serve");
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register("requests", "HTTP requests answered, by route and status", requests.clone());
        let latency = Family::<Route, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 18)));
        registry.register("request_duration_seconds", "Time from a request's arrival to its answer, by route", latency.clone());
        let queue_depth = Family::<ModelLabel, Gauge>::default();
        registry.register("queue_documents", "Documents waiting in a model's queue", queue_depth.clone());
        let rate = Family::<ModelLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register("compute_tokens_per_second", "A model's recent compute rate (an average over its last batches), tokens per second", rate.clone());
        let sizes = || Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let batch_requests = Family::<ModelLabel, Histogram>::new_with_constructor(sizes);
        registry.register("batch_requests", "Requests per batch", batch_requests.clone());
        let batch_documents = Family::<ModelLabel, Histogram>::new_with_constructor(sizes);
        registry.register("batch_documents", "Documents per batch", batch_documents.clone());
        let batch_tokens = Family::<ModelLabel, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(16.0, 2.0, 14)));
        registry.register("batch_tokens", "Tokens per batch (special tokens included)", batch_tokens.clone());
        let batch_seconds = Family::<ModelLabel, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 18)));
        registry.register("batch_duration_seconds", "Compute time per batch", batch_seconds.clone());
        let tokens = Family::<ModelLabel, Counter>::default();
        registry.register("tokens", "Tokens computed; its rate is the tokens per second", tokens.clone());
        Metrics { registry, requests, latency, queue_depth, rate, batch_requests, batch_documents, batch_tokens, batch_seconds, tokens }
    }
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.requests.get_or_create(&RouteStatus { route: route.to_string(), status }).inc();
        self.latency.get_or_create(&Route { route: route.to_string() }).observe(seconds);
    }

    pub fn batch(&self, b: &BatchStats) {
        let m = ModelLabel { model: b.model.clone() };
        self.batch_requests.get_or_create(&m).observe(b.requests as f64);
        self.batch_documents.get_or_create(&m).observe(b.documents as f64);
        self.batch_tokens.get_or_create(&m).observe(b.tokens as f64);
        self.batch_seconds.get_or_create(&m).observe(b.seconds);
        self.tokens.get_or_create(&m).inc_by(b.tokens as u64);
    }

    /// The text exposition, with each model's queue depth and compute rate as of now.
    pub fn render(&self, models: &[(String, usize, f64)]) -> String {
        for (model, depth, rate) in models {
            let m = ModelLabel { model: model.clone() };
            self.queue_depth.get_or_create(&m).set(*depth as i64);
            self.rate.get_or_create(&m).set(*rate);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
