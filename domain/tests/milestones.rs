//! Given events → when command → then events (or a rejection), for a contract's milestones,
//! and the upcasting of contracts recorded before milestones existed.

use domain::contract::{self, CreateContract, MilestoneStatus, MilestoneTerms, Payout};
use domain::{
    Actor, Amount, Contract, ContractId, ContractStatus, Currency, DisputeId, DomainError, Email,
    Event, FeePayer, FeeSchedule, FeeTerms, Role, StreamWrite, Timestamp, TransactionId, User,
    UserId, Versioned, Wallet, WalletId,
};
use rust_decimal::Decimal;

const HOUR_MS: i64 = 3_600_000;

fn usd(s: &str) -> Amount {
    Amount::parse(s, Currency::USD).expect("valid")
}

fn dec(s: &str) -> Decimal {
    usd(s).value()
}

fn user(id: UserId) -> Versioned<User> {
    Versioned::from_events(&[Event::UserRegistered {
        user_id: id,
        email: Email::parse("x@example.com").expect("valid"),
        role: Role::User,
    }])
}

/// An open wallet holding `balance` ("0": opened, nothing deposited).
fn wallet(owner: UserId, balance: &str) -> Versioned<Wallet> {
    let mut events = vec![Event::WalletOpened {
        wallet_id: WalletId::of(owner, Currency::USD),
        user_id: owner,
        currency: Currency::USD,
    }];
    if balance != "0" {
        events.push(Event::FundsDeposited {
            transaction_id: TransactionId::new_v7(),
            amount: usd(balance),
            description: None,
            channel: domain::DepositChannel::Api,
        });
    }
    Versioned::from_events(&events)
}

fn stage(title: &str, amount: &str, hours: Option<u32>) -> MilestoneTerms {
    MilestoneTerms {
        title: title.into(),
        amount: usd(amount),
        inspection_period_hours: hours,
    }
}

struct Deal {
    id: ContractId,
    buyer: UserId,
    seller: UserId,
}

impl Deal {
    fn new() -> Self {
        Deal {
            id: ContractId::new_v7(),
            buyer: UserId::new_v7(),
            seller: UserId::new_v7(),
        }
    }

    fn create(
        &self,
        amount: Option<&str>,
        milestones: Option<Vec<MilestoneTerms>>,
    ) -> Result<Vec<StreamWrite>, DomainError> {
        contract::create(
            &Versioned::default(),
            &user(self.buyer),
            &user(self.seller),
            &FeeSchedule::default(),
            &CreateContract {
                contract_id: self.id,
                actor: self.buyer,
                buyer_id: self.buyer,
                seller_id: self.seller,
                title: "Website".into(),
                description: None,
                amount: amount.map(usd),
                milestones,
                currency: Currency::USD,
                inspection_period_hours: Some(72),
                fund_by: None,
                now: Timestamp(0),
            },
        )
    }

    /// A funded contract of two milestones: design (400, 24 h) and build (600, the
    /// contract's 72 h), with a 2.5 % seller fee when `fee`.
    fn funded(&self, fee: bool) -> Versioned<Contract> {
        let mut created = self
            .create(
                None,
                Some(vec![
                    stage("Design", "400", Some(24)),
                    stage("Build", "600", None),
                ]),
            )
            .expect("created")
            .remove(0)
            .events;
        if let (Event::ContractCreated { fee: f, .. }, true) = (&mut created[0], fee) {
            *f = Some(FeeTerms {
                percent_bps: 250,
                minimum: None,
                maximum: None,
                payer: FeePayer::Seller,
            });
        }
        let c = Versioned::<Contract>::from_events(&created);
        let funding = contract::fund(
            &c,
            &wallet(self.buyer, "1000"),
            self.buyer,
            TransactionId::new_v7(),
            Timestamp(0),
        )
        .expect("funded");
        then(&c, &funding)
    }
}

/// The contract after the writes to its stream.
fn then(c: &Versioned<Contract>, writes: &[StreamWrite]) -> Versioned<Contract> {
    let mut c = c.clone();
    for e in &writes[0].events {
        c.apply(e);
    }
    c
}

fn code(e: Result<Vec<StreamWrite>, DomainError>) -> &'static str {
    e.expect_err("rejected").code()
}

fn whole(n: Option<u16>) -> Payout {
    Payout {
        milestone: n,
        amount: None,
        transaction_id: TransactionId::new_v7(),
    }
}

fn status(c: &Versioned<Contract>, n: u16) -> MilestoneStatus {
    c.state.milestones.get(n).expect("exists").status
}

