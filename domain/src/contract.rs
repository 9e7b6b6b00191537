//! The escrow contract aggregate and every decision that moves its money.
//!
//! Past 600 lines: the aggregate, its fold and every transition's decision are one
//! state machine, read best in one place (the disputes' decisions move contract money).
//!
//! Lifecycle: `DRAFT` → fund (buyer) → `ACTIVE` → release (buyer, or the system when the
//! inspection window expires) → `COMPLETED`; refund (seller) → `REFUNDED`; cancel (a party,
//! draft only) → `CANCELLED`; not funded by `fundBy` (the system) → `EXPIRED`; dispute (a party, active) → `DISPUTED` → resolve (arbiter or
//! admin, never a party) → `COMPLETED`/`REFUNDED`/`SETTLED`.
//!
//! Every decision that moves money returns writes for the contract stream *and* every
//! wallet stream it touches, each at the version it was decided from.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::dispute::{Dispute, DisputeOutcome, DisputeStatus};
use crate::error::DomainError;
use crate::event::Event;
use crate::fees::{collect, fee_returned, some_amount, FeeSchedule, FeeTerms, PaymentFee, Revenue};
use crate::ids::{ContractId, DisputeId, Timestamp, TransactionId, UserId};
use crate::money::{Amount, Currency};
use crate::stream::{Aggregate, StreamId, StreamWrite, Versioned};
use crate::text::Description;
use crate::user::{Role, User};
use crate::wallet::{open_for_credit, Wallet};

/// Longest contract title, in characters.
pub const TITLE_CHARS_MAX: usize = 200;
/// Longest dispute description or resolution, in characters.
pub const STATEMENT_CHARS_MAX: usize = 2_000;
/// Longest inspection window, in hours (one year).
pub const INSPECTION_HOURS_MAX: u32 = 24 * 366;
/// Furthest a funding deadline may lie ahead, in days (one year, leap day included).
pub const FUND_BY_DAYS_MAX: u32 = 366;

/// Where a contract is in its lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContractStatus {
    /// Created, not funded.
    #[default]
    Draft,
    /// Funded: money held.
    Active,
    /// Frozen by an open dispute.
    Disputed,
    /// Everything held was paid to the seller.
    Completed,
    /// Everything held went back to the buyer.
    Refunded,
    /// A dispute split the money.
    Settled,
    /// Called off before funding.
    Cancelled,
    /// Not funded by its deadline.
    Expired,
}

impl ContractStatus {
    /// Where an arbiter's decision leaves a disputed contract.
    pub fn settled(outcome: DisputeOutcome) -> Self {
        match outcome {
            DisputeOutcome::Release => ContractStatus::Completed,
            DisputeOutcome::Refund => ContractStatus::Refunded,
            DisputeOutcome::Split => ContractStatus::Settled,
        }
    }

    /// The JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ContractStatus::Draft => "DRAFT",
            ContractStatus::Active => "ACTIVE",
            ContractStatus::Disputed => "DISPUTED",
            ContractStatus::Completed => "COMPLETED",
            ContractStatus::Refunded => "REFUNDED",
            ContractStatus::Settled => "SETTLED",
            ContractStatus::Cancelled => "CANCELLED",
            ContractStatus::Expired => "EXPIRED",
        }
    }

    /// Parses a JSON name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            ContractStatus::Draft,
            ContractStatus::Active,
            ContractStatus::Disputed,
            ContractStatus::Completed,
            ContractStatus::Refunded,
            ContractStatus::Settled,
            ContractStatus::Cancelled,
            ContractStatus::Expired,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// State of one contract, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contract {
    /// Set once created.
    pub id: Option<ContractId>,
    /// Who pays.
    pub buyer: Option<UserId>,
    /// Who gets paid.
    pub seller: Option<UserId>,
    /// The price.
    pub amount: Decimal,
    /// Its currency.
    pub currency: Option<Currency>,
    /// What the escrow account holds now.
    pub held: Decimal,
    /// Lifecycle status.
    pub status: ContractStatus,
    /// Hours the buyer has after delivery.
    pub inspection_period_hours: Option<u32>,
    /// When the seller delivered.
    pub delivered_at: Option<Timestamp>,
    /// When held funds release by themselves.
    pub auto_release_at: Option<Timestamp>,
    /// A draft not funded by then expires.
    #[serde(default)]
    pub fund_by: Option<Timestamp>,
    /// The platform fee it copied when it was created. (This and the three below default
    /// when absent, so outcomes stored before fees existed still read.)
    #[serde(default)]
    pub fee: Option<FeeTerms>,
    /// Paid to the seller so far, fees included (what the fee is computed on).
    #[serde(default)]
    pub paid: Decimal,
    /// The buyer's prepaid fee still held in escrow beside `held`.
    #[serde(default)]
    pub fee_held: Decimal,
    /// Fees collected so far, both shares.
    #[serde(default)]
    pub fee_charged: Decimal,
    /// The open (or last) dispute.
    pub dispute: Option<DisputeId>,
    /// Title.
    pub title: String,
    /// Terms.
    pub description: Option<Description>,
    /// When it was drafted.
    pub created_at: Option<Timestamp>,
}

