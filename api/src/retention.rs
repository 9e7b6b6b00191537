//! Forgetting what need not be kept forever: idempotency keys older than
//! `IDEMPOTENCY_RETENTION_HOURS`, and shared rate-limit budgets that are full again. Every
//! process may prune; the store skips rows another pruner holds, and each statement is one
//! short transaction.

use std::time::Duration;

use event_store::EventStore;
use tokio::sync::watch;

/// How often old keys are looked for. A key lives at most its retention plus this.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Keys deleted per statement.
const KEYS_PER_STATEMENT: i64 = 5_000;

/// Prunes, now and every [`PRUNE_EVERY`] until shutdown, idempotency keys older than
/// `retention` (none for a retention of zero: keep forever) and full rate-limit budgets.
pub async fn prune(store: EventStore, retention: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        if !retention.is_zero() {
            match store
                .prune_idempotency_keys(retention, KEYS_PER_STATEMENT)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(keys = n, "pruned expired idempotency keys"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not prune idempotency keys; will retry")
                }
            }
        }
        // Shared rate-limit budgets that are full again need no row.
        if let Err(e) = store.prune_budgets().await {
            tracing::warn!(error = %e, "could not prune rate-limit budgets; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
