//! The global feed in commit-safe order.

use sqlx::PgExecutor;

use crate::{RecordedEvent, StoreError, EVENT_COLUMNS};

/// A reader's place in the feed: the last `(tx_id, position)` it has consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct FeedCursor {
    /// Transaction id of the last event consumed.
    pub tx_id: i64,
    /// Position of the last event consumed.
    pub position: i64,
}

impl FeedCursor {
    /// Before the first event.
    pub const START: FeedCursor = FeedCursor {
        tx_id: 0,
        position: 0,
    };
}

/// Reads events after `after`, ordered by `(tx_id, position)`, and only from transactions
/// older than every transaction still running (`pg_snapshot_xmin`).
///
/// Why not `position > last`: positions are handed out at insert time, so a transaction
/// can hold position 10 while position 11 commits first; a reader that moved past 11 would
/// never see 10. Transaction ids below the snapshot's xmin belong to finished transactions,
/// so everything returned here is final and no later commit can slot in before it.
pub(crate) async fn read(
    db: impl PgExecutor<'_>,
    after: FeedCursor,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE (tx_id, position) > ($1, $2) \
           AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
         ORDER BY tx_id, position LIMIT $3"
    );
    Ok(sqlx::query_as::<_, RecordedEvent>(&sql)
        .bind(after.tx_id)
        .bind(after.position)
        .bind(limit)
        .fetch_all(db)
        .await?)
}
