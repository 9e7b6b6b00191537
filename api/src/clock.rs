//! Where "now" comes from. The server reads time only through a [`Clock`], so tests can
//! move time forward (an inspection window of days passes in a millisecond).

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use domain::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;

    /// Now, as the domain's timestamp.
    fn timestamp(&self) -> Timestamp {
        Timestamp(self.now().timestamp_millis())
    }
}

/// The real time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The real time plus an offset that tests can advance.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// Moves this clock forward.
    pub fn advance(&self, by: Duration) {
        if let Ok(mut o) = self.offset.lock() {
            *o += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let offset = self.offset.lock().map(|o| *o).unwrap_or_default();
        Utc::now() + offset
    }
}

/// Converts a domain timestamp to a UTC time.
pub fn to_utc(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.0).unwrap_or_default()
}
