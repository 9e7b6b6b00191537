//! Payouts: asked for by a wallet's owner (the amount moves to the wallet's payouts in
//! flight in the same transaction), then completed or failed by the marketplace's service
//! (a failure returns the amount to the wallet in the same transaction).

use chrono::Utc;
use domain::payout::{self, RequestPayout};
use domain::{
    Actor, Currency, DomainError, Payout, PayoutId, StreamId, StreamWrite, Timestamp,
    TransactionId, Wallet, WalletId,
};

use super::{after_states, state_after, Plan, Reader};
use crate::command::{CommandError, Outcome, PayoutChange};
use crate::load::{Load, State};

pub(super) async fn request<L: Load>(
    r: &mut Reader<'_, L>,
    c: &RequestPayout,
) -> Result<Plan, CommandError> {
    let owner = c.actor.user().ok_or(DomainError::Forbidden(
        "only a wallet's owner may pay out of it",
    ))?;
    let wallet_id = WalletId::of(owner, c.currency);
    let existing = r.get::<Payout>(StreamId::payout(c.payout_id)).await?;
    let w = r.get::<Wallet>(StreamId::wallet(wallet_id)).await?;
    let writes = payout::request(&existing, &w, c)?;
    let loaded = vec![
        (StreamId::payout(c.payout_id), State::Payout(existing)),
        (StreamId::wallet(wallet_id), State::Wallet(w)),
    ];
    Ok(plan(writes, loaded, c.payout_id))
}

pub(super) async fn complete<L: Load>(
    r: &mut Reader<'_, L>,
    id: PayoutId,
    actor: Actor,
    provider_reference: &str,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    let p = r.get::<Payout>(StreamId::payout(id)).await?;
    let writes = payout::complete(&p, actor, provider_reference, now)?;
    Ok(plan(
        writes,
        vec![(StreamId::payout(id), State::Payout(p))],
        id,
    ))
}

pub(super) async fn fail<L: Load>(
    r: &mut Reader<'_, L>,
    id: PayoutId,
    actor: Actor,
    reason: &str,
    transaction_id: TransactionId,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    let p = r.get::<Payout>(StreamId::payout(id)).await?;
    let owner = p.state.user_id.ok_or(DomainError::PayoutNotFound)?;
    let wallet_id = WalletId::of(owner, p.state.currency.unwrap_or(Currency::USD));
    let w = r.get::<Wallet>(StreamId::wallet(wallet_id)).await?;
    let writes = payout::fail(&p, &w, actor, reason, transaction_id, now)?;
    let loaded = vec![
        (StreamId::payout(id), State::Payout(p)),
        (StreamId::wallet(wallet_id), State::Wallet(w)),
    ];
    Ok(plan(writes, loaded, id))
}

fn plan(writes: Vec<StreamWrite>, loaded: Vec<(StreamId, State)>, id: PayoutId) -> Plan {
    let after = after_states(&writes, loaded);
    Plan {
        outcome: Outcome::Payout(PayoutChange {
            payout: state_after::<Payout>(&after, &StreamId::payout(id)).unwrap_or_default(),
            recorded_at: Utc::now(),
        }),
        writes,
        credentials: None,
        after,
    }
}
