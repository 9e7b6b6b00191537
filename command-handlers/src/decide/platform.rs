//! The platform's own streams: a currency's fee schedule and its revenue account.

use chrono::Utc;
use domain::fees;
use domain::{
    Actor, Amount, Currency, DomainError, FeeSchedule, FeeScheduleId, FeeTerms, Revenue, RevenueId,
    StreamId, Timestamp, TransactionId,
};

use super::{after_states, state_after, Plan, Reader};
use crate::command::{CommandError, FeeScheduleChange, Outcome, RevenueChange};
use crate::load::{Load, State};

pub(super) async fn set_schedule<L: Load>(
    r: &mut Reader<'_, L>,
    actor: Actor,
    currency: Currency,
    terms: FeeTerms,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    let stream = StreamId::fee_schedule(FeeScheduleId::of(currency));
    let current = r.get::<FeeSchedule>(stream.clone()).await?;
    let writes = fees::set_schedule(&current, actor, currency, terms, now)?;
    let after = after_states(&writes, vec![(stream, State::FeeSchedule(current))]);
    Ok(Plan {
        outcome: Outcome::FeeSchedule(FeeScheduleChange {
            currency,
            terms,
            recorded_at: Utc::now(),
        }),
        writes,
        credentials: None,
        after,
    })
}

pub(super) async fn withdraw<L: Load>(
    r: &mut Reader<'_, L>,
    actor: Actor,
    currency: Currency,
    amount: Amount,
    transaction_id: TransactionId,
) -> Result<Plan, CommandError> {
    let stream = StreamId::revenue(RevenueId::of(currency));
    let current = r.get::<Revenue>(stream.clone()).await?;
    let writes = fees::withdraw_revenue(&current, actor, currency, amount, transaction_id)?;
    let after = after_states(&writes, vec![(stream.clone(), State::Revenue(current))]);
    let balance = state_after::<Revenue>(&after, &stream)
        .ok_or(DomainError::InvalidFee(
            "the withdrawal wrote no revenue state",
        ))?
        .balance;
    Ok(Plan {
        outcome: Outcome::Revenue(RevenueChange {
            currency,
            balance,
            transaction_id,
            amount: amount.value(),
            recorded_at: Utc::now(),
        }),
        writes,
        credentials: None,
        after,
    })
}
