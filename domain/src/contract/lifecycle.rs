//! A contract's life before money leaves escrow: funding (before the deadline, if any),
//! delivery (of the whole contract or one milestone), cancellation of a draft and the
//! system's expiry of an unfunded one.

use super::*;

/// Decides a funding: the buyer's wallet pays the full price into escrow, before the
/// contract's funding deadline if it has one.
pub fn fund(
    contract: &Versioned<Contract>,
    buyer_wallet: &Versioned<Wallet>,
    actor: UserId,
    transaction_id: TransactionId,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = existing(contract)?;
    let c = &contract.state;
    if c.buyer != Some(actor) {
        return Err(DomainError::Forbidden("only the buyer may fund a contract"));
    }
    if c.status != ContractStatus::Draft {
        return Err(transition(
            "CONTRACT_NOT_DRAFT",
            format!(
                "only a DRAFT contract can be funded; this one is {}",
                c.status.as_str()
            ),
        ));
    }
    if c.fund_by.is_some_and(|t| now >= t) {
        return Err(transition(
            "FUNDING_DEADLINE_PASSED",
            "the contract's fundBy deadline has passed",
        ));
    }
    let currency = c.currency();
    let wallet_id = buyer_wallet
        .state
        .id
        .ok_or(DomainError::WalletNotFound(currency))?;
    crate::wallet::require_unfrozen(&buyer_wallet.state, currency)?;
    let amount = Amount::try_from(c.amount)?;
    // The buyer's share of the fee on the whole price, prepaid beside it.
    let prepaid = c
        .fee
        .map_or(Decimal::ZERO, |t| t.buyer_share(currency, c.amount));
    // At most twice Amount::MAX: far from any Decimal bound.
    let total = c.amount.saturating_add(prepaid);
    if buyer_wallet.state.balance < total {
        return Err(DomainError::InsufficientFunds {
            balance: currency.format(buyer_wallet.state.balance),
            requested: currency.format(total),
        });
    }
    let fee_held = some_amount(prepaid)?;
    let mut wallet_events = vec![Event::EscrowHeld {
        transaction_id,
        contract_id: id,
        amount,
    }];
    if let Some(fee) = fee_held {
        wallet_events.push(Event::FeeHeld {
            transaction_id: transaction_id.fee(),
            contract_id: id,
            amount: fee,
        });
    }
    Ok(vec![
        StreamWrite {
            stream: StreamId::contract(id),
            expected_version: contract.version,
            events: vec![Event::ContractFunded {
                transaction_id,
                amount,
                fee_held,
            }],
        },
        StreamWrite {
            stream: StreamId::wallet(wallet_id),
            expected_version: buyer_wallet.version,
            events: wallet_events,
        },
    ])
}

/// Decides a delivery of milestone `n`, or of every milestone not delivered yet: each
/// starts its own inspection window, if it has one.
pub fn deliver(
    contract: &Versioned<Contract>,
    actor: UserId,
    milestone: Option<u16>,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = existing(contract)?;
    let c = &contract.state;
    if c.seller != Some(actor) {
        return Err(DomainError::Forbidden(
            "only the seller may mark a contract delivered",
        ));
    }
    let targets: Vec<&Milestone> = match milestone {
        Some(n) => {
            let m = open_milestone(c, n, "deliver")?;
            if m.status != MilestoneStatus::Pending {
                return Err(transition(
                    "ALREADY_DELIVERED",
                    format!("milestone {n} is already marked delivered"),
                ));
            }
            vec![m]
        }
        None => {
            require_active(c, "deliver")?;
            c.milestones.undelivered().collect()
        }
    };
    if targets.is_empty() {
        return Err(transition(
            "ALREADY_DELIVERED",
            "the contract is already marked delivered",
        ));
    }
    let events = targets
        .into_iter()
        .map(|m| Event::ContractDelivered {
            delivered_at: now,
            auto_release_at: m.inspection_period_hours.map(|h| now.plus_hours(h)),
            milestone: c.milestones.reference(m.number),
        })
        .collect();
    Ok(vec![StreamWrite {
        stream: StreamId::contract(id),
        expected_version: contract.version,
        events,
    }])
}

/// Decides a cancellation: a party, draft only.
pub fn cancel(
    contract: &Versioned<Contract>,
    actor: UserId,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = existing(contract)?;
    let c = &contract.state;
    if !c.is_party(actor) {
        return Err(DomainError::Forbidden("only a party may cancel a contract"));
    }
    if c.status != ContractStatus::Draft {
        return Err(transition(
            "CONTRACT_NOT_DRAFT",
            format!(
                "only a DRAFT contract can be cancelled; this one is {}",
                c.status.as_str()
            ),
        ));
    }
    Ok(vec![StreamWrite {
        stream: StreamId::contract(id),
        expected_version: contract.version,
        events: vec![Event::ContractCancelled {
            cancelled_by: actor,
        }],
    }])
}

/// Decides a draft's expiry: the system, once the funding deadline has passed. Refused for
/// a contract that is no longer a draft or whose deadline has not come, so that any number
/// of schedulers expire a draft once.
pub fn expire(
    contract: &Versioned<Contract>,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = existing(contract)?;
    let c = &contract.state;
    if c.status != ContractStatus::Draft {
        return Err(transition(
            "CONTRACT_NOT_DRAFT",
            format!(
                "only a DRAFT contract expires; this one is {}",
                c.status.as_str()
            ),
        ));
    }
    if c.fund_by.is_none_or(|t| now < t) {
        return Err(transition(
            "FUNDING_DEADLINE_NOT_PASSED",
            "the contract's fundBy deadline has not passed",
        ));
    }
    Ok(vec![StreamWrite {
        stream: StreamId::contract(id),
        expected_version: contract.version,
        events: vec![Event::ContractExpired { expired_at: now }],
    }])
}
