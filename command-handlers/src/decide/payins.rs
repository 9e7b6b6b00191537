//! Pay-ins: announced by the marketplace's service, then confirmed (the user's wallet is
//! credited in the same transaction) or failed.

use chrono::Utc;
use domain::payin::{self, CreatePayin};
use domain::{
    Actor, Currency, DomainError, Payin, PayinId, StreamId, StreamWrite, Timestamp, TransactionId,
    User, Wallet, WalletId,
};

use super::{after_states, state_after, Plan, Reader};
use crate::command::{CommandError, Outcome, PayinChange};
use crate::load::{Load, State};

pub(super) async fn create<L: Load>(
    r: &mut Reader<'_, L>,
    c: &CreatePayin,
) -> Result<Plan, CommandError> {
    let id = c.payin_id();
    let existing = r.get::<Payin>(StreamId::payin(id)).await?;
    let user = r.get::<User>(StreamId::user(c.user_id)).await?;
    let writes = payin::create(&existing, &user, c)?;
    Ok(plan(
        writes,
        vec![(StreamId::payin(id), State::Payin(existing))],
        id,
    ))
}

pub(super) async fn confirm<L: Load>(
    r: &mut Reader<'_, L>,
    id: PayinId,
    actor: Actor,
    transaction_id: TransactionId,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    let p = r.get::<Payin>(StreamId::payin(id)).await?;
    let user = p.state.user_id.ok_or(DomainError::PayinNotFound)?;
    let wallet_id = WalletId::of(user, p.state.currency.unwrap_or(Currency::USD));
    let w = r.get::<Wallet>(StreamId::wallet(wallet_id)).await?;
    let writes = payin::confirm(&p, &w, actor, transaction_id, now)?;
    let loaded = vec![
        (StreamId::payin(id), State::Payin(p)),
        (StreamId::wallet(wallet_id), State::Wallet(w)),
    ];
    Ok(plan(writes, loaded, id))
}

pub(super) async fn fail<L: Load>(
    r: &mut Reader<'_, L>,
    id: PayinId,
    actor: Actor,
    reason: &str,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    let p = r.get::<Payin>(StreamId::payin(id)).await?;
    let writes = payin::fail(&p, actor, reason, now)?;
    Ok(plan(
        writes,
        vec![(StreamId::payin(id), State::Payin(p))],
        id,
    ))
}

fn plan(writes: Vec<StreamWrite>, loaded: Vec<(StreamId, State)>, id: PayinId) -> Plan {
    let after = after_states(&writes, loaded);
    Plan {
        outcome: Outcome::Payin(PayinChange {
            payin: state_after::<Payin>(&after, &StreamId::payin(id)).unwrap_or_default(),
            recorded_at: Utc::now(),
        }),
        writes,
        credentials: None,
        after,
    }
}
