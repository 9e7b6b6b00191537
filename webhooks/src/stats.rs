//! Per-endpoint counters of this process's deliveries, read by `/metrics` at scrape time.

use std::collections::BTreeMap;
use std::sync::Mutex;

use uuid::Uuid;

/// What one endpoint's deliveries did in this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EndpointStats {
    /// Deliveries a 2xx answered.
    pub succeeded: u64,
    /// Attempts that failed (each is retried).
    pub failed_attempts: u64,
    /// Deliveries that failed for longer than the maximum age.
    pub failed: u64,
    /// Attempts in all.
    pub attempts: u64,
    /// Seconds from the newest delivered event's recording to its 2xx.
    pub lag_seconds: f64,
    /// Deliveries waiting at the last look (at most one send batch is counted).
    pub pending: u64,
    /// Whether the CPU was contended at the last look, so that it was sent to at the
    /// busy rate.
    pub slowed_for_load: bool,
}

static STATS: Mutex<BTreeMap<Uuid, EndpointStats>> = Mutex::new(BTreeMap::new());

fn with(id: Uuid, f: impl FnOnce(&mut EndpointStats)) {
    if let Ok(mut m) = STATS.lock() {
        f(m.entry(id).or_default());
    }
}

pub(crate) fn delivered(id: Uuid, lag: chrono::Duration) {
    with(id, |s| {
        s.succeeded += 1;
        s.attempts += 1;
        s.lag_seconds = lag.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
    });
}

pub(crate) fn attempt_failed(id: Uuid) {
    with(id, |s| {
        s.failed_attempts += 1;
        s.attempts += 1;
    });
}

pub(crate) fn failed(id: Uuid) {
    with(id, |s| s.failed += 1);
}

pub(crate) fn pending(id: Uuid, n: usize) {
    with(id, |s| s.pending = n as u64);
}

/// Every endpoint this process delivered to, with its counters.
pub fn stats() -> Vec<(Uuid, EndpointStats)> {
    STATS
        .lock()
        .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
        .unwrap_or_default()
}

pub(crate) fn slowed(id: Uuid, busy: bool) {
    with(id, |s| s.slowed_for_load = busy);
}
