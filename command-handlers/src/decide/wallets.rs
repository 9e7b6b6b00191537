//! Deposits, withdrawals and transfers: wallet streams.

use chrono::Utc;
use domain::wallet::{self, Deposit, Transfer, Withdraw};
use domain::{
    Actor, Currency, DomainError, StreamId, StreamWrite, Timestamp, User, UserId, Wallet, WalletId,
};

use super::{after_states, state_after, Plan, Reader};
use crate::command::{CommandError, Outcome, WalletChange, WalletStatusChange};
use crate::load::{Load, State};

pub(super) async fn deposit<L: Load>(
    r: &mut Reader<'_, L>,
    d: &Deposit,
) -> Result<Plan, CommandError> {
    let wallet_id = WalletId::of(d.user_id, d.currency);
    let owner = r.get::<User>(StreamId::user(d.user_id)).await?;
    let w = r.get::<Wallet>(StreamId::wallet(wallet_id)).await?;
    let writes = wallet::deposit(&owner, &w, d)?;
    let loaded = vec![(StreamId::wallet(wallet_id), State::Wallet(w))];
    Ok(plan(
        writes,
        loaded,
        Movement {
            kind: "DEPOSIT",
            wallet_id,
            user_id: d.user_id,
            currency: d.currency,
            from: None,
            to: Some(wallet_id),
            transaction_id: d.transaction_id,
            amount: d.amount.value(),
            description: d.description.as_ref().map(|s| s.as_str().to_owned()),
        },
    ))
}

pub(super) async fn withdraw<L: Load>(
    r: &mut Reader<'_, L>,
    d: &Withdraw,
) -> Result<Plan, CommandError> {
    let wallet_id = WalletId::of(d.user_id, d.currency);
    let w = r.get::<Wallet>(StreamId::wallet(wallet_id)).await?;
    let writes = wallet::withdraw(&w, d)?;
    let loaded = vec![(StreamId::wallet(wallet_id), State::Wallet(w))];
    Ok(plan(
        writes,
        loaded,
        Movement {
            kind: "WITHDRAWAL",
            wallet_id,
            user_id: d.user_id,
            currency: d.currency,
            from: Some(wallet_id),
            to: None,
            transaction_id: d.transaction_id,
            amount: d.amount.value(),
            description: d.description.as_ref().map(|s| s.as_str().to_owned()),
        },
    ))
}

pub(super) async fn transfer<L: Load>(
    r: &mut Reader<'_, L>,
    t: &Transfer,
) -> Result<Plan, CommandError> {
    let from = WalletId::of(t.from_user_id, t.currency);
    let to = WalletId::of(t.to_user_id, t.currency);
    if from == to {
        return Err(DomainError::SelfTransfer.into());
    }
    let payer = r.get::<Wallet>(StreamId::wallet(from)).await?;
    let payee = r.get::<User>(StreamId::user(t.to_user_id)).await?;
    let payee_wallet = r.get::<Wallet>(StreamId::wallet(to)).await?;
    let writes = wallet::transfer(&payer, &payee, &payee_wallet, t)?;
    let loaded = vec![
        (StreamId::wallet(from), State::Wallet(payer)),
        (StreamId::wallet(to), State::Wallet(payee_wallet)),
    ];
    Ok(plan(
        writes,
        loaded,
        Movement {
            kind: "TRANSFER",
            wallet_id: from,
            user_id: t.from_user_id,
            currency: t.currency,
            from: Some(from),
            to: Some(to),
            transaction_id: t.transaction_id,
            amount: t.amount.value(),
            description: t.description.as_ref().map(|s| s.as_str().to_owned()),
        },
    ))
}

/// A money command as its caller sees it: which of its wallets, and what moved.
struct Movement {
    /// `DEPOSIT`, `WITHDRAWAL` or `TRANSFER`.
    kind: &'static str,
    wallet_id: WalletId,
    user_id: UserId,
    currency: Currency,
    from: Option<WalletId>,
    to: Option<WalletId>,
    transaction_id: domain::TransactionId,
    amount: rust_decimal::Decimal,
    description: Option<String>,
}

fn plan(writes: Vec<StreamWrite>, loaded: Vec<(StreamId, State)>, m: Movement) -> Plan {
    let after = after_states(&writes, loaded);
    let balance = state_after::<Wallet>(&after, &StreamId::wallet(m.wallet_id))
        .map(|w| w.balance)
        .unwrap_or_default();
    Plan {
        writes,
        credentials: None,
        after,
        outcome: Outcome::Wallet(WalletChange {
            transaction_id: m.transaction_id,
            kind: m.kind.to_owned(),
            from_wallet_id: m.from,
            to_wallet_id: m.to,
            amount: m.amount,
            currency: m.currency,
            description: m.description,
            wallet_id: m.wallet_id,
            user_id: m.user_id,
            balance,
            recorded_at: Utc::now(),
        }),
    }
}

/// An admin freezes `user`'s wallet in `currency` (`reason`), or lifts its freeze (`None`).
pub(super) async fn set_frozen<L: Load>(
    r: &mut Reader<'_, L>,
    actor: Actor,
    user: UserId,
    currency: Currency,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    let wallet_id = WalletId::of(user, currency);
    let stream = StreamId::wallet(wallet_id);
    let w = r.get::<Wallet>(stream.clone()).await?;
    let writes = match reason {
        Some(reason) => wallet::freeze(&w, actor, currency, reason, now)?,
        None => wallet::unfreeze(&w, actor, currency, now)?,
    };
    let after = after_states(&writes, vec![(stream.clone(), State::Wallet(w))]);
    let state = state_after::<Wallet>(&after, &stream).unwrap_or_default();
    Ok(Plan {
        outcome: Outcome::WalletStatus(WalletStatusChange {
            wallet_id,
            user_id: user,
            currency,
            balance: state.balance,
            frozen: state.frozen,
            recorded_at: Utc::now(),
        }),
        writes,
        credentials: None,
        after,
    })
}
