//! `rm_payouts`: one row per payout, written one event at a time (payouts are rare next to
//! wallet movements). The money they move is written by `WalletRows`.

use domain::Event;
use sqlx::PgConnection;

use crate::apply::{aggregate_uuid, Incoming};

/// Applies a payout's own event to its row.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    env: &Incoming,
    event: &Event,
) -> anyhow::Result<()> {
    let at = env.recorded_at;
    let id = aggregate_uuid(&env.stream_id)?;
    match event {
        Event::PayoutRequested {
            user_id,
            wallet_id,
            amount,
            currency,
            destination,
            description,
            transaction_id,
            ..
        } => {
            sqlx::query(
                "INSERT INTO rm_payouts (id, user_id, wallet_id, amount, currency, destination, description, status, \
                 transaction_id, created_at, updated_at, position) VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', $8, $9, $9, $10)",
            )
            .bind(id)
            .bind(user_id.0)
            .bind(wallet_id.0)
            .bind(amount.value())
            .bind(currency.code())
            .bind(destination)
            .bind(description.as_ref().map(|d| d.as_str()))
            .bind(transaction_id.0)
            .bind(at)
            .bind(env.position)
            .execute(&mut *conn)
            .await?;
        }
        Event::PayoutCompleted {
            provider_reference, ..
        } => {
            sqlx::query(
                "UPDATE rm_payouts SET status = 'COMPLETED', provider_reference = $2, updated_at = $3, position = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(provider_reference)
            .bind(at)
            .bind(env.position)
            .execute(&mut *conn)
            .await?;
        }
        Event::PayoutFailed { reason, .. } => {
            sqlx::query(
                "UPDATE rm_payouts SET status = 'FAILED', reason = $2, updated_at = $3, position = $4 WHERE id = $1",
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
