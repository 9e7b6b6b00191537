//! A store restored from a logical dump into another PostgreSQL cluster keeps the
//! transaction ids of the cluster its events were written in. The feed reads only below
//! the current cluster's oldest running transaction (`feed.rs`), so ids from a cluster
//! that had run more transactions hide the restored events from every feed reader, and
//! once the new cluster's ids pass them they would surface after newer events, out of
//! order. [`EventStore::restored_ahead`] detects that; [`EventStore::renumber_restored`]
//! repairs it.

use crate::{EventStore, StoreError};

/// Stored transaction ids ahead of the cluster's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AheadOfCluster {
    /// The highest transaction id stored with an event.
    pub stored: i64,
    /// The next transaction id this cluster will hand out.
    pub cluster_next: i64,
}

impl EventStore {
    /// Whether events carry transaction ids this cluster has not handed out yet (a store
    /// restored from a dump of a busier cluster). Two index lookups.
    pub async fn restored_ahead(&self) -> Result<Option<AheadOfCluster>, StoreError> {
        let (stored, cluster_next): (Option<i64>, i64) = sqlx::query_as(
            "SELECT (SELECT tx_id FROM events ORDER BY tx_id DESC LIMIT 1), \
                    pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(stored
            .filter(|s| *s >= cluster_next)
            .map(|stored| AheadOfCluster {
                stored,
                cluster_next,
            }))
    }

    /// Forgets every feed checkpoint: the relay then publishes every event again, from
    /// the first (to a fresh JetStream stream after a restore).
    pub async fn forget_checkpoints(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM checkpoints")
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Makes a restored store's feed readable again: every stored event gets the lowest
    /// transaction id, so the feed orders them by position, and every feed checkpoint is
    /// forgotten (the relay then publishes each event again, to a fresh JetStream stream).
    ///
    /// Ordering restored events by position keeps every stream's order, the only order
    /// the ledger's readers rely on: a stream's next version is inserted only after its
    /// previous one committed, so it always has the higher position. Events written after
    /// the repair carry this cluster's ids, above every restored one. Returns how many
    /// events were renumbered. Run it with no server writing (it takes the table's
    /// exclusive lock for its one transaction).
    pub async fn renumber_restored(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let renumbered = sqlx::query("UPDATE events SET tx_id = 1 WHERE tx_id <> 1")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM checkpoints")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(renumbered)
    }
}
