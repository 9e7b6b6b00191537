//! Wallet movements: balances and escrow holds in `rm_wallets`, history rows in
//! `rm_transactions`, written once per batch.

use std::collections::HashMap;

use domain::Event;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::apply::{aggregate_uuid, Incoming};

/// One history row of `rm_transactions`.
struct HistoryRow {
    id: Uuid,
    from: Option<Uuid>,
    to: Option<Uuid>,
    amount: Decimal,
    wallet: Uuid,
    kind: &'static str,
    description: Option<String>,
    contract: Option<Uuid>,
    at: chrono::DateTime<chrono::Utc>,
    position: i64,
}

/// Wallet movements of a batch, written with three statements instead of two per event:
/// balances and escrow holds are sums (so their order within the batch does not matter),
/// and a history row is written by the first of its legs (`ON CONFLICT DO NOTHING`).
#[derive(Default)]
pub(crate) struct WalletRows {
    /// Net balance change and latest time, by wallet.
    balances: HashMap<Uuid, (Decimal, chrono::DateTime<chrono::Utc>)>,
    /// Net change of the amount held in escrow, by wallet.
    held: HashMap<Uuid, Decimal>,
    rows: Vec<HistoryRow>,
}

impl WalletRows {
    /// Takes a wallet movement; returns false for any other event.
    pub(crate) fn take(&mut self, env: &Incoming, event: &Event) -> anyhow::Result<bool> {
        use Event as E;
        // (transaction, amount, credit?, counterparty wallet, kind, description, contract).
        // Both legs of a transfer carry both wallet ids: whichever comes first writes the
        // complete row.
        let (tx, amount, credit, other, kind, description, contract) = match event {
            E::FundsDeposited {
                transaction_id: t,
                amount,
                description: d,
                ..
            } => (t.0, amount, true, None, "DEPOSIT", d.as_ref(), None),
            E::FundsWithdrawn {
                transaction_id: t,
                amount,
                description: d,
            } => (t.0, amount, false, None, "WITHDRAWAL", d.as_ref(), None),
            E::TransferSent {
                transaction_id: t,
                to_wallet_id,
                amount,
                description: d,
                ..
            } => (
                t.0,
                amount,
                false,
                Some(to_wallet_id.0),
                "TRANSFER",
                d.as_ref(),
                None,
            ),
            E::TransferReceived {
                transaction_id: t,
                from_wallet_id,
                amount,
                description: d,
                ..
            } => (
                t.0,
                amount,
                true,
                Some(from_wallet_id.0),
                "TRANSFER",
                d.as_ref(),
                None,
            ),
            E::EscrowHeld {
                transaction_id: t,
                contract_id: c,
                amount,
            } => (t.0, amount, false, None, "ESCROW_HOLD", None, Some(c.0)),
            E::EscrowPaymentReceived {
                transaction_id: t,
                contract_id: c,
                amount,
            } => (t.0, amount, true, None, "PAYMENT", None, Some(c.0)),
            E::EscrowRefundReceived {
                transaction_id: t,
                contract_id: c,
                amount,
            } => (t.0, amount, true, None, "REFUND", None, Some(c.0)),
            E::FeeHeld {
                transaction_id: t,
                contract_id: c,
                amount,
            } => (t.0, amount, false, None, "FEE", None, Some(c.0)),
            E::FeeCharged {
                transaction_id: t,
                contract_id: c,
                amount,
            } => (t.0, amount, false, None, "FEE", None, Some(c.0)),
            E::FeeReturned {
                transaction_id: t,
                contract_id: c,
                amount,
            } => (t.0, amount, true, None, "FEE_REFUND", None, Some(c.0)),
            _ => return Ok(false),
        };
        let w = aggregate_uuid(&env.stream_id)?;
        let amount = amount.value();
        // A buyer's prepaid fee is held in escrow beside the price.
        if kind == "ESCROW_HOLD" || matches!(event, E::FeeHeld { .. }) {
            *self.held.entry(w).or_default() += amount;
        }
        let entry = self
            .balances
            .entry(w)
            .or_insert((Decimal::ZERO, env.recorded_at));
        entry.0 += if credit { amount } else { -amount };
        entry.1 = entry.1.max(env.recorded_at);
        let (from, to) = if credit {
            (other, Some(w))
        } else {
            (Some(w), other)
        };
        self.rows.push(HistoryRow {
            id: tx,
            from,
            to,
            amount,
            wallet: w,
            kind,
            description: description.map(|d| d.as_str().to_owned()),
            contract,
            at: env.recorded_at,
            position: env.position,
        });
        Ok(true)
    }

    /// Writes what was taken, in the caller's transaction.
    pub(crate) async fn flush(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if self.balances.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(self.balances.len());
        let mut deltas = Vec::with_capacity(self.balances.len());
        let mut ats = Vec::with_capacity(self.balances.len());
        for (w, (d, at)) in self.balances.drain() {
            ids.push(w);
            deltas.push(d);
            ats.push(at);
        }
        let currencies: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
            "UPDATE rm_wallets w SET balance = w.balance + u.delta, updated_at = greatest(w.updated_at, u.at) \
             FROM UNNEST($1::uuid[], $2::numeric[], $3::timestamptz[]) AS u(id, delta, at) \
             WHERE w.id = u.id RETURNING w.id, w.currency",
        )
        .bind(&ids)
        .bind(&deltas)
        .bind(&ats)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        anyhow::ensure!(
            currencies.len() == ids.len(),
            "a wallet movement names a wallet the read models do not have"
        );
        let mut seen = std::collections::HashSet::new();
        let rows: Vec<HistoryRow> = self.rows.drain(..).filter(|r| seen.insert(r.id)).collect();
        let currency = |w: &Uuid| currencies.get(w).cloned().unwrap_or_default();
        sqlx::query(
            "INSERT INTO rm_transactions (id, from_wallet_id, to_wallet_id, amount, currency, type, description, created_at, position, contract_id) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::numeric[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::bigint[], $10::uuid[]) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.from).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.to).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.amount).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| currency(&r.wallet)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.kind).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.description.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.contract).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
        if !self.held.is_empty() {
            let (ids, deltas): (Vec<Uuid>, Vec<Decimal>) = self.held.drain().unzip();
            sqlx::query(
                "UPDATE rm_wallets w SET held_in_escrow = w.held_in_escrow + u.delta \
                 FROM UNNEST($1::uuid[], $2::numeric[]) AS u(id, delta) WHERE w.id = u.id",
            )
            .bind(&ids)
            .bind(&deltas)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
