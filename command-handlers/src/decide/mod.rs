//! Deciding a command: read the streams it needs through a [`Load`], let `domain` decide,
//! and describe the writes, the resulting states and the outcome as a [`Plan`]. One module
//! per command family; nothing here writes.

mod contracts;
mod disputes;
mod payins;
mod payouts;
mod platform;
mod users;
mod wallets;
mod webhooks;

use domain::{
    Contract, Currency, Email, Revenue, RevenueId, StreamId, StreamWrite, UserId, Versioned,
};

use crate::command::{Command, CommandError, Outcome};
use crate::load::{Aggregated, Load, State};

/// A decided command: what to write, and what it produces once written.
pub(crate) struct Plan {
    pub(crate) writes: Vec<StreamWrite>,
    /// A registration's credentials row, written in the same transaction.
    pub(crate) credentials: Option<(UserId, Email, String)>,
    pub(crate) outcome: Outcome,
    /// The state of every written stream once the writes commit (for the cache).
    pub(crate) after: Vec<(StreamId, State)>,
}

/// `(stream, version)` of every stream a decision read.
pub(crate) type Reads = Vec<(String, i64)>;

/// A [`Load`] that notes the version of every stream it reads, so that a rejection can be
/// checked against a consistent view and the committer can check an acceptance.
pub(crate) struct Reader<'r, L> {
    from: L,
    reads: &'r mut Reads,
}

impl<L: Load> Reader<'_, L> {
    pub(crate) async fn get<T: Aggregated>(
        &mut self,
        stream: StreamId,
    ) -> Result<Versioned<T>, CommandError> {
        let v = self.from.load::<T>(&stream).await?;
        self.reads
            .push((stream.as_str().to_owned(), v.version as i64));
        Ok(v)
    }
}

/// The revenue account of a contract's currency, loaded only for a contract with a fee: a
/// contract without one never reads (so never contends on) the revenue stream.
pub(crate) async fn revenue_for<L: Load>(
    r: &mut Reader<'_, L>,
    c: &Contract,
) -> Result<Option<(StreamId, Versioned<Revenue>)>, CommandError> {
    if c.fee.is_none() {
        return Ok(None);
    }
    let stream = StreamId::revenue(RevenueId::of(c.currency.unwrap_or(Currency::USD)));
    let revenue = r.get::<Revenue>(stream.clone()).await?;
    Ok(Some((stream, revenue)))
}

