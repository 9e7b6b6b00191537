//! Whether this machine's CPU is contended, from Linux's pressure stall information
//! (`/proc/pressure/cpu`, or a cgroup's `cpu.pressure` in a container): the share of time
//! some task was ready to run and waited for a CPU. Deliveries are background work: while
//! commands keep the CPU busy, the deliverer sends at its lower busy rate and leaves the
//! ledger its CPU; the backlog waits in JetStream and goes at the full rate once the load
//! passes.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the file is read at most.
const SAMPLE: Duration = Duration::from_millis(500);
/// Busy from this share of time stalled (smoothed) …
const BUSY_FROM: f64 = 0.20;
/// … until it falls to this one: between the two the state holds, so that a share
/// hovering near one threshold does not flip the rate back and forth.
const CALM_BELOW: f64 = 0.10;

/// A lazily sampled view of the CPU's pressure, shared by every endpoint's task.
#[derive(Debug)]
pub struct CpuPressure {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the file was last read, and its `some` total then (microseconds stalled).
    last: Option<(Instant, u64)>,
    /// The share of time stalled, smoothed over the last few samples.
    stalled: f64,
    busy: bool,
    unreadable_logged: bool,
}

impl CpuPressure {
    /// Reads `path` (no path: never busy).
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            state: Mutex::default(),
        }
    }

    /// Whether the CPU is contended now. Reads the file when the last reading is older
    /// than half a second; a file that cannot be read means not busy.
    pub fn busy(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let now = Instant::now();
        if s.last.is_some_and(|(t, _)| now.duration_since(t) < SAMPLE) {
            return s.busy;
        }
        match std::fs::read_to_string(path)
            .ok()
            .and_then(|t| some_total(&t))
        {
            Some(total) => {
                if let Some((t0, total0)) = s.last {
                    let elapsed = now.duration_since(t0).as_micros().max(1) as f64;
                    let share = (total.saturating_sub(total0) as f64 / elapsed).min(1.0);
                    s.stalled = (s.stalled + share) / 2.0;
                    if s.stalled >= BUSY_FROM {
                        s.busy = true;
                    } else if s.stalled < CALM_BELOW {
                        s.busy = false;
                    }
                }
                s.last = Some((now, total));
            }
            None => {
                if !s.unreadable_logged {
                    s.unreadable_logged = true;
                    tracing::info!(path = %path.display(), "no CPU pressure readable here; webhook deliveries keep their full rate under load");
                }
                s.last = Some((now, 0));
                s.busy = false;
            }
        }
        s.busy
    }
}

/// The `total=` of the `some` line: microseconds some task waited for a CPU, since boot.
fn some_total(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_some_total_is_read() {
        let text = "some avg10=30.23 avg60=31.53 avg300=44.27 total=490565013\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(some_total(text), Some(490_565_013));
        assert_eq!(some_total("full total=3\n"), None);
        assert_eq!(some_total("some avg10=1 total=x\n"), None);
    }

    #[test]
    fn busy_while_stalled_and_calm_again_once_it_stops() {
        let file = std::env::temp_dir().join(format!("pressure-{}", uuid::Uuid::new_v4()));
        let write = |total: u64| {
            std::fs::write(
                &file,
                format!("some avg10=0 avg60=0 avg300=0 total={total}\n"),
            )
            .expect("write")
        };
        let p = CpuPressure::new(Some(file.clone()));
        let mut total = 1_000;
        write(total);
        assert!(!p.busy(), "one reading says nothing yet");
        for _ in 0..2 {
            std::thread::sleep(SAMPLE);
            // Stalled for 80 % of the time since the last reading.
            total += 400_000;
            write(total);
        }
        assert!(p.busy(), "stalled 80 % of the time: busy");
        for _ in 0..6 {
            std::thread::sleep(SAMPLE);
            p.busy();
        }
        assert!(!p.busy(), "no stall since: calm");
        assert!(!CpuPressure::new(None).busy());
        assert!(!CpuPressure::new(Some("/nonexistent/pressure".into())).busy());
        std::fs::remove_file(&file).ok();
    }
}
