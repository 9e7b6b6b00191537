//! What a run measured and how it is told: the clients' observations ([`Stats`]),
//! percentiles and the timeline, the server's peak memory, and the one-transaction-per-
//! transfer ceiling the ratio is taken against.

use std::collections::BTreeMap;

use anyhow::{bail, Context};

/// What the clients saw.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Latency of each command, in microseconds.
    pub(crate) commands: Vec<u64>,
    /// When each command of `commands` was answered, in seconds into the run.
    pub(crate) answered_at: Vec<f32>,
    /// Latency of each query, in microseconds.
    pub(crate) queries: Vec<u64>,
    /// Non-2xx answers by "status code".
    pub(crate) refused: BTreeMap<String, u64>,
    /// Requests that got no HTTP answer.
    pub(crate) transport_errors: u64,
    /// (seconds into the run, lag in microseconds).
    pub(crate) lags: Vec<(f64, u64)>,
    /// Highest position a command answered with.
    pub(crate) max_position: i64,
    /// When the run started, in seconds since the Unix epoch.
    pub(crate) started_unix: u64,
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Per interval of `every` seconds: commands/s, latency p50 / p99 / max and lag p99 (ms).
pub(crate) fn print_timeline(s: &Stats, every: f64, duration: f64) {
    let slots = (duration / every).ceil().max(1.0) as usize;
    let slot = |t: f64| ((t / every) as usize).min(slots - 1);
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); slots];
    for (at, micros) in s.answered_at.iter().zip(&s.commands) {
        lat[slot(f64::from(*at))].push(*micros);
    }
    let mut lag: Vec<Vec<u64>> = vec![Vec::new(); slots];
    for (at, micros) in &s.lags {
        lag[slot(*at)].push(*micros);
    }
    eprintln!(
        "timeline, per {every} s from the start of the run (Unix time {}): commands/s, \
         latency p50 / p99 / max ms, projection lag p99 ms",
        s.started_unix
    );
    eprintln!("      s  commands/s    p50    p99      max  lag p99");
    for (i, (l, g)) in lat.iter_mut().zip(lag.iter_mut()).enumerate() {
        l.sort_unstable();
        g.sort_unstable();
        eprintln!(
            "{:>7.0} {:>11.0} {:>6.1} {:>6.1} {:>8.1} {:>8.1}",
            i as f64 * every,
            l.len() as f64 / every,
            percentile(l, 0.50),
            percentile(l, 0.99),
            percentile(l, 1.0),
            percentile(g, 0.99)
        );
    }
}

/// Peak resident set size of a process, in MiB (VmHWM), if it can be read.
pub(crate) fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The ceiling the ratio is taken against: one measurement, or the mean of one before and
/// one after the load (`sides`).
pub(crate) struct Ceiling {
    pub(crate) tps: f64,
    pub(crate) sides: Option<(f64, f64)>,
}

/// Runs `--ceiling-cmd` (round `before` or `after`) and reads the TPS from its last line of
/// output; its stderr passes through.
pub(crate) fn measure_ceiling(cmd: &str, round: &str) -> anyhow::Result<f64> {
    eprintln!("ceiling ({round} the load): {cmd}");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("CEILING_ROUND", round)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running the ceiling command {cmd:?}"))?;
    if !out.status.success() {
        bail!("the ceiling command failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("").trim();
    match last.parse::<f64>() {
        Ok(tps) if tps.is_finite() && tps > 0.0 => Ok(tps),
        _ => bail!("the ceiling command's last line is not a positive TPS: {last:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_is_the_last_line_of_its_command() -> anyhow::Result<()> {
        let tps = measure_ceiling("echo 'tps = 1.0 (progress)'; echo 2034.5", "before")?;
        assert!((tps - 2034.5).abs() < 1e-9);
        // The round is passed in, so one command can use a database per round.
        let tps = measure_ceiling("[ \"$CEILING_ROUND\" = after ] && echo 7", "after")?;
        assert!((tps - 7.0).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn a_failed_or_meaningless_ceiling_is_refused() {
        for cmd in [
            "echo 2000; exit 3",
            "echo before",
            "echo 0",
            "echo -5",
            "echo inf",
            "true",
        ] {
            assert!(measure_ceiling(cmd, "before").is_err(), "{cmd}");
        }
    }
}
