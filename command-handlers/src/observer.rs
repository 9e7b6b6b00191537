//! What the ledger reports as it works; metrics and read freshness live outside this crate.

/// Told about every executed command and every append.
pub trait Observer: Send + Sync {
    /// A command finished: its name, its outcome (`ok`, `replayed`, a domain error code,
    /// `busy`, `idempotency_mismatch`, `email_taken`, `error`), how long it took in seconds,
    /// and how many times it was decided.
    fn command(&self, command: &'static str, outcome: &str, seconds: f64, attempts: u32);
    /// One append transaction committed: how many commands, streams and events it held.
    fn append(&self, commands: usize, streams: usize, events: usize);
    /// The events of a transaction that just committed: `(position, stream, version)`.
    fn committed(&self, _events: &[(i64, &str, i64)]) {}
}
