//! Disputes on a contract: raising one freezes it; an arbiter's resolution moves what it
//! holds to the seller and/or the buyer (fees applied as to any payment and refund) in the
//! same write.

use super::*;

/// Decides raising a dispute: a party, on an active contract without an open dispute.
pub fn raise_dispute(
    contract: &Versioned<Contract>,
    dispute_id: DisputeId,
    actor: UserId,
    description: &str,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = existing(contract)?;
    let c = &contract.state;
    if !c.is_party(actor) {
        return Err(DomainError::Forbidden("only a party may raise a dispute"));
    }
    let description = check_text(
        description,
        STATEMENT_CHARS_MAX,
        "description must be 1 to 2000 characters",
    )?;
    match c.status {
        ContractStatus::Active => {}
        ContractStatus::Disputed => {
            return Err(transition(
                "DISPUTE_ALREADY_OPEN",
                "the contract already has an open dispute",
            ))
        }
        other => {
            return Err(transition(
                "CONTRACT_NOT_ACTIVE",
                format!(
                    "only an ACTIVE contract can be disputed; this one is {}",
                    other.as_str()
                ),
            ))
        }
    }
    Ok(vec![
        StreamWrite {
            stream: StreamId::dispute(dispute_id),
            expected_version: 0,
            events: vec![Event::DisputeRaised {
                dispute_id,
                contract_id: id,
                raised_by: actor,
                description,
                raised_at: now,
            }],
        },
        StreamWrite {
            stream: StreamId::contract(id),
            expected_version: contract.version,
            events: vec![Event::ContractDisputed { dispute_id }],
        },
    ])
}

/// An arbiter's decision.
#[derive(Debug, Clone)]
pub struct ResolveDispute {
    /// The decision.
    pub outcome: DisputeOutcome,
    /// For `SPLIT`: paid to the seller.
    pub seller_amount: Option<Decimal>,
    /// For `SPLIT`: returned to the buyer.
    pub buyer_amount: Option<Decimal>,
    /// The reasoning (1 to 2000 characters).
    pub resolution: String,
    /// Id of the seller's payout movement.
    pub seller_transaction_id: TransactionId,
    /// Id of the buyer's refund movement.
    pub buyer_transaction_id: TransactionId,
    /// When the command is decided.
    pub now: Timestamp,
}

