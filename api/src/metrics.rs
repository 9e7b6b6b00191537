//! Prometheus metrics at `GET /metrics` on the metrics listener (`METRICS_ADDR`).
//!
//! Counters and histograms are kept by the `metrics` facade and rendered by
//! `metrics-exporter-prometheus`; gauges that describe the store (lags, pool, sockets) are read
//! at scrape time. Each server holds its own recorder rather than the process-wide one, so
//! several servers in one process (the tests) keep separate figures.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::state::AppState;

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Upper bounds of the size histogram buckets (attempts, or commands or events per transaction).
const SIZE_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

const REQUESTS: &str = "escrow_http_requests_total";
const REQUEST_SECONDS: &str = "escrow_http_request_duration_seconds";
const COMMANDS: &str = "escrow_commands_total";
const COMMAND_SECONDS: &str = "escrow_command_duration_seconds";
const ATTEMPTS: &str = "escrow_command_attempts";
const BATCH_COMMANDS: &str = "escrow_append_batch_commands";
const BATCH_EVENTS: &str = "escrow_append_batch_events";

/// How often histogram samples are folded into their buckets when nobody scrapes, so memory
/// stays bounded on a server whose metrics are never read.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// This server's recorder and the handle that renders it.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A recorder with the documented buckets and help texts.
    pub fn new() -> Self {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in [
            (REQUEST_SECONDS, &LATENCY_BUCKETS[..]),
            (COMMAND_SECONDS, &LATENCY_BUCKETS[..]),
            (ATTEMPTS, &SIZE_BUCKETS[..]),
            (BATCH_COMMANDS, &SIZE_BUCKETS[..]),
            (BATCH_EVENTS, &SIZE_BUCKETS[..]),
        ] {
            // Only an empty bucket list is refused, and these are constants.
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                .expect("constant, non-empty buckets");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let metrics = Metrics { recorder, handle };
        metrics.with(describe);
        metrics
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Folds pending histogram samples into their buckets.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    fn observe(&self, method: String, route: String, status: u16, seconds: f64) {
        self.with(|| {
            counter!(REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
                .increment(1);
            histogram!(REQUEST_SECONDS, "method" => method, "route" => route).record(seconds);
        });
    }
}

fn describe() {
    describe_counter!(
        REQUESTS,
        "HTTP requests by method, route and status (commands by type and outcome)."
    );
    describe_histogram!(REQUEST_SECONDS, "Request latency by method and route.");
    describe_counter!(
        COMMANDS,
        "Commands executed, by command and outcome (ok, replayed, a domain error code, busy, error)."
    );
    describe_histogram!(
        COMMAND_SECONDS,
        "Command latency (decide, append, commit), by command."
    );
    describe_histogram!(
        ATTEMPTS,
        "Times a command was decided (1 + retries after version conflicts)."
    );
    describe_histogram!(BATCH_COMMANDS, "Commands per append transaction.");
    describe_histogram!(BATCH_EVENTS, "Events per append transaction.");
    describe_counter!(
        "escrow_webhook_deliveries_total",
        "Webhook deliveries this process finished, by endpoint and outcome (succeeded, or failed for longer than the maximum age)."
    );
    describe_counter!(
        "escrow_webhook_attempts_total",
        "Webhook delivery attempts this process made, by endpoint."
    );
    describe_counter!(
        "escrow_webhook_failed_attempts_total",
        "Webhook delivery attempts that got no 2xx in time, by endpoint (each is retried)."
    );
    describe_gauge!(
        "escrow_webhook_delivery_lag_seconds",
        "From the newest delivered event's recording to its endpoint's 2xx, by endpoint."
    );
    describe_gauge!(
        "escrow_webhook_slowed_for_load",
        "1 while the CPU is contended and the endpoint is sent to at WEBHOOK_BUSY_RATE_PER_ENDPOINT, by endpoint."
    );
    describe_gauge!(
        "escrow_webhook_pending_deliveries",
        "Deliveries waiting, by endpoint (counted up to 128)."
    );
    describe_gauge!(
        "escrow_event_store_head_position",
        "Position of the newest event."
    );
    describe_gauge!(
        "escrow_relay_lag_positions",
        "Events not yet published to JetStream."
    );
    describe_gauge!(
        "escrow_relay_lag_seconds",
        "Age of the oldest unpublished event."
    );
    describe_gauge!(
        "escrow_projection_lag_positions",
        "Events not yet applied, by projection."
    );
    describe_gauge!(
        "escrow_projection_lag_seconds",
        "Age of the oldest event not yet applied, by projection."
    );
    describe_gauge!(
        "escrow_db_pool_connections",
        "Database connections of this process."
    );
    describe_gauge!(
        "escrow_websocket_connections",
        "Open WebSocket connections of this process."
    );
    describe_counter!(
        "escrow_jetstream_publish_errors_total",
        "Failed JetStream publish rounds of this process's relay."
    );
    describe_counter!(
        "escrow_read_wait_statements_total",
        "Database checks (where the event is, whether it is applied) run by reads waiting for minPosition (the worker's batches answer most without one)."
    );
}

impl command_handlers::Observer for Metrics {
    fn command(&self, command: &'static str, outcome: &str, seconds: f64, attempts: u32) {
        self.with(|| {
            counter!(COMMANDS, "command" => command, "outcome" => outcome.to_owned()).increment(1);
            histogram!(COMMAND_SECONDS, "command" => command).record(seconds);
            histogram!(ATTEMPTS).record(f64::from(attempts));
        });
    }

    fn append(&self, commands: usize, _streams: usize, events: usize) {
        self.with(|| {
            histogram!(BATCH_COMMANDS).record(commands as f64);
            histogram!(BATCH_EVENTS).record(events as f64);
        });
    }
}

/// Middleware: counts every request by method, route template and status, and times it.
pub async fn record(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    tracing::Span::current().record("route", route.as_str());
    let res = next.run(req).await;
    st.metrics.observe(
        method,
        route,
        res.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    res
}

/// Lags read from the store: the newest position, and how far the relay and each
/// projection are behind it, in positions and in seconds.
struct Lags {
    head: i64,
    relay: event_store::Lag,
    projections: Vec<(String, event_store::Lag)>,
}

async fn lags(st: &AppState) -> Result<Lags, event_store::StoreError> {
    let store = st.store();
    let head = store.head_position().await?;
    let relayed = store
        .checkpoints_named(escrow_nats::RELAY_LEASE_PREFIX)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .max()
        .unwrap_or(0);
    let projected = projections::checkpoints(&st.pool).await?;
    let mut at = vec![relayed];
    at.extend(projected.iter().map(|(_, p)| *p));
    let mut lags = store.lags(&at).await?.into_iter();
    let relay = lags.next().unwrap_or_default();
    let projections = projected
        .into_iter()
        .map(|(name, _)| name)
        .zip(lags)
        .collect();
    Ok(Lags {
        head,
        relay,
        projections,
    })
}

/// `GET /metrics`.
pub async fn scrape(State(st): State<AppState>) -> Response {
    // A failed lag query leaves the gauges at their last reading; the counters still answer.
    let lags = lags(&st).await;
    let idle = st.pool.num_idle() as u32;
    let used = st.pool.size().saturating_sub(idle);
    st.metrics.with(|| {
        if let Ok(l) = &lags {
            gauge!("escrow_event_store_head_position").set(l.head as f64);
            gauge!("escrow_relay_lag_positions").set(l.relay.positions as f64);
            gauge!("escrow_relay_lag_seconds").set(l.relay.seconds);
            for (name, lag) in &l.projections {
                gauge!("escrow_projection_lag_positions", "projection" => name.clone())
                    .set(lag.positions as f64);
                gauge!("escrow_projection_lag_seconds", "projection" => name.clone())
                    .set(lag.seconds);
            }
        }
        gauge!("escrow_db_pool_connections", "state" => "idle").set(f64::from(idle));
        gauge!("escrow_db_pool_connections", "state" => "used").set(f64::from(used));
        gauge!("escrow_websocket_connections").set(st.hub.connections() as f64);
        counter!("escrow_jetstream_publish_errors_total").absolute(escrow_nats::publish_errors());
        counter!("escrow_read_wait_statements_total").absolute(st.freshness.statements());
        for (id, w) in webhooks::stats() {
            let id = id.to_string();
            for (outcome, n) in [("succeeded", w.succeeded), ("failed", w.failed)] {
                counter!("escrow_webhook_deliveries_total", "webhook" => id.clone(), "outcome" => outcome)
                    .absolute(n);
            }
            counter!("escrow_webhook_attempts_total", "webhook" => id.clone()).absolute(w.attempts);
            counter!("escrow_webhook_failed_attempts_total", "webhook" => id.clone())
                .absolute(w.failed_attempts);
            gauge!("escrow_webhook_delivery_lag_seconds", "webhook" => id.clone()).set(w.lag_seconds);
            gauge!("escrow_webhook_slowed_for_load", "webhook" => id.clone())
                .set(f64::from(u8::from(w.slowed_for_load)));
            gauge!("escrow_webhook_pending_deliveries", "webhook" => id).set(w.pending as f64);
        }
    });
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.handle.render(),
    )
        .into_response()
}