#[test]
fn milestones_make_the_price_and_are_checked() {
    let d = Deal::new();
    let created = d
        .create(
            None,
            Some(vec![stage("A", "400", Some(24)), stage("B", "600", None)]),
        )
        .expect("created");
    let c = Versioned::<Contract>::from_events(&created[0].events);
    assert_eq!(c.state.amount, dec("1000"), "the price is the sum");
    let ms = &c.state.milestones.0;
    assert_eq!(ms.len(), 2);
    assert_eq!((ms[0].number, ms[0].amount), (1, dec("400")));
    assert_eq!(
        ms[1].inspection_period_hours,
        Some(72),
        "the contract's window"
    );
    assert!(d
        .create(Some("1000"), Some(vec![stage("A", "1000", None)]))
        .is_ok());

    assert_eq!(
        code(d.create(Some("999"), Some(vec![stage("A", "1000", None)]))),
        "MILESTONES_MISMATCH"
    );
    assert_eq!(code(d.create(None, Some(vec![]))), "INVALID_MILESTONES");
    let many = (0..51).map(|_| stage("x", "1", None)).collect();
    assert_eq!(code(d.create(None, Some(many))), "INVALID_MILESTONES");
    assert_eq!(
        code(d.create(None, Some(vec![stage("A", "1", Some(0))]))),
        "INVALID_MILESTONES"
    );
    assert_eq!(
        code(d.create(None, Some(vec![stage("  ", "1", None)]))),
        "INVALID_TEXT"
    );
    assert_eq!(code(d.create(None, None)), "INVALID_MILESTONES");
}

#[test]
fn each_milestone_is_delivered_released_and_refunded_on_its_own() {
    let d = Deal::new();
    let c = d.funded(false);
    assert_eq!(c.state.held, dec("1000"));
    assert_eq!(
        c.state.milestones.get(1).map(|m| m.held_amount),
        Some(dec("400"))
    );

    // Deliver milestone 1: its own 24 h window.
    let now = Timestamp(HOUR_MS);
    let delivered = contract::deliver(&c, d.seller, Some(1), now).expect("delivered");
    assert_eq!(
        delivered[0].events,
        vec![Event::ContractDelivered {
            delivered_at: now,
            auto_release_at: Some(Timestamp(25 * HOUR_MS)),
            milestone: Some(1),
        }]
    );
    let c = then(&c, &delivered);
    assert_eq!(status(&c, 1), MilestoneStatus::Delivered);
    assert_eq!(status(&c, 2), MilestoneStatus::Pending);
    assert_eq!(c.state.auto_release_at, Some(Timestamp(25 * HOUR_MS)));
    assert_eq!(
        code(contract::deliver(&c, d.seller, Some(1), now)),
        "ALREADY_DELIVERED"
    );
    assert_eq!(
        code(contract::deliver(&c, d.seller, Some(3), now)),
        "MILESTONE_NOT_FOUND"
    );
    assert_eq!(
        code(contract::deliver(&c, d.buyer, Some(2), now)),
        "FORBIDDEN"
    );

    // The buyer releases milestone 1: its 400, and only that.
    let sw = wallet(d.seller, "0");
    let released =
        contract::release(&c, &sw, None, buyer(&d), whole(Some(1)), now).expect("released");
    assert!(matches!(
        released[0].events[0],
        Event::ContractReleased { amount, milestone: Some(1), automatic: false, .. } if amount == usd("400")
    ));
    let c = then(&c, &released);
    assert_eq!(status(&c, 1), MilestoneStatus::Released);
    assert_eq!(c.state.held, dec("600"));
    assert_eq!(c.state.status, ContractStatus::Active);
    assert_eq!(
        c.state.auto_release_at, None,
        "milestone 1's window is gone"
    );
    assert_eq!(
        code(contract::release(
            &c,
            &sw,
            None,
            buyer(&d),
            whole(Some(1)),
            now
        )),
        "MILESTONE_CLOSED",
        "released twice"
    );
    assert_eq!(
        code(contract::release(
            &c,
            &sw,
            None,
            Actor::User {
                id: d.seller,
                role: Role::User
            },
            whole(Some(2)),
            now
        )),
        "FORBIDDEN"
    );
    assert_eq!(
        code(contract::deliver(&c, d.seller, Some(1), now)),
        "MILESTONE_CLOSED"
    );

    // The seller refunds milestone 2: a mix of released and refunded ends COMPLETED.
    let bw = wallet(d.buyer, "0");
    assert_eq!(
        code(contract::refund(&c, &bw, d.buyer, whole(Some(2)))),
        "FORBIDDEN"
    );
    let refunded = contract::refund(&c, &bw, d.seller, whole(Some(2))).expect("refunded");
    assert!(matches!(
        refunded[0].events[0],
        Event::ContractRefunded { amount, milestone: Some(2), .. } if amount == usd("600")
    ));
    let c = then(&c, &refunded);
    assert_eq!(status(&c, 2), MilestoneStatus::Refunded);
    assert_eq!(c.state.status, ContractStatus::Completed);
    assert_eq!(
        code(contract::refund(&c, &bw, d.seller, whole(Some(2)))),
        "CONTRACT_NOT_ACTIVE"
    );
}