/// Decides `cmd` from the states `from` gives, noting every stream read in `reads`.
pub(crate) async fn decide<L: Load>(
    cmd: &Command,
    from: L,
    reads: &mut Reads,
) -> Result<Plan, CommandError> {
    let mut r = Reader { from, reads };
    match cmd {
        Command::Register {
            user_id,
            email,
            password_hash,
        } => users::register(&mut r, *user_id, email, password_hash).await,
        Command::GrantRole { user_id, role } => users::grant_role(&mut r, *user_id, *role).await,
        Command::SuspendUser { user_id, reason } => {
            users::change_status(&mut r, *user_id, Some(reason)).await
        }
        Command::ReactivateUser { user_id } => users::change_status(&mut r, *user_id, None).await,
        Command::RecordActivity {
            actor,
            user_id,
            entry,
        } => users::record_activity(&mut r, *actor, *user_id, entry).await,
        Command::Deposit(d) => wallets::deposit(&mut r, d).await,
        Command::Withdraw(w) => wallets::withdraw(&mut r, w).await,
        Command::CreatePayin(c) => payins::create(&mut r, c).await,
        Command::ConfirmPayin {
            payin_id,
            actor,
            transaction_id,
            now,
        } => payins::confirm(&mut r, *payin_id, *actor, *transaction_id, *now).await,
        Command::FailPayin {
            payin_id,
            actor,
            reason,
            now,
        } => payins::fail(&mut r, *payin_id, *actor, reason, *now).await,
        Command::RequestPayout(c) => payouts::request(&mut r, c).await,
        Command::ChangeWebhook(c) => webhooks::change(&mut r, c).await,
        Command::CompletePayout {
            payout_id,
            actor,
            provider_reference,
            now,
        } => payouts::complete(&mut r, *payout_id, *actor, provider_reference, *now).await,
        Command::FailPayout {
            payout_id,
            actor,
            reason,
            transaction_id,
            now,
        } => payouts::fail(&mut r, *payout_id, *actor, reason, *transaction_id, *now).await,
        Command::SetWalletFrozen {
            actor,
            user_id,
            currency,
            reason,
            now,
        } => {
            wallets::set_frozen(&mut r, *actor, *user_id, *currency, reason.as_deref(), *now).await
        }
        Command::Transfer(t) => wallets::transfer(&mut r, t).await,
        Command::CreateContract(c) => contracts::create(&mut r, c).await,
        Command::FundContract {
            contract_id,
            actor,
            transaction_id,
            now,
        } => contracts::fund(&mut r, *contract_id, *actor, *transaction_id, *now).await,
        Command::DeliverContract {
            contract_id,
            actor,
            milestone,
            now,
        } => contracts::deliver(&mut r, *contract_id, *actor, *milestone, *now).await,
        Command::ReleaseContract {
            contract_id,
            actor,
            milestone,
            amount,
            now,
            transaction_id,
        } => {
            let payout = (*milestone, *amount, *transaction_id);
            contracts::release(&mut r, *contract_id, *actor, payout, *now).await
        }
        Command::RefundContract {
            contract_id,
            actor,
            milestone,
            amount,
            transaction_id,
        } => {
            let payout = (*milestone, *amount, *transaction_id);
            contracts::refund(&mut r, *contract_id, *actor, payout).await
        }
        Command::CancelContract { contract_id, actor } => {
            contracts::cancel(&mut r, *contract_id, *actor).await
        }
        Command::ExpireContract { contract_id, now } => {
            contracts::expire(&mut r, *contract_id, *now).await
        }
        Command::RaiseDispute {
            dispute_id,
            contract_id,
            actor,
            description,
            now,
        } => disputes::raise(&mut r, *dispute_id, *contract_id, *actor, description, *now).await,
        Command::ResolveDispute {
            dispute_id,
            actor,
            decision,
        } => disputes::resolve(&mut r, *dispute_id, *actor, decision).await,
        Command::SetFeeSchedule {
            actor,
            currency,
            terms,
            now,
        } => platform::set_schedule(&mut r, *actor, *currency, *terms, *now).await,
        Command::WithdrawRevenue {
            actor,
            currency,
            amount,
            transaction_id,
        } => platform::withdraw(&mut r, *actor, *currency, *amount, *transaction_id).await,
    }
}

/// The state each written stream will have once the writes commit: the loaded state the
/// decision was based on (matched by stream), plus the new events.
pub(crate) fn after_states(
    writes: &[StreamWrite],
    loaded: Vec<(StreamId, State)>,
) -> Vec<(StreamId, State)> {
    writes
        .iter()
        .map(|w| {
            let mut state = loaded
                .iter()
                .find(|(s, _)| *s == w.stream)
                .map_or_else(|| State::empty_for(&w.stream), |(_, st)| st.clone());
            debug_assert_eq!(
                state.version(),
                w.expected_version,
                "decided from the loaded version"
            );
            for e in &w.events {
                state.apply(e);
            }
            (w.stream.clone(), state)
        })
        .collect()
}

/// One stream's state among `after`, if it is there.
pub(crate) fn state_after<T: Aggregated>(
    after: &[(StreamId, State)],
    stream: &StreamId,
) -> Option<T> {
    after
        .iter()
        .find(|(k, _)| k == stream)
        .and_then(|(_, s)| T::from_state(s))
        .map(|v| v.state)
}
