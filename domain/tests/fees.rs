//! Given events → when command → then events (or a rejection), for the platform's fee
//! schedules, fees on payments and refunds, and the revenue account; and the property that
//! fees of partial payments add up.

use domain::contract::{self, CreateContract, Payout};
use domain::fees::{self, PaymentFee};
use domain::stream::Aggregate;
use domain::{
    Actor, Amount, Contract, ContractId, Currency, Email, Event, FeePayer, FeeSchedule,
    FeeScheduleId, FeeTerms, Revenue, RevenueId, Role, StreamId, Timestamp, TransactionId, User,
    UserId, Versioned, Wallet, WalletId,
};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn usd(s: &str) -> Amount {
    Amount::parse(s, Currency::USD).expect("valid")
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("supported")
}

fn dec(s: &str) -> Decimal {
    s.parse().expect("a decimal")
}

fn given<T: Aggregate>(events: &[Event]) -> Versioned<T> {
    Versioned::from_events(events)
}

fn admin() -> Actor {
    Actor::User {
        id: UserId::new_v7(),
        role: Role::Admin,
    }
}

fn terms(bps: u16, payer: FeePayer) -> FeeTerms {
    FeeTerms {
        percent_bps: bps,
        minimum: None,
        maximum: None,
        payer,
    }
}

fn code(e: Result<Vec<domain::StreamWrite>, domain::DomainError>) -> &'static str {
    e.expect_err("rejected").code()
}

#[test]
fn an_admin_sets_a_schedule_within_the_rules() {
    let t = terms(250, FeePayer::Seller);
    let then = fees::set_schedule(&given(&[]), admin(), eur(), t, Timestamp(7)).expect("set");
    assert_eq!(
        then[0].stream,
        StreamId::fee_schedule(FeeScheduleId::of(eur()))
    );
    assert!(matches!(
        &then[0].events[0],
        Event::FeeScheduleSet { currency, terms, set_at, .. }
            if *currency == eur() && *terms == t && *set_at == Timestamp(7)
    ));
    let user = Actor::User {
        id: UserId::new_v7(),
        role: Role::User,
    };
    assert_eq!(
        code(fees::set_schedule(
            &given(&[]),
            user,
            Currency::USD,
            t,
            Timestamp(0)
        )),
        "FORBIDDEN"
    );
    for bad in [
        terms(5_001, FeePayer::Seller),
        FeeTerms {
            minimum: Some(usd("5")),
            maximum: Some(usd("4.99")),
            ..t
        },
    ] {
        assert_eq!(
            code(fees::set_schedule(
                &given(&[]),
                admin(),
                Currency::USD,
                bad,
                Timestamp(0)
            )),
            "INVALID_FEE_SCHEDULE"
        );
    }
}

#[test]
fn a_contract_copies_the_schedule_of_its_currency_and_keeps_it() {
    let (buyer, seller) = (UserId::new_v7(), UserId::new_v7());
    let user = |id| {
        given::<User>(&[Event::UserRegistered {
            user_id: id,
            email: Email::parse("x@example.com").expect("valid"),
            role: Role::User,
        }])
    };
    let schedule: FeeSchedule = given::<FeeSchedule>(&[Event::FeeScheduleSet {
        currency: Currency::USD,
        terms: terms(250, FeePayer::Buyer),
        set_by: None,
        set_at: Timestamp(0),
    }])
    .state;
    let cmd = |currency| CreateContract {
        contract_id: ContractId::new_v7(),
        actor: buyer,
        buyer_id: buyer,
        seller_id: seller,
        title: "Logo".into(),
        description: None,
        amount: Some(usd("100")),
        milestones: None,
        currency,
        inspection_period_hours: None,
        fund_by: None,
        now: Timestamp(1),
    };
    let copied = |currency| {
        let then = contract::create(
            &given(&[]),
            &user(buyer),
            &user(seller),
            &schedule,
            &cmd(currency),
        )
        .expect("created");
        match &then[0].events[0] {
            Event::ContractCreated { fee, .. } => *fee,
            _ => None,
        }
    };
    assert_eq!(copied(Currency::USD), Some(terms(250, FeePayer::Buyer)));
    assert_eq!(copied(eur()), None, "another currency's schedule");
}

fn deal(fee: FeeTerms, price: &str) -> (ContractId, UserId, UserId, Vec<Event>) {
    let (id, buyer, seller) = (ContractId::new_v7(), UserId::new_v7(), UserId::new_v7());
    let created = Event::ContractCreated {
        contract_id: id,
        buyer_id: buyer,
        seller_id: seller,
        title: "t".into(),
        description: None,
        amount: usd(price),
        currency: Currency::USD,
        inspection_period_hours: None,
        fund_by: None,
        fee: Some(fee),
        milestones: None,
        created_by: buyer,
        created_at: Timestamp(0),
    };
    (id, buyer, seller, vec![created])
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
    given(&events)
}