fn buyer(d: &Deal) -> Actor {
    Actor::User {
        id: d.buyer,
        role: Role::User,
    }
}

#[test]
fn the_contract_wide_commands_act_on_every_milestone_they_apply_to() {
    let d = Deal::new();
    let c = d.funded(false);
    let now = Timestamp(0);
    // Deliver: every milestone not delivered yet, each with its own window.
    let delivered = contract::deliver(&c, d.seller, None, now).expect("delivered");
    assert_eq!(delivered[0].events.len(), 2);
    let c = then(&c, &delivered);
    let windows: Vec<_> = c
        .state
        .milestones
        .0
        .iter()
        .map(|m| m.auto_release_at)
        .collect();
    assert_eq!(
        windows,
        vec![Some(Timestamp(24 * HOUR_MS)), Some(Timestamp(72 * HOUR_MS))]
    );
    assert_eq!(
        code(contract::deliver(&c, d.seller, None, now)),
        "ALREADY_DELIVERED"
    );
    // A partial release takes from milestone 1 first, then milestone 2.
    let sw = wallet(d.seller, "0");
    let partial = Payout {
        milestone: None,
        amount: Some(usd("500")),
        transaction_id: TransactionId::new_v7(),
    };
    let c = then(
        &c,
        &contract::release(&c, &sw, None, buyer(&d), partial, now).expect("released"),
    );
    assert_eq!(status(&c, 1), MilestoneStatus::Released);
    assert_eq!(
        c.state.milestones.get(2).map(|m| (m.status, m.held_amount)),
        Some((MilestoneStatus::Delivered, dec("500")))
    );
    // A refund of the rest: milestone 2 refunded, the contract COMPLETED (a mix).
    let bw = wallet(d.buyer, "0");
    let c = then(
        &c,
        &contract::refund(&c, &bw, d.seller, whole(None)).expect("refunded"),
    );
    assert_eq!(status(&c, 2), MilestoneStatus::Refunded);
    assert_eq!(c.state.status, ContractStatus::Completed);

    // Refunding everything: every milestone REFUNDED, the contract REFUNDED.
    let d = Deal::new();
    let c = d.funded(false);
    let c = then(
        &c,
        &contract::refund(&c, &wallet(d.buyer, "0"), d.seller, whole(None)).expect("refunded"),
    );
    assert_eq!(c.state.status, ContractStatus::Refunded);
    assert!(c
        .state
        .milestones
        .0
        .iter()
        .all(|m| m.status == MilestoneStatus::Refunded));
}

#[test]
fn each_delivered_milestone_releases_when_its_own_window_ends() {
    let d = Deal::new();
    let c = d.funded(true);
    let c = then(
        &c,
        &contract::deliver(&c, d.seller, None, Timestamp(0)).expect("delivered"),
    );
    let sw = wallet(d.seller, "0");
    let revenue = Versioned::<domain::Revenue>::default();
    let system = |c: &Versioned<Contract>, hour: i64| {
        contract::release(
            c,
            &sw,
            Some(&revenue),
            Actor::System,
            whole(None),
            Timestamp(hour * HOUR_MS),
        )
    };
    assert_eq!(code(system(&c, 23)), "NOT_DUE");
    // At hour 30 milestone 1's window (24 h) has ended, milestone 2's (72 h) has not.
    let first = system(&c, 30).expect("released");
    assert!(matches!(
        first[0].events[0],
        Event::ContractReleased { amount, milestone: Some(1), automatic: true, seller_fee: Some(fee), .. }
            if amount == usd("400") && fee == usd("10")
    ));
    let c = then(&c, &first);
    assert_eq!(c.state.auto_release_at, Some(Timestamp(72 * HOUR_MS)));
    assert_eq!(code(system(&c, 30)), "NOT_DUE", "exactly once");
    let c = then(&c, &system(&c, 72).expect("released"));
    assert_eq!(c.state.status, ContractStatus::Completed);
    assert_eq!(c.state.fee_charged, dec("25"), "2.5 % of the whole price");
}

