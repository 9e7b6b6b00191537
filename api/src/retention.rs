//! Forgetting what need not be kept forever: idempotency keys older than
//! `IDEMPOTENCY_RETENTION_HOURS`. Every process may prune; the store skips rows another
//! pruner holds, and each statement is one short transaction.

use std::time::Duration;

use event_store::EventStore;
use tokio::sync::watch;

/// How often old keys are looked for. A key lives at most its retention plus this.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Keys deleted per statement.
const KEYS_PER_STATEMENT: i64 = 5_000;

/// Prunes idempotency keys older than `retention` now and every [`PRUNE_EVERY`], until
/// shutdown. Returns at once for a retention of zero (keep forever).
pub async fn prune_idempotency_keys(
    store: EventStore,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    if retention.is_zero() {
        return;
    }
    loop {
        match store
            .prune_idempotency_keys(retention, KEYS_PER_STATEMENT)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "pruned expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "could not prune idempotency keys; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
