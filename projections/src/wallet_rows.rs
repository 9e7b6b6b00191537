//! Wallet movements: balances, escrow holds and pending payouts in `rm_wallets`, history
//! rows in `rm_transactions` (each with the balance after it, per wallet it moves), and
//! the wallet's state after every change in `rm_wallet_states` (what `asOf` reads),
//! written once per batch.

use std::collections::HashMap;

use domain::{Currency, Event, UserId, WalletId};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::apply::{aggregate_uuid, Incoming};

type Time = chrono::DateTime<chrono::Utc>;

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
    at: Time,
    position: i64,
    from_after: Option<Decimal>,
    to_after: Option<Decimal>,
    /// The position of each side's own event (a transfer's legs differ).
    from_position: Option<i64>,
    to_position: Option<i64>,
}

/// One change of one wallet's numbers, in event order.
struct Change {
    wallet: Uuid,
    position: i64,
    at: Time,
    balance: Decimal,
    held: Decimal,
    pending: Decimal,
    /// The history row it is a leg of, and whether it is that row's debited side.
    row: Option<(usize, bool)>,
}

/// Wallet movements of a batch, written with four statements instead of several per
/// event: the wallets' numbers are sums (so one update per batch does), and the running
/// values after each change are the values before the batch plus the changes up to it.
#[derive(Default)]
pub(crate) struct WalletRows {
    changes: Vec<Change>,
    rows: Vec<HistoryRow>,
}

impl WalletRows {
    /// Escrow money of a buyer's contract leaving escrow: no longer held for it.
    pub(crate) fn unhold(&mut self, env: &Incoming, buyer: Uuid, currency: &str, amount: Decimal) {
        let Ok(currency) = Currency::parse(currency) else {
            return;
        };
        self.changes.push(Change {
            wallet: WalletId::of(UserId(buyer), currency).0,
            position: env.position,
            at: env.recorded_at,
            balance: Decimal::ZERO,
            held: -amount,
            pending: Decimal::ZERO,
            row: None,
        });
    }

