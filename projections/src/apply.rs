//! Applying events to the read models.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::codec::decode;
use domain::Event;
use event_store::RecordedEvent;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::escrow_rows::{EscrowRows, Unholds};
use crate::platform_rows::RevenueRows;
use crate::wallet_rows::WalletRows;

/// The name under which this projection records its per-stream versions and checkpoint.
pub const PROJECTION: &str = "read_models";

/// What happened to a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Events applied now.
    pub applied: usize,
    /// Events already applied before (redeliveries): skipped.
    pub duplicates: usize,
    /// Indexes (into the batch) of events whose predecessor in their stream has not been
    /// applied yet: not applied, to be delivered again later.
    pub gaps: Vec<usize>,
}

/// Where a batch comes from, which decides how each event's place in its stream is known.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    /// Deliveries, which may repeat or run ahead: checked against the versions recorded in
    /// `projection_streams`, which the batch then brings up to date. With the events, one
    /// per envelope and in the same order, as the worker decoded them: an envelope whose
    /// event is there is not decoded again (its `data` and `metadata` are not read).
    Deliveries(Option<&'a [Option<Event>]>),
    /// The event store's feed, complete and in commit order, read by a replay that
    /// records the versions itself once it has caught up (`replay::record_versions`):
    /// each stream's first event in the batch follows what was applied before, and
    /// `projection_streams` is neither read nor written. The replay has decoded the
    /// events already, one per envelope and in the same order (the envelopes' `data` and
    /// `metadata` are not read).
    Feed(&'a [Event]),
}

/// One event as the projections take it, whether the live worker received it from
/// JetStream or replay read it from the feed: where it sits, what it is, and when it was
/// recorded. `data` holds the event's JSON when the event was not decoded already (null
/// otherwise); `metadata` is kept only for debug logging.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// The stream.
    pub stream_id: String,
    /// Its version within the stream.
    pub version: i64,
    /// Its global position.
    pub position: i64,
    /// Type name.
    pub event_type: String,
    /// Schema version of `data`.
    pub schema_version: i32,
    /// The event's fields, or null when decoded already.
    pub data: serde_json::Value,
    /// Who and why, or null.
    pub metadata: serde_json::Value,
    /// When it was appended.
    pub recorded_at: DateTime<Utc>,
}

impl From<RecordedEvent> for Incoming {
    fn from(e: RecordedEvent) -> Self {
        Incoming {
            stream_id: e.stream_id,
            version: e.version,
            position: e.position,
            event_type: e.event_type,
            schema_version: e.schema_version,
            data: e.data,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
        }
    }
}

/// Applies a batch in the caller's transaction. Events are taken in order; each is applied
/// only if it is exactly the next version of its stream. Turns `enable_seqscan` off for the
/// rest of that transaction.
pub async fn apply_batch(
    conn: &mut PgConnection,
    batch: &[Incoming],
) -> anyhow::Result<ApplyReport> {
    apply(conn, batch, Source::Deliveries(None)).await
}

