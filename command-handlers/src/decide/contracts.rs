//! An escrow contract's life: drafted, funded (money held), delivered, released, refunded,
//! cancelled or expired. Each moves money only between the contract's escrow and a party's
//! wallet.

use chrono::Utc;
use domain::contract::{self, CreateContract, Payout};
use domain::{
    Actor, Amount, Contract, ContractId, Currency, DomainError, FeeSchedule, FeeScheduleId,
    StreamId, StreamWrite, Timestamp, TransactionId, User, UserId, Versioned, Wallet, WalletId,
};
use rust_decimal::Decimal;

use super::{after_states, revenue_for, state_after, Plan, Reader};
use crate::command::{CommandError, ContractChange, Outcome};
use crate::load::{Load, State};

pub(super) async fn create<L: Load>(
    r: &mut Reader<'_, L>,
    c: &CreateContract,
) -> Result<Plan, CommandError> {
    let existing = r.get::<Contract>(StreamId::contract(c.contract_id)).await?;
    let buyer = r.get::<User>(StreamId::user(c.buyer_id)).await?;
    let seller = r.get::<User>(StreamId::user(c.seller_id)).await?;
    let schedule = r
        .get::<FeeSchedule>(StreamId::fee_schedule(FeeScheduleId::of(c.currency)))
        .await?;
    let writes = contract::create(&existing, &buyer, &seller, &schedule.state, c)?;
    Ok(plan(writes, vec![], c.contract_id))
}

pub(super) async fn fund<L: Load>(
    r: &mut Reader<'_, L>,
    id: ContractId,
    actor: UserId,
    transaction_id: TransactionId,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    let (c, wallet_id, w) = with_party_wallet(r, id, |c| c.buyer).await?;
    let writes = contract::fund(&c, &w, actor, transaction_id, now)?;
    Ok(plan(writes, loaded(id, c, wallet_id, w), id))
}

pub(super) async fn deliver<L: Load>(
    r: &mut Reader<'_, L>,
    id: ContractId,
    actor: UserId,
    milestone: Option<u16>,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    on_contract_alone(r, id, |c| contract::deliver(c, actor, milestone, now)).await
}

pub(super) async fn release<L: Load>(
    r: &mut Reader<'_, L>,
    id: ContractId,
    actor: Actor,
    asked: Asked,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    let (c, wallet_id, w) = with_party_wallet(r, id, |c| c.seller).await?;
    let revenue = revenue_for(r, &c.state).await?;
    let payout = payout(asked, &c.state)?;
    let writes = contract::release(&c, &w, revenue.as_ref().map(|(_, v)| v), actor, payout, now)?;
    let mut loaded = loaded(id, c, wallet_id, w);
    loaded.extend(revenue.map(|(s, v)| (s, State::Revenue(v))));
    Ok(plan(writes, loaded, id))
}

pub(super) async fn refund<L: Load>(
    r: &mut Reader<'_, L>,
    id: ContractId,
    actor: UserId,
    asked: Asked,
) -> Result<Plan, CommandError> {
    let (c, wallet_id, w) = with_party_wallet(r, id, |c| c.buyer).await?;
    let payout = payout(asked, &c.state)?;
    let writes = contract::refund(&c, &w, actor, payout)?;
    Ok(plan(writes, loaded(id, c, wallet_id, w), id))
}

pub(super) async fn cancel<L: Load>(
    r: &mut Reader<'_, L>,
    id: ContractId,
    actor: UserId,
) -> Result<Plan, CommandError> {
    on_contract_alone(r, id, |c| contract::cancel(c, actor)).await
}

pub(super) async fn expire<L: Load>(
    r: &mut Reader<'_, L>,
    id: ContractId,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    on_contract_alone(r, id, |c| contract::expire(c, now)).await
}

/// A decision that reads and writes the contract's stream only.
async fn on_contract_alone<L: Load>(
    r: &mut Reader<'_, L>,
    id: ContractId,
    decide: impl FnOnce(&Versioned<Contract>) -> Result<Vec<StreamWrite>, DomainError>,
) -> Result<Plan, CommandError> {
    let c = r.get::<Contract>(StreamId::contract(id)).await?;
    let writes = decide(&c)?;
    Ok(plan(
        writes,
        vec![(StreamId::contract(id), State::Contract(c))],
        id,
    ))
}

/// Loads a contract and the wallet (in the contract's currency) of one of its parties.
async fn with_party_wallet<L: Load>(
    r: &mut Reader<'_, L>,
    id: ContractId,
    party: fn(&Contract) -> Option<UserId>,
) -> Result<(Versioned<Contract>, WalletId, Versioned<Wallet>), CommandError> {
    let c = r.get::<Contract>(StreamId::contract(id)).await?;
    let owner = party(&c.state).ok_or(DomainError::ContractNotFound)?;
    let wallet_id = WalletId::of(owner, c.state.currency.unwrap_or(Currency::USD));
    let w = r.get::<Wallet>(StreamId::wallet(wallet_id)).await?;
    Ok((c, wallet_id, w))
}

/// The loaded states of a contract and one wallet, for [`after_states`].
fn loaded(
    id: ContractId,
    c: Versioned<Contract>,
    wallet_id: WalletId,
    w: Versioned<Wallet>,
) -> Vec<(StreamId, State)> {
    vec![
        (StreamId::contract(id), State::Contract(c)),
        (StreamId::wallet(wallet_id), State::Wallet(w)),
    ]
}

fn plan(writes: Vec<StreamWrite>, loaded: Vec<(StreamId, State)>, id: ContractId) -> Plan {
    let after = after_states(&writes, loaded);
    Plan {
        outcome: Outcome::Contract(ContractChange {
            contract: state_after::<Contract>(&after, &StreamId::contract(id)).unwrap_or_default(),
            recorded_at: Utc::now(),
        }),
        writes,
        credentials: None,
        after,
    }
}

/// A release or refund as a command asks it: the milestone, the amount (not yet checked
/// against the contract's currency) and the movement's id.
pub(super) type Asked = (Option<u16>, Option<Decimal>, TransactionId);

/// Checks an optional payout amount against the contract's currency.
fn payout((milestone, amount, transaction_id): Asked, c: &Contract) -> Result<Payout, DomainError> {
    let amount = match amount {
        None => None,
        Some(d) => Some(Amount::new(d, c.currency.unwrap_or(Currency::USD))?),
    };
    Ok(Payout {
        milestone,
        amount,
        transaction_id,
    })
}
