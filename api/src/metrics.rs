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
/// Upper bounds of the append-size histogram buckets (commands or events per transaction).
const SIZE_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, le) in self.bounds.iter().enumerate() {
            if v <= *le {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    /// Writes the `_bucket`, `_sum` and `_count` series of `name` with `labels`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, le) in self.bounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// Request and command counters and histograms, by route, command and outcome.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    commands: Mutex<BTreeMap<(&'static str, String), u64>>,
    command_latency: Mutex<BTreeMap<&'static str, Histogram>>,
    command_attempts: Mutex<Histogram>,
    append_commands: Mutex<Histogram>,
    append_events: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            latency: Mutex::default(),
            commands: Mutex::default(),
            command_latency: Mutex::default(),
            command_attempts: Mutex::new(Histogram::new(&SIZE_BUCKETS)),
            append_commands: Mutex::new(Histogram::new(&SIZE_BUCKETS)),
            append_events: Mutex::new(Histogram::new(&SIZE_BUCKETS)),
        }
    }
}

impl Metrics {
    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
        }
        if let Ok(mut m) = self.latency.lock() {
            m.entry((method.to_owned(), route.to_owned()))
                .or_insert_with(|| Histogram::new(&BUCKETS))
                .observe(seconds);
        }
    }
}

impl command_handlers::Observer for Metrics {
    fn command(&self, command: &'static str, outcome: &str, seconds: f64, attempts: u32) {
        if let Ok(mut m) = self.commands.lock() {
            *m.entry((command, outcome.to_owned())).or_default() += 1;
        }
        if let Ok(mut m) = self.command_latency.lock() {
            m.entry(command)
                .or_insert_with(|| Histogram::new(&BUCKETS))
                .observe(seconds);
        }
        if let Ok(mut h) = self.command_attempts.lock() {
            h.observe(f64::from(attempts));
        }
    }

    fn append(&self, commands: usize, _streams: usize, events: usize) {
        if let Ok(mut h) = self.append_commands.lock() {
            h.observe(commands as f64);
        }
        if let Ok(mut h) = self.append_events.lock() {
            h.observe(events as f64);
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
    tracing::Span::current().record("route", route.as_str());
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
            h.render(&mut out, "escrow_http_request_duration_seconds", &labels);
        }
    }
    out.push_str("# HELP escrow_commands_total Commands executed, by command and outcome (ok, replayed, a domain error code, busy, error).\n");
    out.push_str("# TYPE escrow_commands_total counter\n");
    if let Ok(m) = st.metrics.commands.lock() {
        for ((command, outcome), n) in m.iter() {
            let _ = writeln!(
                out,
                "escrow_commands_total{{command=\"{command}\",outcome=\"{}\"}} {n}",
                escape(outcome)
            );
        }
    }
    out.push_str("# HELP escrow_command_duration_seconds Command latency (decide, append, commit), by command.\n");
    out.push_str("# TYPE escrow_command_duration_seconds histogram\n");
    if let Ok(m) = st.metrics.command_latency.lock() {
        for (command, h) in m.iter() {
            h.render(
                &mut out,
                "escrow_command_duration_seconds",
                &format!("command=\"{command}\""),
            );
        }
    }
    for (name, help, h) in [
        (
            "escrow_command_attempts",
            "Times a command was decided (1 + retries after version conflicts).",
            &st.metrics.command_attempts,
        ),
        (
            "escrow_append_batch_commands",
            "Commands per append transaction.",
            &st.metrics.append_commands,
        ),
        (
            "escrow_append_batch_events",
            "Events per append transaction.",
            &st.metrics.append_events,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        if let Ok(h) = h.lock() {
            h.render(&mut out, name, "");
        }
    }
    // Lags, read from Postgres at scrape time: how far the relay and the projections are
    // behind the newest event, in positions and in seconds.
    let lag: Result<(i64, i64, f64), sqlx::Error> = sqlx::query_as(
        "SELECT coalesce((SELECT max(position) FROM events), 0), \
                coalesce((SELECT max(position) FROM checkpoints WHERE name LIKE 'relay:%'), 0), \
                coalesce(extract(epoch FROM now() - (SELECT recorded_at FROM events WHERE position = \
                    (SELECT min(position) FROM events WHERE position > coalesce((SELECT max(position) FROM checkpoints WHERE name LIKE 'relay:%'), 0))))::float8, 0)",
    )
    .fetch_one(&st.pool)
    .await;
    if let Ok((head, relayed, relay_secs)) = lag {
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
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    }
    // Per projection: events not yet applied, and the age of the oldest of them.
    let projections: Result<Vec<(String, i64, f64)>, sqlx::Error> = sqlx::query_as(
        "SELECT p.projection, greatest(h.head - p.position, 0), \
                coalesce(extract(epoch FROM now() - (SELECT recorded_at FROM events WHERE position = \
                    (SELECT min(position) FROM events WHERE position > p.position)))::float8, 0) \
         FROM projection_checkpoints p, (SELECT coalesce(max(position), 0) AS head FROM events) h \
         ORDER BY p.projection",
    )
    .fetch_all(&st.pool)
    .await;
    if let Ok(rows) = projections {
        out.push_str("# HELP escrow_projection_lag_positions Events not yet applied, by projection.\n# TYPE escrow_projection_lag_positions gauge\n");
        for (name, positions, _) in &rows {
            let _ = writeln!(
                out,
                "escrow_projection_lag_positions{{projection=\"{}\"}} {positions}",
                escape(name)
            );
        }
        out.push_str("# HELP escrow_projection_lag_seconds Age of the oldest event not yet applied, by projection.\n# TYPE escrow_projection_lag_seconds gauge\n");
        for (name, _, secs) in &rows {
            let _ = writeln!(
                out,
                "escrow_projection_lag_seconds{{projection=\"{}\"}} {}",
                escape(name),
                secs.max(0.0)
            );
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
    let _ = writeln!(out, "# HELP escrow_read_wait_statements_total Statements run by reads waiting for minPosition (the worker's batches answer most without one).\n# TYPE escrow_read_wait_statements_total counter");
    let _ = writeln!(
        out,
        "escrow_read_wait_statements_total {}",
        st.freshness.statements()
    );
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
