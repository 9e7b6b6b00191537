//! Prometheus metrics at `GET /metrics` (text exposition format 0.0.4), without a metrics
//! library: a few counters and histograms kept in memory, and gauges read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Request counters and latency histograms, by route and outcome.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
}

impl Metrics {
    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
        }
        if let Ok(mut m) = self.latency.lock() {
            let h = m.entry((method.to_owned(), route.to_owned())).or_default();
            for (i, le) in BUCKETS.iter().enumerate() {
                if seconds <= *le {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
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
    let res = next.run(req).await;
    st.metrics.observe(
        &method,
        &route,
        res.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    res
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `GET /metrics`.
pub async fn scrape(State(st): State<AppState>) -> Response {
    let mut out = String::new();
    out.push_str("# HELP escrow_http_requests_total HTTP requests by method, route and status (commands by type and outcome).\n");
    out.push_str("# TYPE escrow_http_requests_total counter\n");
    if let Ok(m) = st.metrics.requests.lock() {
        for ((method, route, status), n) in m.iter() {
            let _ = writeln!(out, "escrow_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}", escape(route));
        }
    }
    out.push_str(
        "# HELP escrow_http_request_duration_seconds Request latency by method and route.\n",
    );
    out.push_str("# TYPE escrow_http_request_duration_seconds histogram\n");
    if let Ok(m) = st.metrics.latency.lock() {
        for ((method, route), h) in m.iter() {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "escrow_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "escrow_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "escrow_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "escrow_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
    // Lags, read from Postgres at scrape time: how far the relay and the projections are
    // behind the newest event, in positions and in seconds.
    let lag: Result<(i64, i64, i64, f64, f64), sqlx::Error> = sqlx::query_as(
        "SELECT coalesce((SELECT max(position) FROM events), 0), \
                coalesce((SELECT max(position) FROM checkpoints WHERE name LIKE 'relay:%'), 0), \
                coalesce((SELECT max(position) FROM projection_checkpoints), 0), \
                coalesce(extract(epoch FROM now() - (SELECT recorded_at FROM events WHERE position = \
                    (SELECT min(position) FROM events WHERE position > coalesce((SELECT max(position) FROM checkpoints WHERE name LIKE 'relay:%'), 0))))::float8, 0), \
                coalesce(extract(epoch FROM now() - (SELECT recorded_at FROM events WHERE position = \
                    (SELECT min(position) FROM events WHERE position > coalesce((SELECT max(position) FROM projection_checkpoints), 0))))::float8, 0)",
    )
    .fetch_one(&st.pool)
    .await;
    if let Ok((head, relayed, projected, relay_secs, projection_secs)) = lag {
        let gauges = [
            (
                "escrow_event_store_head_position",
                "Position of the newest event.",
                head as f64,
            ),
            (
                "escrow_relay_lag_positions",
                "Events not yet published to JetStream.",
                (head - relayed).max(0) as f64,
            ),
            (
                "escrow_relay_lag_seconds",
                "Age of the oldest unpublished event.",
                relay_secs.max(0.0),
            ),
            (
                "escrow_projection_lag_positions",
                "Events not yet in the read models (projection read_models).",
                (head - projected).max(0) as f64,
            ),
            (
                "escrow_projection_lag_seconds",
                "Age of the oldest event not yet in the read models.",
                projection_secs.max(0.0),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    }
    let pool_size = st.pool.size();
    let idle = st.pool.num_idle() as u32;
    let _ = writeln!(out, "# HELP escrow_db_pool_connections Database connections of this process.\n# TYPE escrow_db_pool_connections gauge");
    let _ = writeln!(out, "escrow_db_pool_connections{{state=\"idle\"}} {idle}");
    let _ = writeln!(
        out,
        "escrow_db_pool_connections{{state=\"used\"}} {}",
        pool_size.saturating_sub(idle)
    );
    let _ = writeln!(out, "# HELP escrow_websocket_connections Open WebSocket connections of this process.\n# TYPE escrow_websocket_connections gauge");
    let _ = writeln!(out, "escrow_websocket_connections {}", st.hub.connections());
    let _ = writeln!(out, "# HELP escrow_jetstream_publish_errors_total Failed JetStream publish rounds of this process's relay.\n# TYPE escrow_jetstream_publish_errors_total counter");
    let _ = writeln!(
        out,
        "escrow_jetstream_publish_errors_total {}",
        escrow_nats::publish_errors()
    );
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