/// Decides a dispute's resolution: arbiter or admin, never a party; the money held moves
/// to the seller and/or the buyer in the same write.
pub fn resolve_dispute(
    dispute: &Versioned<Dispute>,
    contract: &Versioned<Contract>,
    seller_wallet: &Versioned<Wallet>,
    buyer_wallet: &Versioned<Wallet>,
    revenue: Option<&Versioned<Revenue>>,
    actor: Actor,
    cmd: &ResolveDispute,
) -> Result<Vec<StreamWrite>, DomainError> {
    let dispute_id = dispute.state.id.ok_or(DomainError::DisputeNotFound)?;
    let contract_id = existing(contract)?;
    let c = &contract.state;
    let arbiter = match actor {
        Actor::User {
            id,
            role: Role::Arbiter | Role::Admin,
        } => id,
        _ => {
            return Err(DomainError::Forbidden(
                "only an arbiter or an admin may resolve a dispute",
            ))
        }
    };
    if c.is_party(arbiter) {
        return Err(DomainError::Forbidden(
            "a party of the contract may not resolve its dispute",
        ));
    }
    if dispute.state.status == DisputeStatus::Resolved {
        return Err(transition(
            "DISPUTE_ALREADY_RESOLVED",
            "the dispute is already resolved",
        ));
    }
    if c.status != ContractStatus::Disputed || c.dispute != Some(dispute_id) {
        return Err(transition(
            "CONTRACT_NOT_DISPUTED",
            "the contract is not frozen by this dispute",
        ));
    }
    let resolution = check_text(
        &cmd.resolution,
        STATEMENT_CHARS_MAX,
        "resolution must be 1 to 2000 characters",
    )?;
    let currency = c.currency();
    let held = c.held;
    let (seller_amount, buyer_amount) = match cmd.outcome {
        DisputeOutcome::Release => (held, Decimal::ZERO),
        DisputeOutcome::Refund => (Decimal::ZERO, held),
        DisputeOutcome::Split => {
            let s = cmd.seller_amount.unwrap_or(Decimal::ZERO);
            let b = cmd.buyer_amount.unwrap_or(Decimal::ZERO);
            let scale_ok = |d: Decimal| d.normalize().scale() <= currency.minor_units();
            if s < Decimal::ZERO
                || b < Decimal::ZERO
                || !scale_ok(s)
                || !scale_ok(b)
                || s.checked_add(b) != Some(held)
            {
                return Err(DomainError::SplitMismatch {
                    held: currency.format(held),
                });
            }
            (s, b)
        }
    };
    let (mut s_rounded, mut b_rounded) = (seller_amount, buyer_amount);
    s_rounded.rescale(currency.minor_units());
    b_rounded.rescale(currency.minor_units());
    let seller = c.seller.ok_or(DomainError::ContractNotFound)?;
    let buyer = c.buyer.ok_or(DomainError::ContractNotFound)?;
    // The seller's part is a payment (its fee as any payment's), then the buyer's part a
    // refund of what is left (with its share of the prepaid fee).
    let fee = PaymentFee::of(c.fee.as_ref(), currency, c.paid, s_rounded);
    let returned = some_amount(fee_returned(
        c.fee.as_ref(),
        currency,
        c.paid + s_rounded,
        b_rounded,
        b_rounded,
    ))?;
    let mut writes = vec![
        StreamWrite {
            stream: StreamId::dispute(dispute_id),
            expected_version: dispute.version,
            events: vec![Event::DisputeResolved {
                dispute_id,
                resolved_by: arbiter,
                resolution,
                outcome: cmd.outcome,
                seller_amount: s_rounded,
                buyer_amount: b_rounded,
                resolved_at: cmd.now,
            }],
        },
        StreamWrite {
            stream: StreamId::contract(contract_id),
            expected_version: contract.version,
            events: vec![Event::ContractSettled {
                dispute_id,
                outcome: cmd.outcome,
                seller_amount: s_rounded,
                buyer_amount: b_rounded,
                seller_fee: some_amount(fee.seller)?,
                buyer_fee: some_amount(fee.buyer)?,
                fee_returned: returned,
            }],
        },
    ];
    if let Some(amount) = some_amount(s_rounded)? {
        let tx = cmd.seller_transaction_id;
        let mut events = Vec::with_capacity(3);
        let wallet_id =
            open_for_credit(seller_wallet, seller, currency, amount.value(), &mut events)?;
        events.push(Event::EscrowPaymentReceived {
            transaction_id: tx,
            contract_id,
            amount,
        });
        let collected = collect(revenue, contract_id, currency, tx, fee, &mut events)?;
        writes.push(StreamWrite {
            stream: StreamId::wallet(wallet_id),
            expected_version: seller_wallet.version,
            events,
        });
        writes.extend(collected);
    }
    if let Some(amount) = some_amount(b_rounded)? {
        let tx = cmd.buyer_transaction_id;
        let mut events = Vec::with_capacity(3);
        let wallet_id =
            open_for_credit(buyer_wallet, buyer, currency, amount.value(), &mut events)?;
        events.push(Event::EscrowRefundReceived {
            transaction_id: tx,
            contract_id,
            amount,
        });
        if let Some(fee) = returned {
            events.push(Event::FeeReturned {
                transaction_id: tx.fee(),
                contract_id,
                amount: fee,
            });
        }
        writes.push(StreamWrite {
            stream: StreamId::wallet(wallet_id),
            expected_version: buyer_wallet.version,
            events,
        });
    }
    Ok(writes)
}