    /// Takes a wallet movement; returns false for any other event, and for a completed
    /// payout (its pending amount is taken here, its payout row is written one by one).
    pub(crate) fn take(&mut self, env: &Incoming, event: &Event) -> anyhow::Result<bool> {
        use Event as E;
        if let E::PayoutCompleted {
            wallet_id, amount, ..
        } = event
        {
            self.changes.push(Change {
                wallet: wallet_id.0,
                position: env.position,
                at: env.recorded_at,
                balance: Decimal::ZERO,
                held: Decimal::ZERO,
                pending: -amount.value(),
                row: None,
            });
            return Ok(false);
        }
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
            E::PayoutFundsReserved {
                transaction_id: t,
                amount,
                description: d,
                ..
            } => (t.0, amount, false, None, "PAYOUT", d.as_ref(), None),
            E::PayoutFundsReturned {
                transaction_id: t,
                amount,
                ..
            } => (t.0, amount, true, None, "PAYOUT_RETURN", None, None),
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
        let held = if kind == "ESCROW_HOLD" || matches!(event, E::FeeHeld { .. }) {
            amount
        } else {
            Decimal::ZERO
        };
        let pending = match event {
            E::PayoutFundsReserved { .. } => amount,
            E::PayoutFundsReturned { .. } => -amount,
            _ => Decimal::ZERO,
        };
        let (from, to) = if credit {
            (other, Some(w))
        } else {
            (Some(w), other)
        };
        self.changes.push(Change {
            wallet: w,
            position: env.position,
            at: env.recorded_at,
            balance: if credit { amount } else { -amount },
            held,
            pending,
            row: Some((self.rows.len(), !credit)),
        });
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
            from_after: None,
            to_after: None,
            from_position: (!credit).then_some(env.position),
            to_position: credit.then_some(env.position),
        });
        Ok(true)
    }

    /// Writes what was taken, in the caller's transaction.
    pub(crate) async fn flush(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        // Net change per wallet: (balance, held, pending, latest time its balance or
        // pending payouts changed: what `updated_at` shows).
        let mut net: HashMap<Uuid, (Decimal, Decimal, Decimal, Option<Time>)> = HashMap::new();
        for c in &self.changes {
            let e =
                net.entry(c.wallet)
                    .or_insert((Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, None));
            e.0 += c.balance;
            e.1 += c.held;
            e.2 += c.pending;
            if !c.balance.is_zero() || !c.pending.is_zero() {
                e.3 = e.3.max(Some(c.at));
            }
        }
        let (mut ids, mut db, mut dh, mut dp, mut ats) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (w, (b, h, p, at)) in &net {
            ids.push(*w);
            db.push(*b);
            dh.push(*h);
            dp.push(*p);
            ats.push(*at);
        }
        type After = (Uuid, String, Decimal, Decimal, Decimal);
        let after: Vec<After> = sqlx::query_as(
            "UPDATE rm_wallets w SET balance = w.balance + u.db, held_in_escrow = trim_scale(w.held_in_escrow + u.dh), \
             pending_payouts = trim_scale(w.pending_payouts + u.dp), \
             updated_at = coalesce(greatest(w.updated_at, u.at), w.updated_at) \
             FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::numeric[], $5::timestamptz[]) AS u(id, db, dh, dp, at) \
             WHERE w.id = u.id RETURNING w.id, w.currency, w.balance, w.held_in_escrow, w.pending_payouts",
        )
        .bind(&ids)
        .bind(&db)
        .bind(&dh)
        .bind(&dp)
        .bind(&ats)
        .fetch_all(&mut *conn)
        .await?;
        anyhow::ensure!(
            after.len() == ids.len(),
            "a wallet movement names a wallet the read models do not have"
        );
        // Each wallet's numbers before the batch, then running through its changes.
        let mut currencies: HashMap<Uuid, String> = HashMap::with_capacity(after.len());
        let mut running: HashMap<Uuid, (Decimal, Decimal, Decimal)> = HashMap::new();
        for (id, currency, b, h, p) in after {
            let (nb, nh, np, _) = net[&id];
            running.insert(id, (b - nb, h - nh, p - np));
            currencies.insert(id, currency);
        }
        // The state after each change; several changes at one position keep the last.
        let mut states: Vec<(Uuid, i64, Time, Decimal, Decimal, Decimal)> =
            Vec::with_capacity(self.changes.len());
        for c in self.changes.drain(..) {
            let r = running
                .get_mut(&c.wallet)
                .ok_or_else(|| anyhow::anyhow!("wallet {} vanished", c.wallet))?;
            r.0 += c.balance;
            r.1 += c.held;
            r.2 += c.pending;
            if let Some((i, debited)) = c.row {
                if let Some(row) = self.rows.get_mut(i) {
                    if debited {
                        row.from_after = Some(r.0);
                    } else {
                        row.to_after = Some(r.0);
                    }
                }
            }
            match states.last_mut() {
                Some(s) if s.0 == c.wallet && s.1 == c.position => {
                    (s.3, s.4, s.5) = *r;
                }
                _ => states.push((c.wallet, c.position, c.at, r.0, r.1, r.2)),
            }
            if let Some(s) = states.last_mut() {
                // Holds and pending payouts net to zero and back: without a canonical
                // scale, how the batches fell would show (`0` or `0.00`).
                (s.4, s.5) = (s.4.normalize(), s.5.normalize());
            }
        }
        // A transfer's two legs make one row: the first leg taken writes it, and the
        // second (in this batch or a later one) adds its side's balance.
        let mut merged: Vec<HistoryRow> = Vec::with_capacity(self.rows.len());
        let mut index: HashMap<Uuid, usize> = HashMap::new();
        for r in self.rows.drain(..) {
            match index.get(&r.id) {
                Some(&i) => {
                    let m = &mut merged[i];
                    m.from_after = m.from_after.or(r.from_after);
                    m.to_after = m.to_after.or(r.to_after);
                    m.from_position = m.from_position.or(r.from_position);
                    m.to_position = m.to_position.or(r.to_position);
                }
                None => {
                    index.insert(r.id, merged.len());
                    merged.push(r);
                }
            }
        }
        let rows = merged;
        let currency = |w: &Uuid| currencies.get(w).cloned().unwrap_or_default();
        sqlx::query(
            "INSERT INTO rm_transactions (id, from_wallet_id, to_wallet_id, amount, currency, type, description, created_at, position, contract_id, from_balance_after, to_balance_after, from_position, to_position) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::numeric[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::bigint[], $10::uuid[], $11::numeric[], $12::numeric[], $13::bigint[], $14::bigint[]) \
             ON CONFLICT (id) DO UPDATE SET \
               from_balance_after = coalesce(rm_transactions.from_balance_after, EXCLUDED.from_balance_after), \
               to_balance_after = coalesce(rm_transactions.to_balance_after, EXCLUDED.to_balance_after), \
               from_position = coalesce(rm_transactions.from_position, EXCLUDED.from_position), \
               to_position = coalesce(rm_transactions.to_position, EXCLUDED.to_position)",
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
        .bind(rows.iter().map(|r| r.from_after).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.to_after).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.from_position).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.to_position).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO rm_wallet_states (wallet_id, position, at, balance, held_in_escrow, pending_payouts) \
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::timestamptz[], $4::numeric[], $5::numeric[], $6::numeric[]) \
             ON CONFLICT (wallet_id, position) DO UPDATE SET balance = EXCLUDED.balance, \
               held_in_escrow = EXCLUDED.held_in_escrow, pending_payouts = EXCLUDED.pending_payouts",
        )
        .bind(states.iter().map(|s| s.0).collect::<Vec<_>>())
        .bind(states.iter().map(|s| s.1).collect::<Vec<_>>())
        .bind(states.iter().map(|s| s.2).collect::<Vec<_>>())
        .bind(states.iter().map(|s| s.3).collect::<Vec<_>>())
        .bind(states.iter().map(|s| s.4).collect::<Vec<_>>())
        .bind(states.iter().map(|s| s.5).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