impl Contract {
    fn is_party(&self, u: UserId) -> bool {
        self.buyer == Some(u) || self.seller == Some(u)
    }

    fn currency(&self) -> Currency {
        self.currency.unwrap_or(Currency::USD)
    }
}

impl Aggregate for Contract {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::ContractCreated {
                contract_id,
                buyer_id,
                seller_id,
                amount,
                currency,
                inspection_period_hours,
                fund_by,
                fee,
                title,
                description,
                created_at,
                ..
            } => {
                self.fund_by = *fund_by;
                self.fee = *fee;
                self.title = title.clone();
                self.description = description.clone();
                self.created_at = Some(*created_at);
                self.id = Some(*contract_id);
                self.buyer = Some(*buyer_id);
                self.seller = Some(*seller_id);
                self.amount = amount.value();
                self.currency = Some(*currency);
                self.inspection_period_hours = *inspection_period_hours;
                self.status = ContractStatus::Draft;
            }
            Event::ContractFunded {
                amount, fee_held, ..
            } => {
                // Saturating, as `Wallet::apply` is: only a tampered store gets near it.
                self.held = self.held.saturating_add(amount.value());
                self.fee_held = self.fee_held.saturating_add(value(fee_held));
                self.status = ContractStatus::Active;
            }
            Event::ContractDelivered {
                delivered_at,
                auto_release_at,
            } => {
                self.delivered_at = Some(*delivered_at);
                self.auto_release_at = *auto_release_at;
            }
            Event::ContractReleased {
                amount,
                seller_fee,
                buyer_fee,
                ..
            } => {
                self.held = self.held.saturating_sub(amount.value());
                self.paid = self.paid.saturating_add(amount.value());
                self.fee_held = self.fee_held.saturating_sub(value(buyer_fee));
                self.fee_charged = self
                    .fee_charged
                    .saturating_add(value(seller_fee))
                    .saturating_add(value(buyer_fee));
                if self.held.is_zero() {
                    self.status = ContractStatus::Completed;
                    self.auto_release_at = None;
                }
            }
            Event::ContractRefunded {
                amount,
                fee_returned,
                ..
            } => {
                self.held = self.held.saturating_sub(amount.value());
                self.fee_held = self.fee_held.saturating_sub(value(fee_returned));
                if self.held.is_zero() {
                    self.status = ContractStatus::Refunded;
                    self.auto_release_at = None;
                }
            }
            Event::ContractCancelled { .. } => self.status = ContractStatus::Cancelled,
            Event::ContractExpired { .. } => self.status = ContractStatus::Expired,
            Event::ContractDisputed { dispute_id } => {
                self.status = ContractStatus::Disputed;
                self.dispute = Some(*dispute_id);
            }
            Event::ContractSettled {
                outcome,
                seller_amount,
                seller_fee,
                buyer_fee,
                fee_returned,
                ..
            } => {
                self.held = Decimal::ZERO;
                self.paid = self.paid.saturating_add(*seller_amount);
                self.fee_held = self
                    .fee_held
                    .saturating_sub(value(buyer_fee))
                    .saturating_sub(value(fee_returned));
                self.fee_charged = self
                    .fee_charged
                    .saturating_add(value(seller_fee))
                    .saturating_add(value(buyer_fee));
                self.auto_release_at = None;
                self.status = ContractStatus::settled(*outcome);
            }
            _ => {}
        }
        // Not asserted to stay at or above zero: folding takes what a tampered store says,
        // so that `verify` names it (see `Wallet::apply`).
    }
}

fn value(a: &Option<Amount>) -> Decimal {
    a.map_or(Decimal::ZERO, |a| a.value())
}

fn transition(code: &'static str, detail: impl Into<String>) -> DomainError {
    DomainError::InvalidTransition {
        code,
        detail: detail.into(),
    }
}

fn check_text(raw: &str, max: usize, what: &'static str) -> Result<String, DomainError> {
    let s = raw.trim();
    if s.is_empty()
        || s.chars().count() > max
        || s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(DomainError::InvalidText(what));
    }
    Ok(s.to_owned())
}