fn buyer_of(id: UserId) -> Actor {
    Actor::User {
        id,
        role: Role::User,
    }
}

#[test]
fn a_seller_fee_is_deducted_from_each_payment_into_revenue() {
    let (id, buyer, seller, mut events) = deal(terms(250, FeePayer::Seller), "1000");
    let c: Versioned<Contract> = given(&events);
    let funded = contract::fund(
        &c,
        &wallet(buyer, "1000"),
        buyer,
        TransactionId::new_v7(),
        Timestamp(0),
    )
    .expect("a seller fee costs the buyer nothing more");
    assert_eq!(funded[1].events.len(), 1, "no prepaid fee");
    events.extend(funded[0].events.clone());
    let c: Versioned<Contract> = given(&events);
    let tx = TransactionId::new_v7();
    let revenue: Versioned<Revenue> = given(&[]);
    let then = contract::release(
        &c,
        &wallet(seller, "0"),
        Some(&revenue),
        buyer_of(buyer),
        Payout {
            milestone: None,
            amount: Some(usd("400")),
            transaction_id: tx,
        },
        Timestamp(0),
    )
    .expect("released");
    assert!(matches!(
        &then[0].events[0],
        Event::ContractReleased { seller_fee: Some(f), buyer_fee: None, .. } if *f == usd("10")
    ));
    let seller_events = &then[1].events;
    assert!(
        matches!(&seller_events[0], Event::EscrowPaymentReceived { amount, .. } if *amount == usd("400"))
    );
    assert!(matches!(
        &seller_events[1],
        Event::FeeCharged { amount, transaction_id, contract_id } if *amount == usd("10") && *transaction_id == tx.fee() && *contract_id == id
    ));
    assert_eq!(
        then[2].stream,
        StreamId::revenue(RevenueId::of(Currency::USD))
    );
    assert!(matches!(
        &then[2].events[0],
        Event::FeeCollected { amount, from_escrow: None, .. } if *amount == usd("10")
    ));
    let without_revenue = contract::release(
        &c,
        &wallet(seller, "0"),
        None,
        buyer_of(buyer),
        Payout {
            milestone: None,
            amount: Some(usd("400")),
            transaction_id: tx,
        },
        Timestamp(0),
    );
    assert!(
        without_revenue.is_err(),
        "a fee is never decided without the revenue stream"
    );
}

#[test]
fn a_buyer_fee_is_prepaid_at_funding_collected_on_payment_and_returned_on_refund() {
    let (_, buyer, seller, mut events) = deal(terms(250, FeePayer::Buyer), "1000");
    let c: Versioned<Contract> = given(&events);
    assert_eq!(
        code(contract::fund(
            &c,
            &wallet(buyer, "1024.99"),
            buyer,
            TransactionId::new_v7(),
            Timestamp(0)
        )),
        "INSUFFICIENT_FUNDS",
        "price + fee must be there"
    );
    let funded = contract::fund(
        &c,
        &wallet(buyer, "1025"),
        buyer,
        TransactionId::new_v7(),
        Timestamp(0),
    )
    .expect("funded");
    assert!(matches!(&funded[1].events[1], Event::FeeHeld { amount, .. } if *amount == usd("25")));
    events.extend(funded[0].events.clone());
    let c: Versioned<Contract> = given(&events);
    assert_eq!(c.state.fee_held, dec("25"));

    let revenue: Versioned<Revenue> = given(&[]);
    let paid = contract::release(
        &c,
        &wallet(seller, "0"),
        Some(&revenue),
        buyer_of(buyer),
        Payout {
            milestone: None,
            amount: Some(usd("500")),
            transaction_id: TransactionId::new_v7(),
        },
        Timestamp(0),
    )
    .expect("released");
    assert_eq!(
        paid[1].events.len(),
        1,
        "the seller pays nothing: the payment alone"
    );
    assert!(matches!(
        &paid[2].events[0],
        Event::FeeCollected { amount, from_escrow: Some(b), .. } if *amount == usd("12.5") && *b == usd("12.5")
    ));
    events.extend(paid[0].events.clone());
    let c: Versioned<Contract> = given(&events);
    let refunded = contract::refund(
        &c,
        &wallet(buyer, "0"),
        seller,
        Payout {
            milestone: None,
            amount: None,
            transaction_id: TransactionId::new_v7(),
        },
    )
    .expect("refunded");
    assert!(matches!(
        &refunded[0].events[0],
        Event::ContractRefunded { fee_returned: Some(f), .. } if *f == usd("12.5")
    ));
    assert!(
        matches!(&refunded[1].events[1], Event::FeeReturned { amount, .. } if *amount == usd("12.5"))
    );
    events.extend(refunded[0].events.clone());
    let c: Versioned<Contract> = given(&events);
    assert_eq!(
        (c.state.held, c.state.fee_held, c.state.fee_charged),
        (dec("0"), dec("0"), dec("12.5"))
    );
}