#[test]
fn a_dispute_freezes_every_milestone_and_its_settlement_closes_what_is_held() {
    let d = Deal::new();
    let c = d.funded(false);
    let sw = wallet(d.seller, "0");
    let c = then(
        &c,
        &contract::release(&c, &sw, None, buyer(&d), whole(Some(1)), Timestamp(0))
            .expect("released"),
    );
    let raised = contract::raise_dispute(&c, DisputeId::new_v7(), d.buyer, "late", Timestamp(0))
        .expect("raised");
    let dispute = Versioned::from_events(&raised[0].events);
    let c = then(&c, &raised[1..]);
    assert_eq!(
        code(contract::deliver(&c, d.seller, Some(2), Timestamp(0))),
        "CONTRACT_DISPUTED"
    );
    assert_eq!(
        code(contract::release(
            &c,
            &sw,
            None,
            buyer(&d),
            whole(Some(2)),
            Timestamp(0)
        )),
        "CONTRACT_DISPUTED"
    );
    let resolved = contract::resolve_dispute(
        &dispute,
        &c,
        &sw,
        &wallet(d.buyer, "0"),
        None,
        Actor::User {
            id: UserId::new_v7(),
            role: Role::Arbiter,
        },
        &contract::ResolveDispute {
            outcome: domain::DisputeOutcome::Refund,
            seller_amount: None,
            buyer_amount: None,
            resolution: "not delivered".into(),
            seller_transaction_id: TransactionId::new_v7(),
            buyer_transaction_id: TransactionId::new_v7(),
            now: Timestamp(0),
        },
    )
    .expect("resolved");
    let c = then(&c, &resolved[1..]);
    assert_eq!(status(&c, 1), MilestoneStatus::Released);
    assert_eq!(status(&c, 2), MilestoneStatus::Refunded);
    assert_eq!(c.state.status, ContractStatus::Completed, "a mix");
    assert_eq!(c.state.held, Decimal::ZERO);
}

/// A contract recorded before milestones existed (its events exactly as they were stored)
/// reads as one implicit milestone, and a contract without milestones still writes events
/// without a milestone number.
#[test]
fn a_contract_recorded_before_milestones_reads_as_one_milestone() {
    let (buyer, seller) = (UserId::new_v7(), UserId::new_v7());
    let stored = [
        (
            "ContractCreated",
            serde_json::json!({
                "contractId": ContractId::new_v7(), "buyerId": buyer, "sellerId": seller,
                "title": "Logo", "amount": "250.00", "currency": "USD",
                "inspectionPeriodHours": 48, "createdBy": buyer, "createdAt": 1_000
            }),
        ),
        (
            "ContractFunded",
            serde_json::json!({"transactionId": TransactionId::new_v7(), "amount": "250.00"}),
        ),
        (
            "ContractDelivered",
            serde_json::json!({"deliveredAt": 2_000, "autoReleaseAt": 2_000 + 48 * HOUR_MS}),
        ),
        (
            "ContractReleased",
            serde_json::json!({"transactionId": TransactionId::new_v7(), "amount": "100.00"}),
        ),
    ];
    let events: Vec<Event> = stored
        .iter()
        .map(|(t, data)| domain::codec::decode(t, 1, data).expect("decodes"))
        .collect();
    let c = Versioned::<Contract>::from_events(&events);
    let ms = &c.state.milestones.0;
    assert_eq!(ms.len(), 1);
    let m = &ms[0];
    assert_eq!(
        (
            m.number,
            m.title.as_str(),
            m.amount,
            m.held_amount,
            m.status
        ),
        (
            1,
            "Logo",
            dec("250"),
            dec("150"),
            MilestoneStatus::Delivered
        )
    );
    assert_eq!(m.auto_release_at, Some(Timestamp(2_000 + 48 * HOUR_MS)));
    assert_eq!(c.state.auto_release_at, m.auto_release_at);

    // Its next events name no milestone, as before milestones existed.
    let rest = contract::release(
        &c,
        &wallet(seller, "0"),
        None,
        Actor::User {
            id: buyer,
            role: Role::User,
        },
        whole(Some(1)),
        Timestamp(3_000),
    )
    .expect("released");
    let (_, _, data) = domain::codec::encode(&rest[0].events[0]);
    assert!(data.get("milestone").is_none(), "{data}");
    let c = then(&c, &rest);
    assert_eq!(c.state.status, ContractStatus::Completed);
    assert_eq!(c.state.milestones.0[0].status, MilestoneStatus::Released);
}