/// Draft a contract.
#[derive(Debug, Clone)]
pub struct CreateContract {
    /// The id minted for it.
    pub contract_id: ContractId,
    /// Who drafts it (must be the buyer or the seller).
    pub actor: UserId,
    /// Who pays.
    pub buyer_id: UserId,
    /// Who gets paid.
    pub seller_id: UserId,
    /// Title (1 to 200 characters).
    pub title: String,
    /// Terms.
    pub description: Option<Description>,
    /// Price.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// Inspection window after delivery, in hours.
    pub inspection_period_hours: Option<u32>,
    /// Funding deadline: after `now`, at most [`FUND_BY_DAYS_MAX`] days ahead.
    pub fund_by: Option<Timestamp>,
    /// When the command is decided.
    pub now: Timestamp,
}

/// Decides a contract's creation. It copies the fee schedule in force for its currency;
/// later changes of the schedule never alter it.
pub fn create(
    existing: &Versioned<Contract>,
    buyer: &Versioned<User>,
    seller: &Versioned<User>,
    schedule: &FeeSchedule,
    cmd: &CreateContract,
) -> Result<Vec<StreamWrite>, DomainError> {
    let title = check_text(
        &cmd.title,
        TITLE_CHARS_MAX,
        "title must be 1 to 200 characters without control characters",
    )?;
    if cmd
        .inspection_period_hours
        .is_some_and(|h| h == 0 || h > INSPECTION_HOURS_MAX)
    {
        return Err(DomainError::InvalidText(
            "inspectionPeriodHours must be from 1 to 8784",
        ));
    }
    if let Some(fund_by) = cmd.fund_by {
        if fund_by <= cmd.now {
            return Err(DomainError::InvalidFundBy("fundBy must be in the future"));
        }
        if fund_by > cmd.now.plus_days(FUND_BY_DAYS_MAX) {
            return Err(DomainError::InvalidFundBy(
                "fundBy must be at most a year (366 days) ahead",
            ));
        }
    }
    if cmd.buyer_id == cmd.seller_id {
        return Err(DomainError::SameParties);
    }
    if cmd.actor != cmd.buyer_id && cmd.actor != cmd.seller_id {
        return Err(DomainError::Forbidden(
            "only the buyer or the seller may create a contract",
        ));
    }
    if !buyer.state.exists() || !seller.state.exists() {
        return Err(DomainError::UnknownUser);
    }
    if existing.version > 0 {
        return Err(transition("CONTRACT_EXISTS", "the contract already exists"));
    }
    Ok(vec![StreamWrite {
        stream: StreamId::contract(cmd.contract_id),
        expected_version: 0,
        events: vec![Event::ContractCreated {
            contract_id: cmd.contract_id,
            buyer_id: cmd.buyer_id,
            seller_id: cmd.seller_id,
            title,
            description: cmd.description.clone(),
            amount: cmd.amount,
            currency: cmd.currency,
            inspection_period_hours: cmd.inspection_period_hours,
            fund_by: cmd.fund_by,
            fee: schedule
                .terms
                .filter(|_| schedule.currency == Some(cmd.currency)),
            created_by: cmd.actor,
            created_at: cmd.now,
        }],
    }])
}

fn existing(contract: &Versioned<Contract>) -> Result<ContractId, DomainError> {
    contract.state.id.ok_or(DomainError::ContractNotFound)
}

fn require_active(c: &Contract, what: &str) -> Result<(), DomainError> {
    match c.status {
        ContractStatus::Active => Ok(()),
        ContractStatus::Disputed => Err(transition(
            "CONTRACT_DISPUTED",
            format!("cannot {what}: the contract is frozen by an open dispute"),
        )),
        other => Err(transition(
            "CONTRACT_NOT_ACTIVE",
            format!("cannot {what} a contract that is {}", other.as_str()),
        )),
    }
}

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

/// Decides a delivery: starts the inspection window, if the contract has one.
pub fn deliver(
    contract: &Versioned<Contract>,
    actor: UserId,
    now: Timestamp,
) -> Result<Vec<StreamWrite>, DomainError> {
    let id = existing(contract)?;
    let c = &contract.state;
    if c.seller != Some(actor) {
        return Err(DomainError::Forbidden(
            "only the seller may mark a contract delivered",
        ));
    }
    require_active(c, "deliver")?;
    if c.delivered_at.is_some() {
        return Err(transition(
            "ALREADY_DELIVERED",
            "the contract is already marked delivered",
        ));
    }
    Ok(vec![StreamWrite {
        stream: StreamId::contract(id),
        expected_version: contract.version,
        events: vec![Event::ContractDelivered {
            delivered_at: now,
            auto_release_at: c.inspection_period_hours.map(|h| now.plus_hours(h)),
        }],
    }])
}

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
