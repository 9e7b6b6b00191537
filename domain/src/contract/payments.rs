//! Money out of a contract's escrow before any dispute: a release to the seller (by the
//! buyer, or by the system once the inspection window ends) and a refund to the buyer (by
//! the seller), each with its fee movements: of the contract as a whole, or of one
//! milestone.

use super::*;

fn payout_amount(c: &Contract, requested: Option<Amount>) -> Result<Amount, DomainError> {
    let currency = c.currency();
    let amount = match requested {
        Some(a) => a,
        None => Amount::try_from(c.held)?,
    };
    if amount.value() > c.held {
        return Err(DomainError::ExceedsHeld {
            held: currency.format(c.held),
            requested: currency.format(amount.value()),
        });
    }
    Ok(amount)
}

/// What a payment takes from escrow and which milestone it names: milestone `n`'s whole
/// held amount, or `requested` (everything held when absent) of the contract as a whole.
fn payment(
    c: &Contract,
    milestone: Option<u16>,
    requested: Option<Amount>,
    what: &str,
) -> Result<(Amount, Option<u16>), DomainError> {
    match milestone {
        Some(n) => {
            let m = open_milestone(c, n, what)?;
            Ok((Amount::try_from(m.held_amount)?, c.milestones.reference(n)))
        }
        None => {
            require_active(c, what)?;
            Ok((payout_amount(c, requested)?, None))
        }
    }
}

/// A release or refund: of milestone `n`, or of the contract as a whole (all or part of what
/// is held).
#[derive(Debug, Clone, Copy)]
pub struct Payout {
    /// The milestone; the contract as a whole when absent.
    pub milestone: Option<u16>,
    /// How much, for the contract as a whole; everything held when absent.
    pub amount: Option<Amount>,
    /// The movement's id.
    pub transaction_id: TransactionId,
}

/// Decides a release to the seller: by the buyer (a milestone, or all or part of what is
/// held), or by the system once a milestone's inspection window has expired (the first
/// such milestone, everything it holds).
pub fn release(
    contract: &Versioned<Contract>,
    seller_wallet: &Versioned<Wallet>,
    revenue: Option<&Versioned<Revenue>>,
    actor: Actor,
    payout: Payout,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = existing(contract)?;
    let c = &contract.state;
    let transaction_id = payout.transaction_id;
    let (amount, milestone) = match actor {
        Actor::User { id: u, .. } if c.buyer == Some(u) => {
            payment(c, payout.milestone, payout.amount, "release")?
        }
        Actor::User { .. } => {
            return Err(DomainError::Forbidden("only the buyer may release funds"))
        }
        Actor::System => {
            require_active(c, "release")?;
            let due = c
                .milestones
                .due(now)
                .ok_or_else(|| transition("NOT_DUE", "the inspection window has not expired"))?;
            payment(c, Some(due.number), None, "release")?
        }
    };
    let automatic = actor == Actor::System;
    let currency = c.currency();
    let seller = c.seller.ok_or(DomainError::ContractNotFound)?;
    let mut wallet_events = Vec::with_capacity(2);
    let wallet_id = open_for_credit(
        seller_wallet,
        seller,
        currency,
        amount.value(),
        &mut wallet_events,
    )?;
    wallet_events.push(Event::EscrowPaymentReceived {
        transaction_id,
        contract_id: id,
        amount,
    });
    let fee = PaymentFee::of(c.fee.as_ref(), currency, c.paid, amount.value());
    let collected = collect(
        revenue,
        id,
        currency,
        transaction_id,
        fee,
        &mut wallet_events,
    )?;
    let mut writes = vec![
        StreamWrite {
            stream: StreamId::contract(id),
            expected_version: contract.version,
            events: vec![Event::ContractReleased {
                transaction_id,
                amount,
                automatic,
                seller_fee: some_amount(fee.seller)?,
                buyer_fee: some_amount(fee.buyer)?,
                milestone,
            }],
        },
        StreamWrite {
            stream: StreamId::wallet(wallet_id),
            expected_version: seller_wallet.version,
            events: wallet_events,
        },
    ];
    writes.extend(collected);
    Ok(writes)
}

/// Decides a refund to the buyer, by the seller (a milestone, or all or part of what is
/// held).
pub fn refund(
    contract: &Versioned<Contract>,
    buyer_wallet: &Versioned<Wallet>,
    actor: UserId,
    payout: Payout,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = existing(contract)?;
    let c = &contract.state;
    let transaction_id = payout.transaction_id;
    if c.seller != Some(actor) {
        return Err(DomainError::Forbidden("only the seller may refund"));
    }
    let (amount, milestone) = payment(c, payout.milestone, payout.amount, "refund")?;
    let buyer = c.buyer.ok_or(DomainError::ContractNotFound)?;
    let mut wallet_events = Vec::with_capacity(2);
    let wallet_id = open_for_credit(
        buyer_wallet,
        buyer,
        c.currency(),
        amount.value(),
        &mut wallet_events,
    )?;
    wallet_events.push(Event::EscrowRefundReceived {
        transaction_id,
        contract_id: id,
        amount,
    });
    let returned = some_amount(fee_returned(
        c.fee.as_ref(),
        c.currency(),
        c.paid,
        c.held,
        amount.value(),
    ))?;
    if let Some(fee) = returned {
        wallet_events.push(Event::FeeReturned {
            transaction_id: transaction_id.fee(),
            contract_id: id,
            amount: fee,
        });
    }
    Ok(vec![
        StreamWrite {
            stream: StreamId::contract(id),
            expected_version: contract.version,
            events: vec![Event::ContractRefunded {
                transaction_id,
                amount,
                fee_returned: returned,
                milestone,
            }],
        },
        StreamWrite {
            stream: StreamId::wallet(wallet_id),
            expected_version: buyer_wallet.version,
            events: wallet_events,
        },
    ])
}
