//! The platform's read models: `rm_fee_schedules` (one event at a time: an admin's rare
//! change), and `rm_revenue` with its movements in `rm_revenue_transactions`, kept for the
//! end of the batch as wallet movements are: every fee-charging payment of a currency posts
//! to the same revenue row, and applying them one by one made the projection fall behind a
//! load of releases.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::apply::Incoming;
use domain::Event;

/// Applies a fee-schedule event.
pub(crate) async fn apply_schedule(
    conn: &mut PgConnection,
    env: &Incoming,
    event: &Event,
) -> anyhow::Result<()> {
    let Event::FeeScheduleSet {
        currency,
        terms,
        set_by,
        ..
    } = event
    else {
        anyhow::bail!("not a fee-schedule event");
    };
    sqlx::query(
        "INSERT INTO rm_fee_schedules (currency, percent_bps, minimum, maximum, payer, set_by, updated_at, position) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (currency) DO UPDATE SET percent_bps = EXCLUDED.percent_bps, minimum = EXCLUDED.minimum, \
             maximum = EXCLUDED.maximum, payer = EXCLUDED.payer, set_by = EXCLUDED.set_by, \
             updated_at = EXCLUDED.updated_at, position = EXCLUDED.position",
    )
    .bind(currency.code())
    .bind(i32::from(terms.percent_bps))
    .bind(terms.minimum.map(|a| a.value()))
    .bind(terms.maximum.map(|a| a.value()))
    .bind(terms.payer.as_str())
    .bind(set_by.map(|u| u.0))
    .bind(env.recorded_at)
    .bind(env.position)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Revenue movements taken from a batch, written at its end.
#[derive(Default)]
pub(crate) struct RevenueRows {
    /// The balance change and the latest time, per currency.
    balances: HashMap<String, (Decimal, DateTime<Utc>)>,
    ids: Vec<Uuid>,
    currencies: Vec<String>,
    kinds: Vec<&'static str>,
    amounts: Vec<Decimal>,
    contracts: Vec<Option<Uuid>>,
    ats: Vec<DateTime<Utc>>,
    positions: Vec<i64>,
}

impl RevenueRows {
    /// Takes a revenue movement; returns false for any other event.
    pub(crate) fn take(&mut self, env: &Incoming, event: &Event) -> bool {
        let (id, currency, kind, amount, contract) = match event {
            Event::FeeCollected {
                transaction_id,
                contract_id,
                currency,
                amount,
                ..
            } => (
                transaction_id.0,
                currency,
                "FEE",
                amount.value(),
                Some(contract_id.0),
            ),
            Event::RevenueWithdrawn {
                transaction_id,
                currency,
                amount,
                ..
            } => (
                transaction_id.0,
                currency,
                "WITHDRAWAL",
                amount.value(),
                None,
            ),
            _ => return false,
        };
        let delta = if kind == "FEE" { amount } else { -amount };
        let entry = self
            .balances
            .entry(currency.code().to_owned())
            .or_insert((Decimal::ZERO, env.recorded_at));
        entry.0 += delta;
        entry.1 = entry.1.max(env.recorded_at);
        self.ids.push(id);
        self.currencies.push(currency.code().to_owned());
        self.kinds.push(kind);
        self.amounts.push(amount);
        self.contracts.push(contract);
        self.ats.push(env.recorded_at);
        self.positions.push(env.position);
        true
    }

    /// Writes what was taken, in the caller's transaction.
    pub(crate) async fn flush(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let (currencies, changes): (Vec<String>, Vec<(Decimal, DateTime<Utc>)>) =
            self.balances.drain().unzip();
        let (deltas, ats): (Vec<Decimal>, Vec<DateTime<Utc>>) = changes.into_iter().unzip();
        // Opened at zero, then moved: an upsert would check `balance >= 0` against the
        // proposed row, which for a batch of withdrawals alone is negative.
        sqlx::query(
            "INSERT INTO rm_revenue (currency, balance, updated_at) \
             SELECT c, 0, a FROM UNNEST($1::text[], $2::timestamptz[]) AS u(c, a) \
             ON CONFLICT (currency) DO NOTHING",
        )
        .bind(&currencies)
        .bind(&ats)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE rm_revenue r SET balance = r.balance + u.d, updated_at = GREATEST(r.updated_at, u.a) \
             FROM UNNEST($1::text[], $2::numeric[], $3::timestamptz[]) AS u(c, d, a) WHERE r.currency = u.c",
        )
        .bind(&currencies)
        .bind(&deltas)
        .bind(&ats)
        .execute(&mut *conn)
        .await?;
        let kinds: Vec<&str> = self.kinds.clone();
        sqlx::query(
            "INSERT INTO rm_revenue_transactions (id, currency, type, amount, contract_id, created_at, position) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::numeric[], $5::uuid[], \
                 $6::timestamptz[], $7::bigint[])",
        )
        .bind(&self.ids)
        .bind(&self.currencies)
        .bind(&kinds)
        .bind(&self.amounts)
        .bind(&self.contracts)
        .bind(&self.ats)
        .bind(&self.positions)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
