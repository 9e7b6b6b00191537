//! Money out of a contract's escrow before any dispute: a release to the seller (by the
//! buyer, or by the system once the inspection window ends) and a refund to the buyer (by
//! the seller), each with its fee movements.

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

/// Decides a release to the seller: by the buyer (all or part of what is held), or by the
/// system once the inspection window has expired (everything held).
pub fn release(
    contract: &Versioned<Contract>,
    seller_wallet: &Versioned<Wallet>,
    revenue: Option<&Versioned<Revenue>>,
    actor: Actor,
    amount: Option<Amount>,
    now: Timestamp,
    transaction_id: TransactionId,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = existing(contract)?;
    let c = &contract.state;
    let automatic = match actor {
        Actor::User { id: u, .. } if c.buyer == Some(u) => false,
        Actor::User { .. } => {
            return Err(DomainError::Forbidden("only the buyer may release funds"))
        }
        Actor::System => true,
    };
    require_active(c, "release")?;
    if automatic && c.auto_release_at.is_none_or(|t| t > now) {
        return Err(transition(
            "NOT_DUE",
            "the inspection window has not expired",
        ));
    }
    let amount = payout_amount(c, if automatic { None } else { amount })?;
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

/// Decides a refund to the buyer, by the seller (all or part of what is held).
pub fn refund(
    contract: &Versioned<Contract>,
    buyer_wallet: &Versioned<Wallet>,
    actor: UserId,
    amount: Option<Amount>,
    transaction_id: TransactionId,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = existing(contract)?;
    let c = &contract.state;
    if c.seller != Some(actor) {
        return Err(DomainError::Forbidden("only the seller may refund"));
    }
    require_active(c, "refund")?;
    let amount = payout_amount(c, amount)?;
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
            }],
        },
        StreamWrite {
            stream: StreamId::wallet(wallet_id),
            expected_version: buyer_wallet.version,
            events: wallet_events,
        },
    ])
}