/// [`apply_batch`], or for [`Source::Feed`] without reading or recording the per-stream
/// versions: an event that does not follow the one before it in the same batch is still
/// reported as a gap.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    batch: &[Incoming],
    source: Source<'_>,
) -> anyhow::Result<ApplyReport> {
    let mut report = ApplyReport::default();
    if batch.is_empty() {
        return Ok(report);
    }
    // One applier at a time per set of read models (a worker whose lease lapsed mid-batch
    // and its successor, say): the second waits here until the first commits, then reads
    // the versions it left. A transaction-level lock, released at commit.
    //
    // And every statement below looks rows up by key. Their plans are prepared once per
    // connection, and one prepared while a table was small (a fresh database) is a
    // sequential scan that stays when the table has grown; index paths do not depend on
    // statistics being current. (`set_config(.., true)` is local to the transaction.)
    sqlx::query(
        "SELECT set_config('enable_seqscan', 'off', true), \
                pg_advisory_xact_lock(hashtext('escrow.apply:' || current_schema()))",
    )
    .execute(&mut *conn)
    .await?;
    let given = match source {
        Source::Feed(events) => Some(events.len()),
        Source::Deliveries(events) => events.map(<[_]>::len),
    };
    if let Some(n) = given {
        anyhow::ensure!(
            n == batch.len(),
            "{n} decoded events for {} envelopes",
            batch.len()
        );
    }
    let mut versions: HashMap<String, i64> = match source {
        Source::Deliveries(_) => recorded_versions(conn, batch).await?,
        Source::Feed(_) => HashMap::new(),
    };
    let deliveries = matches!(source, Source::Deliveries(_));
    // The events decoded before the batch came here, by index.
    let decoded_before: Vec<Option<&Event>> = match source {
        Source::Feed(events) => events.iter().map(Some).collect(),
        Source::Deliveries(Some(events)) => events.iter().map(Option::as_ref).collect(),
        Source::Deliveries(None) => Vec::new(),
    };
    let mut touched: HashMap<String, i64> = HashMap::new();
    let mut max_position = 0i64;
    let mut deferred = WalletRows::default();
    let mut escrow = EscrowRows::load(conn, batch, &decoded_before).await?;
    let mut unholds = Unholds::new();
    let mut revenue = RevenueRows::default();

    for (i, env) in batch.iter().enumerate() {
        let current = match (versions.get(&env.stream_id), source) {
            (Some(v), _) => *v,
            (None, Source::Deliveries(_)) => 0,
            (None, Source::Feed(_)) => env.version - 1,
        };
        if env.version <= current {
            report.duplicates += 1;
            continue;
        }
        if env.version != current + 1 {
            report.gaps.push(i);
            continue;
        }
        let decoded;
        let event = match decoded_before.get(i).copied().flatten() {
            Some(event) => event,
            None => {
                decoded = decode(&env.event_type, env.schema_version, &env.data)?;
                &decoded
            }
        };
        // The command's correlation id rides in the metadata; log lines of this event's
        // projection carry it, so a request can be followed from HTTP to the read model.
        let span = tracing::debug_span!(
            "project",
            position = env.position,
            stream = %env.stream_id,
            event = %env.event_type,
            correlation_id = env.metadata.get("correlationId").and_then(|v| v.as_str()).unwrap_or(""),
        );
        // Wallet movements, contract/dispute changes and revenue movements wait for the end
        // of the batch. No event applied one by one reads what they write (balances, holds,
        // history, contract, dispute and revenue rows), balances and holds are sums, and the contract and dispute rows
        // are changed in memory in stream order: the effect is that of applying the events
        // one by one.
        let taken = deferred.take(env, event)?
            || escrow.take(env, event, &mut unholds)?
            || revenue.take(env, event);
        for (buyer, currency, amount) in unholds.drain(..) {
            deferred.unhold(env, buyer, &currency, amount);
        }
        if !taken {
            apply_one(conn, env, event).instrument(span.clone()).await?;
        }
        span.in_scope(|| tracing::debug!("applied"));
        versions.insert(env.stream_id.clone(), env.version);
        if deliveries {
            touched.insert(env.stream_id.clone(), env.version);
        }
        max_position = max_position.max(env.position);
        report.applied += 1;
    }

    deferred.flush(conn).await?;
    escrow.flush(conn).await?;
    revenue.flush(conn).await?;
    if !touched.is_empty() {
        let (ids, vs): (Vec<String>, Vec<i64>) = touched.into_iter().unzip();
        sqlx::query(
            "INSERT INTO projection_streams (projection, stream_id, version) \
             SELECT $1, s, v FROM UNNEST($2::text[], $3::bigint[]) AS u(s, v) \
             ON CONFLICT (projection, stream_id) DO UPDATE SET version = EXCLUDED.version",
        )
        .bind(PROJECTION)
        .bind(&ids)
        .bind(&vs)
        .execute(&mut *conn)
        .await?;
    }
    if report.applied > 0 {
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, position) VALUES ($1, $2) \
             ON CONFLICT (projection) DO UPDATE SET position = GREATEST(projection_checkpoints.position, EXCLUDED.position), updated_at = now()",
        )
        .bind(PROJECTION)
        .bind(max_position)
        .execute(&mut *conn)
        .await?;
    }
    Ok(report)
}

