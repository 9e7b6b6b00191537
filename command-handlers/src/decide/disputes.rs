//! Disputes: a party raises one on an active contract; an arbiter settles it by paying the
//! held money to either side or splitting it.

use chrono::Utc;
use domain::contract::{self, ResolveDispute};
use domain::{
    Actor, Contract, ContractId, Currency, Dispute, DisputeId, DomainError, StreamId, StreamWrite,
    Timestamp, UserId, Wallet, WalletId,
};

use super::{after_states, revenue_for, state_after, Plan, Reader};
use crate::command::{CommandError, DisputeChange, Outcome};
use crate::load::{Load, State};

pub(super) async fn raise<L: Load>(
    r: &mut Reader<'_, L>,
    dispute_id: DisputeId,
    contract_id: ContractId,
    actor: UserId,
    description: &str,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    let c = r.get::<Contract>(StreamId::contract(contract_id)).await?;
    let writes = contract::raise_dispute(&c, dispute_id, actor, description, now)?;
    let contract = c.state.clone();
    Ok(plan(
        writes,
        vec![(StreamId::contract(contract_id), State::Contract(c))],
        dispute_id,
        contract,
    ))
}

pub(super) async fn resolve<L: Load>(
    r: &mut Reader<'_, L>,
    dispute_id: DisputeId,
    actor: Actor,
    decision: &ResolveDispute,
) -> Result<Plan, CommandError> {
    let d = r.get::<Dispute>(StreamId::dispute(dispute_id)).await?;
    let contract_id = d.state.contract_id.ok_or(DomainError::DisputeNotFound)?;
    let c = r.get::<Contract>(StreamId::contract(contract_id)).await?;
    let currency = c.state.currency.unwrap_or(Currency::USD);
    let seller = c.state.seller.ok_or(DomainError::ContractNotFound)?;
    let buyer = c.state.buyer.ok_or(DomainError::ContractNotFound)?;
    let (sw_id, bw_id) = (
        WalletId::of(seller, currency),
        WalletId::of(buyer, currency),
    );
    let sw = r.get::<Wallet>(StreamId::wallet(sw_id)).await?;
    let bw = r.get::<Wallet>(StreamId::wallet(bw_id)).await?;
    let revenue = revenue_for(r, &c.state).await?;
    let writes = contract::resolve_dispute(
        &d,
        &c,
        &sw,
        &bw,
        revenue.as_ref().map(|(_, v)| v),
        actor,
        decision,
    )?;
    let contract = c.state.clone();
    let mut loaded = vec![
        (StreamId::dispute(dispute_id), State::Dispute(d)),
        (StreamId::contract(contract_id), State::Contract(c)),
        (StreamId::wallet(sw_id), State::Wallet(sw)),
        (StreamId::wallet(bw_id), State::Wallet(bw)),
    ];
    loaded.extend(revenue.map(|(s, v)| (s, State::Revenue(v))));
    Ok(plan(writes, loaded, dispute_id, contract))
}

/// The dispute and its contract as they are after the writes (the contract as loaded if
/// the command did not write it).
fn plan(
    writes: Vec<StreamWrite>,
    loaded: Vec<(StreamId, State)>,
    id: DisputeId,
    contract: Contract,
) -> Plan {
    let after = after_states(&writes, loaded);
    let contract = match contract.id {
        Some(cid) => state_after::<Contract>(&after, &StreamId::contract(cid)).unwrap_or_default(),
        None => contract,
    };
    Plan {
        outcome: Outcome::Dispute(DisputeChange {
            dispute: state_after::<Dispute>(&after, &StreamId::dispute(id)).unwrap_or_default(),
            contract,
            recorded_at: Utc::now(),
        }),
        writes,
        credentials: None,
        after,
    }
}
