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
    read_columns(db, EVENT_COLUMNS, after, limit).await
}

/// The feed after `after` (see [`read`]), `columns` of each event as `T`.
async fn read_columns<T>(
    db: impl PgExecutor<'_>,
    columns: &str,
    after: FeedCursor,
    limit: i64,
) -> Result<Vec<T>, StoreError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let sql = format!("SELECT {columns} FROM events {AFTER_CURSOR}");
    Ok(sqlx::query_as::<_, T>(&sql)
        .bind(after.tx_id)
        .bind(after.position)
        .bind(limit)
        .fetch_all(db)
        .await?)
}

/// The columns of a [`FeedData`], and with `metadata` those of a [`FeedEvent`].
const DATA_COLUMNS: &str = "position, tx_id, event_id, stream_id, version, event_type, \
                            schema_version, data::text AS data, recorded_at";

/// The feed's condition and order: after `($1, $2)`, below the oldest running
/// transaction, at most `$3` rows.
const AFTER_CURSOR: &str = "WHERE (tx_id, position) > ($1, $2) \
       AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
     ORDER BY tx_id, position LIMIT $3";

/// An event of the feed as the relay forwards it: `data` and `metadata` as compact JSON
/// text, never parsed (no hash columns: the relay does not check chains).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FeedEvent {
    /// Everything but the metadata (`data` compacted).
    #[sqlx(flatten)]
    pub event: FeedData,
    /// The metadata, as compact JSON.
    pub metadata: String,
}

/// Like [`read`], with the JSON columns as text: forwarding an event then costs no parse
/// into a tree and no serialisation back (they were a third of the relay's CPU).
pub(crate) async fn read_text(
    db: impl PgExecutor<'_>,
    after: FeedCursor,
    limit: i64,
) -> Result<Vec<FeedEvent>, StoreError> {
    let columns = format!("{DATA_COLUMNS}, metadata::text AS metadata");
    let mut rows: Vec<FeedEvent> = read_columns(db, &columns, after, limit).await?;
    for r in &mut rows {
        r.event.data = compact(&r.event.data);
        r.metadata = compact(&r.metadata);
    }
    Ok(rows)
}

/// An event of the feed without its metadata and hashes, as a rebuild of read models
/// reads it (`data` as JSON text, to be decoded straight into an event), and the part of
/// a [`FeedEvent`] other than the metadata.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FeedData {
    /// Global position.
    pub position: i64,
    /// Id of the inserting transaction.
    pub tx_id: i64,
    /// The event id.
    pub event_id: uuid::Uuid,
    /// The stream.
    pub stream_id: String,
    /// 1-based version within the stream.
    pub version: i64,
    /// Type name.
    pub event_type: String,
    /// Schema version of `data`.
    pub schema_version: i32,
    /// The event's fields, as JSON text.
    pub data: String,
    /// When it was appended.
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

impl FeedData {
    /// The feed cursor just after this event.
    pub fn cursor(&self) -> FeedCursor {
        FeedCursor {
            tx_id: self.tx_id,
            position: self.position,
        }
    }
}

/// Like [`read`], as [`FeedData`].
pub(crate) async fn read_data(
    db: impl PgExecutor<'_>,
    after: FeedCursor,
    limit: i64,
) -> Result<Vec<FeedData>, StoreError> {
    read_columns(db, DATA_COLUMNS, after, limit).await
}

/// Drops the whitespace Postgres puts between JSONB tokens (`{"a": 1, "b": 2}`); whatever
/// is inside a string (escapes included) is kept as it is. Works on bytes: every byte it
/// looks at (quote, backslash, whitespace) is ASCII, and no byte of a multi-byte UTF-8
/// sequence is, so the text stays valid UTF-8 byte for byte.
fn compact(json: &str) -> String {
    let bytes = json.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
            out.push(b);
            in_string = b == b'"';
        }
    }
    // Only ASCII whitespace outside strings was dropped, so this cannot fail; fall back to
    // the input rather than panic if it ever did.
    String::from_utf8(out).unwrap_or_else(|_| json.to_owned())
}

#[cfg(test)]
mod tests {
    use super::compact;

    #[test]
    fn compact_drops_whitespace_between_tokens_only() {
        let text = r#"{"a": "x y\" ,: \\", "b": [1, 2.50, {"c": null}], "d": "é ü"}"#;
        let out = compact(text);
        assert_eq!(
            out,
            r#"{"a":"x y\" ,: \\","b":[1,2.50,{"c":null}],"d":"é ü"}"#
        );
        let before: serde_json::Value = serde_json::from_str(text).expect("valid");
        let after: serde_json::Value = serde_json::from_str(&out).expect("still valid");
        assert_eq!(before, after);
    }
}