#[test]
fn a_split_fee_gives_the_odd_minor_unit_to_the_seller() {
    // 2.5 % of 1.00 is 0.025, rounded half-up to 0.03: the buyer prepays 0.01, the
    // seller's payments carry 0.02.
    let t = terms(250, FeePayer::Split);
    assert_eq!(t.fee(Currency::USD, dec("1")), dec("0.03"));
    assert_eq!(t.buyer_share(Currency::USD, dec("1")), dec("0.01"));
    assert_eq!(t.seller_share(Currency::USD, dec("1")), dec("0.02"));
    // JPY has no minor unit: 2.5 % of 101 yen is 2.525, rounded to 3.
    assert_eq!(
        t.fee(Currency::parse("JPY").expect("supported"), dec("101")),
        dec("3")
    );
}

#[test]
fn minimum_and_maximum_clamp_a_fee_which_never_exceeds_its_payment() {
    let t = FeeTerms {
        percent_bps: 100,
        minimum: Some(usd("1")),
        maximum: Some(usd("5")),
        payer: FeePayer::Seller,
    };
    assert_eq!(
        t.fee(Currency::USD, dec("0.40")),
        dec("0.40"),
        "never above the payment"
    );
    assert_eq!(t.fee(Currency::USD, dec("50")), dec("1"), "the minimum");
    assert_eq!(t.fee(Currency::USD, dec("300")), dec("3"));
    assert_eq!(t.fee(Currency::USD, dec("10000")), dec("5"), "the maximum");
}

#[test]
fn revenue_is_withdrawn_by_an_admin_never_below_zero() {
    let collected = Event::FeeCollected {
        transaction_id: TransactionId::new_v7(),
        contract_id: ContractId::new_v7(),
        currency: Currency::USD,
        amount: usd("25"),
        from_escrow: None,
    };
    let revenue: Versioned<Revenue> = given(&[collected]);
    let tx = TransactionId::new_v7();
    let then =
        fees::withdraw_revenue(&revenue, admin(), Currency::USD, usd("25"), tx).expect("withdrawn");
    assert_eq!(then[0].expected_version, 1);
    assert!(
        matches!(&then[0].events[0], Event::RevenueWithdrawn { amount, .. } if *amount == usd("25"))
    );
    assert_eq!(
        code(fees::withdraw_revenue(
            &revenue,
            admin(),
            Currency::USD,
            usd("25.01"),
            tx
        )),
        "INSUFFICIENT_FUNDS"
    );
    assert_eq!(
        code(fees::withdraw_revenue(
            &revenue,
            buyer_of(UserId::new_v7()),
            Currency::USD,
            usd("1"),
            tx
        )),
        "FORBIDDEN"
    );
}

fn any_terms() -> impl Strategy<Value = FeeTerms> {
    (
        0..=5_000u16,
        proptest::option::of(1..2_000i64),
        proptest::option::of(1..20_000i64),
        0..3usize,
    )
        .prop_map(|(bps, min, max, payer)| {
            let (min, max) = match (min, max) {
                (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
                other => other,
            };
            let cents = |c: i64| Amount::try_from(Decimal::new(c, 2)).expect("positive");
            FeeTerms {
                percent_bps: bps,
                minimum: min.map(cents),
                maximum: max.map(cents),
                payer: [FeePayer::Seller, FeePayer::Buyer, FeePayer::Split][payer],
            }
        })
}

proptest! {
    /// However a price is paid out in parts: for every payment the seller's net plus the
    /// seller's fee is the gross and no share is negative or above the payment; the fees
    /// of all payments add up to exactly the fee on what was paid, so never more than the
    /// fee on the whole price (within one minor unit per payment, as the issue allows, and
    /// here with no slack at all).
    #[test]
    fn fees_of_partial_payments_add_up(
        t in any_terms(),
        price in 1..10_000_000i64,
        cuts in proptest::collection::vec(1..10_000i64, 1..12),
    ) {
        let usd = Currency::USD;
        let price = Decimal::new(price, 2);
        let mut paid = Decimal::ZERO;
        let mut total = Decimal::ZERO;
        let mut payments = 0;
        for cut in cuts {
            let gross = Decimal::new(cut, 2).min(price - paid);
            if gross <= Decimal::ZERO {
                break;
            }
            let fee = PaymentFee::of(Some(&t), usd, paid, gross);
            prop_assert!(fee.seller >= Decimal::ZERO && fee.buyer >= Decimal::ZERO);
            prop_assert!(fee.seller <= gross && fee.total() <= gross, "{fee:?} on {gross}");
            let net = gross - fee.seller;
            prop_assert_eq!(net + fee.seller, gross);
            prop_assert!(net >= Decimal::ZERO);
            paid += gross;
            total += fee.total();
            payments += 1;
        }
        prop_assert_eq!(total, t.fee(usd, paid));
        let unit = Decimal::new(1, 2);
        prop_assert!(total <= t.fee(usd, price) + unit * Decimal::from(payments));
        prop_assert!(total <= t.fee(usd, price));
    }
}
