//! The Postgres event store: atomic multi-stream appends guarded by expected versions,
//! stream reads, a commit-ordered gap-free global feed, checkpoints, idempotency records,
//! per-stream hash chains, and leases for single-active workers.
//!
//! This crate knows SQL and nothing about the domain: events are opaque JSON with a type
//! name and a schema version.

mod append;
mod batch;
mod budgets;
mod feed;
mod hash;
mod idempotency;
mod lease;
mod reads;
mod restore;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

pub use append::{append, append_after};
pub use batch::{read_heads, write_batch, BatchKey, BatchOutcome, BatchWrite};
pub use feed::{FeedCursor, FeedData, FeedEvent};
pub use hash::{canonical_json, event_hash, verify_chain, ChainBreak, ChainCheck, GENESIS_HASH};
pub use idempotency::{IdempotencyRecord, IdempotencyRow, StoredAnswer};
pub use lease::Lease;
pub use reads::{AuditFilter, Lag};
pub use restore::AheadOfCluster;

/// The embedded schema migrations (the repository's `migrations/` folder).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A transaction on the store's database.
pub type Tx = sqlx::Transaction<'static, Postgres>;

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Globally unique id; also the JetStream `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// Type name, such as `FundsDeposited`.
    pub event_type: String,
    /// Version of the data's schema for this type.
    pub schema_version: i32,
    /// The event's fields.
    pub data: Value,
    /// Actor, correlation id, causation id, request id, idempotency key.
    pub metadata: Value,
}

/// Events for one stream, appended only if the stream is at `expected_version`
/// (0: the stream must not exist).
#[derive(Debug, Clone)]
pub struct StreamAppend {
    /// The stream.
    pub stream_id: String,
    /// The version the writer's decision was based on.
    pub expected_version: i64,
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RecordedEvent {
    /// Global position.
    pub position: i64,
    /// Id of the transaction that inserted it (feed ordering key).
    pub tx_id: i64,
    /// The event id.
    pub event_id: Uuid,
    /// The stream.
    pub stream_id: String,
    /// 1-based version within the stream.
    pub version: i64,
    /// Type name.
    pub event_type: String,
    /// Schema version of `data`.
    pub schema_version: i32,
    /// The event's fields.
    pub data: Value,
    /// Who, why, on behalf of which request.
    pub metadata: Value,
    /// When it was appended (microsecond precision).
    pub recorded_at: DateTime<Utc>,
    /// Hash of the stream's previous event ([`GENESIS_HASH`] for version 1).
    pub prev_hash: Vec<u8>,
    /// This event's chained hash.
    pub hash: Vec<u8>,
}

impl RecordedEvent {
    /// The feed cursor just after this event.
    pub fn cursor(&self) -> FeedCursor {
        FeedCursor {
            tx_id: self.tx_id,
            position: self.position,
        }
    }
}

pub(crate) const EVENT_COLUMNS: &str =
    "position, tx_id, event_id, stream_id, version, event_type, \
     schema_version, data, metadata, recorded_at, prev_hash, hash";

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to this stream since the caller read it.
    #[error("stream {stream_id} was modified concurrently")]
    Conflict {
        /// The stream whose expected version no longer holds.
        stream_id: String,
    },
    /// A unique constraint other than the stream version was violated.
    #[error("unique constraint {constraint} violated")]
    UniqueViolation {
        /// The constraint's name, such as `credentials_email_key`.
        constraint: String,
    },
    /// Anything else from the database (connection lost, timeout, …).
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.code().as_deref() == Some("23505") {
                let constraint = db.constraint().unwrap_or_default().to_owned();
                if constraint == "events_stream_version_key" {
                    return StoreError::Conflict {
                        stream_id: String::new(),
                    };
                }
                return StoreError::UniqueViolation { constraint };
            }
        }
        StoreError::Database(e)
    }
}

impl StoreError {
    /// Whether retrying later can succeed: a lost connection, a pool timeout, a server
    /// shutting down or out of resources (SQLSTATE classes 08, 53, 57), a serialization
    /// failure or a deadlock. Anything else is a bug or a broken schema.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::Io(_)
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            StoreError::Database(sqlx::Error::Database(db)) => db.code().is_some_and(|c| {
                c.starts_with("08")
                    || c.starts_with("53")
                    || c.starts_with("57")
                    || c == "40001"
                    || c == "40P01"
            }),
            _ => false,
        }
    }

    /// Whether an idempotency key was stored by another commit between the check and the
    /// insert: nothing was written, and the key now holds the other commit's answer.
    pub fn is_key_taken(&self) -> bool {
        matches!(self, StoreError::UniqueViolation { constraint } if constraint == "idempotency_keys_pkey")
    }

    /// Whether this is a race with another writer (version conflict, deadlock,
    /// serialization failure): decide again from fresh state.
    pub fn is_race(&self) -> bool {
        match self {
            StoreError::Conflict { .. } => true,
            StoreError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40P01") | Some("40001"))
            }
            _ => false,
        }
    }
}

/// Connection settings for the store's pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Upper bound on open connections per process.
    pub max_connections: u32,
    /// How long to wait for a free connection before failing a request.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            // Postgres' default max_connections is 100; several processes must fit.
            max_connections: 20,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A pooled connection idle at least this long is pinged before it is handed out.
const IDLE_PING_AFTER: Duration = Duration::from_secs(1);

/// Opens a pool. Every session gets `idle_in_transaction_session_timeout`, because one
/// transaction left open anywhere holds back every feed reader (see DESIGN §9).
pub async fn connect(url: &str, settings: &PoolSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.options([
        ("idle_in_transaction_session_timeout", "10s"),
        ("lock_timeout", "5s"),
    ]);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // sqlx pings every connection it hands out: a round trip per acquire, paid by every
        // statement under load. Only connections idle
        // long enough to have been cut (a Postgres restart) are checked; a busy one that
        // broke fails its statement, which callers treat as transient.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_PING_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
}

/// The event store over a Postgres pool.
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
}

impl EventStore {
    /// Wraps a pool whose database has been migrated with [`MIGRATOR`].
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts a transaction for an append (plus any side writes that must commit with it).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// The newest version of each of `streams` that has events (an empty stream is absent).
    pub async fn stream_versions(
        &self,
        streams: &[&str],
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let heads = crate::batch::read_heads(&mut conn, streams).await?;
        Ok(heads.into_iter().map(|(s, (v, _))| (s, v)).collect())
    }

    /// Reads a stream's events with a version above `after_version`, in order.
    pub async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version"
        );
        Ok(sqlx::query_as::<_, RecordedEvent>(&sql)
            .bind(stream_id)
            .bind(after_version)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Reads the next events of the global feed after `after`, in commit-safe order.
    pub async fn read_feed(
        &self,
        after: FeedCursor,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        feed::read(&self.pool, after, limit).await
    }

    /// [`read_feed`](Self::read_feed) as a rebuild of read models needs it (see
    /// [`FeedData`]).
    pub async fn read_feed_data(
        &self,
        after: FeedCursor,
        limit: i64,
    ) -> Result<Vec<FeedData>, StoreError> {
        feed::read_data(&self.pool, after, limit).await
    }

    /// [`read_feed`](Self::read_feed) on a connection of the caller's (a lease's, say),
    /// with `data` and `metadata` as JSON text.
    pub async fn read_feed_text_on(
        conn: &mut PgConnection,
        after: FeedCursor,
        limit: i64,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        feed::read_text(conn, after, limit).await
    }

    /// The highest position whose event is visible and below the feed's safe horizon.
    pub async fn head_position(&self) -> Result<i64, StoreError> {
        let (p,): (Option<i64>,) = sqlx::query_as("SELECT max(position) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(p.unwrap_or(0))
    }

    /// Loads a named feed checkpoint (the start of the feed if none is stored).
    pub async fn load_checkpoint(&self, name: &str) -> Result<FeedCursor, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT tx_id, position FROM checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(
            row.map_or(FeedCursor::START, |(tx_id, position)| FeedCursor {
                tx_id,
                position,
            }),
        )
    }

    /// Stores a named feed checkpoint.
    pub async fn save_checkpoint(&self, name: &str, cursor: FeedCursor) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::save_checkpoint_on(&mut conn, name, cursor).await
    }

    /// [`save_checkpoint`](Self::save_checkpoint) on a connection of the caller's.
    pub async fn save_checkpoint_on(
        conn: &mut PgConnection,
        name: &str,
        cursor: FeedCursor,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkpoints (name, tx_id, position) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET tx_id = EXCLUDED.tx_id, position = EXCLUDED.position, updated_at = now()",
        )
        .bind(name)
        .bind(cursor.tx_id)
        .bind(cursor.position)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The stream and version of the event at `position`, if it is committed.
    pub async fn locate(&self, position: i64) -> Result<Option<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT stream_id, version FROM events WHERE position = $1")
                .bind(position)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