/// The versions recorded for the streams of `batch` (streams not yet seen are absent).
async fn recorded_versions(
    conn: &mut PgConnection,
    batch: &[Incoming],
) -> anyhow::Result<HashMap<String, i64>> {
    let mut streams: Vec<&str> = batch.iter().map(|e| e.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    // One index probe per stream. (`stream_id = ANY($2)` lets the planner scan every row of
    // the projection and filter whenever its plan was made while the table was small; the
    // LIMIT keeps the subquery a per-stream probe.)
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.stream_id, p.version FROM UNNEST($2::text[]) AS s(stream_id) \
         CROSS JOIN LATERAL (SELECT version FROM projection_streams \
                             WHERE projection = $1 AND stream_id = s.stream_id LIMIT 1) p",
    )
    .bind(PROJECTION)
    .bind(&streams)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

pub(crate) fn aggregate_uuid(stream_id: &str) -> anyhow::Result<Uuid> {
    let id = stream_id
        .split_once('-')
        .map(|(_, id)| id)
        .unwrap_or_default();
    Ok(Uuid::parse_str(id)?)
}

async fn apply_one(conn: &mut PgConnection, env: &Incoming, event: &Event) -> anyhow::Result<()> {
    let at = env.recorded_at;
    match event {
        Event::UserRegistered {
            user_id,
            email,
            role,
        } => {
            sqlx::query("INSERT INTO rm_users (id, email, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
                .bind(user_id.0)
                .bind(email.as_str())
                .bind(role.as_str())
                .bind(at)
                .execute(&mut *conn)
                .await?;
        }
        Event::RoleGranted { user_id, role } => {
            sqlx::query("UPDATE rm_users SET role = $2, updated_at = $3 WHERE id = $1")
                .bind(user_id.0)
                .bind(role.as_str())
                .bind(at)
                .execute(&mut *conn)
                .await?;
        }
        // An account's status is read from its stream where it is enforced (each request
        // checks it, cached for a second); the user read model shows identity and role.
        Event::UserSuspended { user_id, .. } | Event::UserReactivated { user_id } => {
            sqlx::query("UPDATE rm_users SET updated_at = $2 WHERE id = $1")
                .bind(user_id.0)
                .bind(at)
                .execute(&mut *conn)
                .await?;
        }
        Event::WalletOpened {
            wallet_id,
            user_id,
            currency,
        } => {
            sqlx::query(
                "INSERT INTO rm_wallets (id, user_id, currency, balance, created_at, updated_at) VALUES ($1, $2, $3, 0, $4, $4)",
            )
            .bind(wallet_id.0)
            .bind(user_id.0)
            .bind(currency.code())
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        Event::WalletFrozen { reason, .. } => {
            sqlx::query("UPDATE rm_wallets SET frozen_reason = $2, updated_at = greatest(updated_at, $3) WHERE id = $1")
                .bind(aggregate_uuid(&env.stream_id)?)
                .bind(reason)
                .bind(at)
                .execute(&mut *conn)
                .await?;
        }
        Event::WalletUnfrozen { .. } => {
            sqlx::query("UPDATE rm_wallets SET frozen_reason = NULL, updated_at = greatest(updated_at, $2) WHERE id = $1")
                .bind(aggregate_uuid(&env.stream_id)?)
                .bind(at)
                .execute(&mut *conn)
                .await?;
        }
        Event::PayinCreated { .. } | Event::PayinConfirmed { .. } | Event::PayinFailed { .. } => {
            apply_payin(conn, env, event).await?
        }
        Event::PayoutRequested { .. }
        | Event::PayoutCompleted { .. }
        | Event::PayoutFailed { .. } => crate::payout_rows::apply(conn, env, event).await?,
        Event::WebhookEndpointCreated { .. }
        | Event::WebhookEndpointUpdated { .. }
        | Event::WebhookSecretRotated { .. }
        | Event::WebhookEndpointDisabled { .. }
        | Event::WebhookEndpointDeleted { .. } => {
            crate::webhook_rows::apply(conn, env, event).await?
        }
        // An application's own audit entry is read from the event store (the audit
        // trail); no read model shows it.
        Event::ActivityRecorded { .. } => {}
        Event::FeeScheduleSet { .. } => {
            crate::platform_rows::apply_schedule(conn, env, event).await?
        }
        Event::FeeCollected { .. } | Event::RevenueWithdrawn { .. } => {
            anyhow::bail!("revenue movements are applied in bulk (RevenueRows), not one by one")
        }
        Event::FundsDeposited { .. }
        | Event::FundsWithdrawn { .. }
        | Event::TransferSent { .. }
        | Event::TransferReceived { .. }
        | Event::EscrowHeld { .. }
        | Event::EscrowPaymentReceived { .. }
        | Event::EscrowRefundReceived { .. }
        | Event::FeeHeld { .. }
        | Event::FeeReturned { .. }
        | Event::FeeCharged { .. }
        | Event::PayoutFundsReserved { .. }
        | Event::PayoutFundsReturned { .. } => {
            anyhow::bail!("wallet movements are applied in bulk (WalletRows), not one by one")
        }
        Event::ContractCreated { .. }
        | Event::ContractFunded { .. }
        | Event::ContractDelivered { .. }
        | Event::ContractReleased { .. }
        | Event::ContractRefunded { .. }
        | Event::ContractCancelled { .. }
        | Event::ContractExpired { .. }
        | Event::ContractDisputed { .. }
        | Event::ContractSettled { .. }
        | Event::DisputeRaised { .. }
        | Event::DisputeResolved { .. } => {
            anyhow::bail!("contract and dispute rows are applied per batch (EscrowRows)")
        }
    }
    Ok(())
}

async fn apply_payin(conn: &mut PgConnection, env: &Incoming, event: &Event) -> anyhow::Result<()> {
    let at = env.recorded_at;
    let id = aggregate_uuid(&env.stream_id)?;
    match event {
        Event::PayinCreated {
            user_id,
            amount,
            currency,
            reference,
            description,
            created_by,
            ..
        } => {
            sqlx::query(
                "INSERT INTO rm_payins (id, user_id, amount, currency, reference, description, status, created_by, \
                 created_at, updated_at, position) VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', $7, $8, $8, $9)",
            )
            .bind(id)
            .bind(user_id.0)
            .bind(amount.value())
            .bind(currency.code())
            .bind(reference)
            .bind(description.as_ref().map(|d| d.as_str()))
            .bind(created_by.0)
            .bind(at)
            .bind(env.position)
            .execute(&mut *conn)
            .await?;
        }
        Event::PayinConfirmed { transaction_id, .. } => {
            sqlx::query(
                "UPDATE rm_payins SET status = 'CONFIRMED', transaction_id = $2, updated_at = $3, position = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(transaction_id.0)
            .bind(at)
            .bind(env.position)
            .execute(&mut *conn)
            .await?;
        }
        Event::PayinFailed { reason, .. } => {
            sqlx::query(
                "UPDATE rm_payins SET status = 'FAILED', reason = $2, updated_at = $3, position = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(reason)
            .bind(at)
            .bind(env.position)
            .execute(&mut *conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// The last version of `stream_id` applied to the read models (0 if none).
pub async fn stream_version(pool: &PgPool, stream_id: &str) -> Result<i64, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT version FROM projection_streams WHERE projection = $1 AND stream_id = $2",
    )
    .bind(PROJECTION)
    .bind(stream_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(0, |(v,)| v))
}

/// The versions of `streams` the read models have applied (absent: none).
pub async fn stream_versions(
    pool: &PgPool,
    streams: &[&str],
) -> Result<std::collections::HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT stream_id, version FROM projection_streams WHERE projection = $1 AND stream_id = ANY($2)",
    )
    .bind(PROJECTION)
    .bind(streams)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The position each projection has applied up to, by name.
pub async fn checkpoints(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT projection, position FROM projection_checkpoints ORDER BY projection")
        .fetch_all(pool)
        .await
}

/// Every table the projection writes (replay rebuilds them all, side by side).
pub(crate) const READ_MODEL_TABLES: &[&str] = &[
    "rm_users",
    "rm_wallets",
    "rm_transactions",
    "rm_contracts",
    "rm_disputes",
    "rm_fee_schedules",
    "rm_revenue",
    "rm_revenue_transactions",
    "rm_payins",
    "rm_payouts",
    "rm_wallet_states",
    "rm_webhooks",
];

/// Empties every read model (for a full rebuild).
pub async fn reset(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query(&format!("TRUNCATE {}", READ_MODEL_TABLES.join(", ")))
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM projection_streams WHERE projection = $1")
        .bind(PROJECTION)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(PROJECTION)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
