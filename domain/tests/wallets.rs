//! Given events → when command → then events (or a rejection), for users and wallets.

use domain::user::{self, RegisterUser};
use domain::wallet::{self, Deposit, Transfer, Withdraw};
use domain::{
    Amount, Currency, Description, DomainError, Email, Event, Role, StreamId, StreamWrite,
    TransactionId, User, UserId, Versioned, Wallet, WalletId,
};
use rust_decimal::Decimal;

fn usd(s: &str) -> Amount {
    Amount::parse(s, Currency::USD).expect("test amounts are valid")
}

fn given<T: domain::stream::Aggregate>(events: &[Event]) -> Versioned<T> {
    Versioned::from_events(events)
}

fn registered(id: UserId) -> Vec<Event> {
    vec![Event::UserRegistered {
        user_id: id,
        email: Email::parse(&format!("{}@example.com", id.0.simple())).expect("valid"),
        role: Role::User,
    }]
}

fn opened(user: UserId) -> Event {
    Event::WalletOpened {
        wallet_id: WalletId::of(user, Currency::USD),
        user_id: user,
        currency: Currency::USD,
    }
}

fn deposited(amount: &str) -> Event {
    Event::FundsDeposited {
        transaction_id: TransactionId::new_v7(),
        amount: usd(amount),
        description: None,
        channel: domain::DepositChannel::Api,
    }
}

#[test]
fn register_creates_user_and_usd_wallet_streams() {
    let id = UserId::new_v7();
    let email = Email::parse("Bob@Example.com").expect("valid");
    let then = user::register(
        &given(&[]),
        &RegisterUser {
            user_id: id,
            email: email.clone(),
        },
    );
    let wallet = WalletId::of(id, Currency::USD);
    assert_eq!(
        then,
        Ok(vec![
            StreamWrite {
                stream: StreamId::user(id),
                expected_version: 0,
                events: vec![Event::UserRegistered {
                    user_id: id,
                    email,
                    role: Role::User
                }],
            },
            StreamWrite {
                stream: StreamId::wallet(wallet),
                expected_version: 0,
                events: vec![Event::WalletOpened {
                    wallet_id: wallet,
                    user_id: id,
                    currency: Currency::USD
                }],
            },
        ])
    );
}

#[test]
fn register_twice_is_rejected() {
    let id = UserId::new_v7();
    let cmd = RegisterUser {
        user_id: id,
        email: Email::parse("a@b.co").expect("valid"),
    };
    assert_eq!(
        user::register(&given(&registered(id)), &cmd),
        Err(DomainError::UserAlreadyExists)
    );
}

#[test]
fn grant_role_appends_after_current_version_and_refuses_a_held_role() {
    let id = UserId::new_v7();
    let u: Versioned<User> = given(&registered(id));
    let then = user::grant_role(&u, Role::Arbiter).expect("granted");
    assert_eq!(then[0].expected_version, 1);
    assert_eq!(
        then[0].events,
        vec![Event::RoleGranted {
            user_id: id,
            role: Role::Arbiter
        }]
    );
    assert_eq!(
        user::grant_role(&u, Role::User),
        Err(DomainError::RoleAlreadyHeld("user"))
    );
    assert_eq!(
        user::grant_role(&given(&[]), Role::Admin),
        Err(DomainError::UnknownUser)
    );
}

#[test]
fn deposit_into_existing_wallet_appends_one_event() {
    let id = UserId::new_v7();
    let w: Versioned<Wallet> = given(&[opened(id)]);
    let tx = TransactionId::new_v7();
    let cmd = Deposit {
        transaction_id: tx,
        user_id: id,
        currency: Currency::USD,
        amount: usd("500"),
        description: Description::parse("Initial deposit").expect("valid"),
        channel: domain::DepositChannel::Api,
    };
    let then = wallet::deposit(&given(&registered(id)), &w, &cmd).expect("accepted");
    assert_eq!(then.len(), 1);
    assert_eq!(then[0].expected_version, 1);
    assert_eq!(
        then[0].events,
        vec![Event::FundsDeposited {
            transaction_id: tx,
            amount: usd("500.00"),
            description: Description::parse("Initial deposit").expect("valid"),
            channel: domain::DepositChannel::Api
        }]
    );
}

#[test]
fn deposit_in_a_new_currency_opens_that_wallet_in_the_same_write() {
    let id = UserId::new_v7();
    let eur = Currency::parse("EUR").expect("supported");
    let cmd = Deposit {
        transaction_id: TransactionId::new_v7(),
        user_id: id,
        currency: eur,
        amount: Amount::parse("12.34", eur).expect("valid"),
        description: None,
        channel: domain::DepositChannel::Api,
    };
    let then = wallet::deposit(&given(&registered(id)), &given(&[]), &cmd).expect("accepted");
    assert_eq!(then[0].stream, StreamId::wallet(WalletId::of(id, eur)));
    assert_eq!(then[0].expected_version, 0);
    assert_eq!(then[0].events[0].event_type(), "WalletOpened");
    assert_eq!(then[0].events[1].event_type(), "FundsDeposited");
}

#[test]
fn deposit_for_unknown_user_is_rejected() {
    let cmd = Deposit {
        transaction_id: TransactionId::new_v7(),
        user_id: UserId::new_v7(),
        currency: Currency::USD,
        amount: usd("1"),
        description: None,
        channel: domain::DepositChannel::Api,
    };
    assert_eq!(
        wallet::deposit(&given(&[]), &given(&[]), &cmd),
        Err(DomainError::UnknownUser)
    );
}

#[test]
fn withdraw_within_balance_and_overdraft_rejected() {
    let id = UserId::new_v7();
    let w: Versioned<Wallet> = given(&[opened(id), deposited("100")]);
    let mk = |a: &str| Withdraw {
        transaction_id: TransactionId::new_v7(),
        user_id: id,
        currency: Currency::USD,
        amount: usd(a),
        description: None,
    };
    let ok = wallet::withdraw(&w, &mk("100")).expect("exact balance is allowed");
    assert_eq!(ok[0].expected_version, 2);
    assert_eq!(ok[0].events[0].event_type(), "FundsWithdrawn");
    assert_eq!(
        wallet::withdraw(&w, &mk("100.01")),
        Err(DomainError::InsufficientFunds {
            balance: "100.00".into(),
            requested: "100.01".into()
        })
    );
    assert_eq!(
        wallet::withdraw(&given(&[]), &mk("1")),
        Err(DomainError::WalletNotFound(Currency::USD))
    );
}

fn transfer_cmd(from: UserId, to: UserId, amount: &str) -> Transfer {
    Transfer {
        transaction_id: TransactionId::new_v7(),
        from_user_id: from,
        to_user_id: to,
        currency: Currency::USD,
        amount: usd(amount),
        description: None,
    }
}

#[test]
fn transfer_debits_payer_and_credits_payee_in_one_decision() {
    let (a, b) = (UserId::new_v7(), UserId::new_v7());
    let payer: Versioned<Wallet> = given(&[opened(a), deposited("50")]);
    let payee: Versioned<Wallet> = given(&[opened(b)]);
    let cmd = transfer_cmd(a, b, "20");
    let then = wallet::transfer(&payer, &given(&registered(b)), &payee, &cmd).expect("accepted");
    assert_eq!(then.len(), 2);
    assert_eq!(
        (then[0].stream.clone(), then[0].expected_version),
        (StreamId::wallet(WalletId::of(a, Currency::USD)), 2)
    );
    assert_eq!(
        (then[1].stream.clone(), then[1].expected_version),
        (StreamId::wallet(WalletId::of(b, Currency::USD)), 1)
    );
    let mut payer_after = payer.clone();
    then[0].events.iter().for_each(|e| payer_after.apply(e));
    let mut payee_after = payee.clone();
    then[1].events.iter().for_each(|e| payee_after.apply(e));
    assert_eq!(payer_after.state.balance, Decimal::new(3000, 2));
    assert_eq!(payee_after.state.balance, Decimal::new(2000, 2));
}

#[test]
fn transfer_opens_payee_wallet_when_missing() {
    let (a, b) = (UserId::new_v7(), UserId::new_v7());
    let payer: Versioned<Wallet> = given(&[opened(a), deposited("5")]);
    let then = wallet::transfer(
        &payer,
        &given(&registered(b)),
        &given(&[]),
        &transfer_cmd(a, b, "5"),
    )
    .expect("accepted");
    assert_eq!(then[1].expected_version, 0);
    assert_eq!(then[1].events[0].event_type(), "WalletOpened");
    assert_eq!(then[1].events[1].event_type(), "TransferReceived");
}

#[test]
fn transfer_rejections() {
    let (a, b) = (UserId::new_v7(), UserId::new_v7());
    let payer: Versioned<Wallet> = given(&[opened(a), deposited("5")]);
    let payee_user: Versioned<User> = given(&registered(b));
    assert_eq!(
        wallet::transfer(
            &payer,
            &given(&registered(a)),
            &payer,
            &transfer_cmd(a, a, "1")
        ),
        Err(DomainError::SelfTransfer)
    );
    assert_eq!(
        wallet::transfer(&payer, &given(&[]), &given(&[]), &transfer_cmd(a, b, "1")),
        Err(DomainError::UnknownUser)
    );
    assert!(matches!(
        wallet::transfer(
            &payer,
            &payee_user,
            &given(&[]),
            &transfer_cmd(a, b, "5.01")
        ),
        Err(DomainError::InsufficientFunds { .. })
    ));
    assert_eq!(
        wallet::transfer(
            &given(&[]),
            &payee_user,
            &given(&[]),
            &transfer_cmd(a, b, "1")
        ),
        Err(DomainError::WalletNotFound(Currency::USD))
    );
}

mod properties {
    use super::*;
    use domain::ledger::{postings, Account};
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Deposit(usize, i64),
        Withdraw(usize, i64),
        Transfer(usize, usize, i64),
        /// An admin freezes (true) or unfreezes (false) a user's wallet.
        Freeze(usize, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize, 1..100_000i64).prop_map(|(u, c)| Op::Deposit(u, c)),
            (0..4usize, 1..100_000i64).prop_map(|(u, c)| Op::Withdraw(u, c)),
            (0..4usize, 0..4usize, 1..100_000i64).prop_map(|(a, b, c)| Op::Transfer(a, b, c)),
            (0..4usize, any::<bool>()).prop_map(|(u, f)| Op::Freeze(u, f)),
        ]
    }

    proptest! {
        /// No sequence of commands, accepted or refused, breaks conservation or takes a
        /// wallet below zero, and no money leaves a frozen wallet (fails with the frozen
        /// check removed from `require_funds`: seen).
        #[test]
        fn random_commands_conserve_money(ops in proptest::collection::vec(op(), 1..80)) {
            let users: Vec<UserId> = (0..4).map(|_| UserId::new_v7()).collect();
            let user_state: Vec<Versioned<User>> = users.iter().map(|u| given(&registered(*u))).collect();
            let mut wallets: HashMap<UserId, Versioned<Wallet>> = users.iter().map(|u| (*u, given(&[opened(*u)]))).collect();
            let mut sums: HashMap<Account, Decimal> = HashMap::new();
            let admin = domain::Actor::User { id: UserId::new_v7(), role: Role::Admin };
            for op in ops {
                let sender = match op {
                    Op::Withdraw(u, _) | Op::Transfer(u, _, _) => Some(users[u]),
                    _ => None,
                };
                let frozen_sender = sender.is_some_and(|u| wallets[&u].state.frozen.is_some());
                let writes = match op {
                    Op::Freeze(u, true) => wallet::freeze(&wallets[&users[u]], admin, Currency::USD, "review", domain::Timestamp(0)),
                    Op::Freeze(u, false) => wallet::unfreeze(&wallets[&users[u]], admin, Currency::USD, domain::Timestamp(0)),
                    Op::Deposit(u, c) => wallet::deposit(&user_state[u], &wallets[&users[u]], &Deposit {
                        transaction_id: TransactionId::new_v7(), user_id: users[u], currency: Currency::USD,
                        amount: Amount::new(Decimal::new(c, 2), Currency::USD).expect("valid"), description: None, channel: domain::DepositChannel::Api }),
                    Op::Withdraw(u, c) => wallet::withdraw(&wallets[&users[u]], &Withdraw {
                        transaction_id: TransactionId::new_v7(), user_id: users[u], currency: Currency::USD,
                        amount: Amount::new(Decimal::new(c, 2), Currency::USD).expect("valid"), description: None }),
                    Op::Transfer(a, b, c) => wallet::transfer(&wallets[&users[a]], &user_state[b], &wallets[&users[b]], &Transfer {
                        transaction_id: TransactionId::new_v7(), from_user_id: users[a], to_user_id: users[b], currency: Currency::USD,
                        amount: Amount::new(Decimal::new(c, 2), Currency::USD).expect("valid"), description: None }),
                };
                if frozen_sender {
                    let refused = writes.as_ref().err().map(|e| e.code());
                    prop_assert!(matches!(refused, Some("WALLET_FROZEN" | "SELF_TRANSFER")), "{:?}", refused);
                }
                let Ok(writes) = writes else { continue };
                for w in writes {
                    let owner = users.iter().copied().find(|u| StreamId::wallet(WalletId::of(*u, Currency::USD)) == w.stream).expect("known wallet");
                    let state = wallets.get_mut(&owner).expect("known wallet");
                    prop_assert_eq!(state.version, w.expected_version);
                    for e in &w.events {
                        for p in postings(state.state.id, e) {
                            *sums.entry(p.account).or_default() += p.delta;
                        }
                        state.apply(e);
                    }
                    prop_assert!(state.state.balance >= Decimal::ZERO);
                }
                let total: Decimal = sums.values().copied().sum();
                prop_assert_eq!(total, Decimal::ZERO);
            }
            for (u, w) in &wallets {
                let acct = Account::Wallet(WalletId::of(*u, Currency::USD));
                prop_assert_eq!(sums.get(&acct).copied().unwrap_or_default(), w.state.balance);
            }
        }
    }
}

#[test]
fn credits_that_would_pass_the_balance_limit_are_refused() {
    let (payer, payee) = (UserId::new_v7(), UserId::new_v7());
    // Given a wallet a million deposits of a billion short of the limit
    let full: Versioned<Wallet> = Versioned {
        state: Wallet {
            balance: wallet::BALANCE_MAX - Decimal::new(5, 1),
            ..given::<Wallet>(&[opened(payee)]).state
        },
        version: 1,
    };
    let payee_user: Versioned<User> = given(&registered(payee));
    // When it is credited past the limit, by a deposit or a transfer
    let deposit = wallet::deposit(
        &payee_user,
        &full,
        &Deposit {
            transaction_id: TransactionId::new_v7(),
            user_id: payee,
            currency: Currency::USD,
            amount: usd("1"),
            description: None,
            channel: domain::DepositChannel::Api,
        },
    );
    let payer_wallet: Versioned<Wallet> = given(&[opened(payer), deposited("10")]);
    let transfer = wallet::transfer(
        &payer_wallet,
        &payee_user,
        &full,
        &transfer_cmd(payer, payee, "1"),
    );
    // Then both are refused, and half a unit still fits
    for refused in [deposit, transfer] {
        assert!(
            matches!(
                refused,
                Err(DomainError::InvalidTransition {
                    code: "WALLET_BALANCE_LIMIT",
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    assert!(wallet::transfer(
        &payer_wallet,
        &payee_user,
        &full,
        &transfer_cmd(payer, payee, "0.50")
    )
    .is_ok());
}

/// Given a funded wallet, an admin freezes it: money still comes in, none goes out (not by
/// transfer, withdrawal or funding a contract) until it is unfrozen; only an admin may do
/// either, with a reason, once.
#[test]
fn a_frozen_wallet_receives_but_sends_nothing() {
    let (u, other) = (UserId::new_v7(), UserId::new_v7());
    let admin = domain::Actor::User {
        id: UserId::new_v7(),
        role: Role::Admin,
    };
    let user = domain::Actor::User {
        id: u,
        role: Role::User,
    };
    let now = domain::Timestamp(5);
    let w: Versioned<Wallet> = given(&[opened(u), deposited("100")]);
    let code = |r: Result<Vec<StreamWrite>, DomainError>| r.expect_err("refused").code();
    assert_eq!(
        code(wallet::freeze(&w, user, Currency::USD, "x", now)),
        "FORBIDDEN"
    );
    assert_eq!(
        code(wallet::freeze(&w, admin, Currency::USD, "  ", now)),
        "INVALID_TEXT"
    );
    assert_eq!(
        code(wallet::freeze(
            &Versioned::default(),
            admin,
            Currency::USD,
            "x",
            now
        )),
        "WALLET_NOT_FOUND"
    );
    assert_eq!(
        code(wallet::unfreeze(&w, admin, Currency::USD, now)),
        "WALLET_NOT_FROZEN"
    );
    let frozen =
        wallet::freeze(&w, admin, Currency::USD, "chargeback review", now).expect("frozen");
    assert!(matches!(
        &frozen[0].events[..],
        [Event::WalletFrozen { reason, frozen_at, .. }] if reason == "chargeback review" && *frozen_at == now
    ));
    let mut w = w;
    frozen[0].events.iter().for_each(|e| w.apply(e));
    assert_eq!(
        code(wallet::freeze(&w, admin, Currency::USD, "again", now)),
        "WALLET_ALREADY_FROZEN"
    );

    let withdraw = Withdraw {
        transaction_id: TransactionId::new_v7(),
        user_id: u,
        currency: Currency::USD,
        amount: usd("1"),
        description: None,
    };
    assert_eq!(code(wallet::withdraw(&w, &withdraw)), "WALLET_FROZEN");
    let other_user: Versioned<User> = given(&registered(other));
    let other_wallet: Versioned<Wallet> = given(&[opened(other), deposited("5")]);
    assert_eq!(
        code(wallet::transfer(
            &w,
            &other_user,
            &other_wallet,
            &transfer_cmd(u, other, "1")
        )),
        "WALLET_FROZEN"
    );
    // Money still comes in.
    let me: Versioned<User> = given(&registered(u));
    assert!(wallet::transfer(&other_wallet, &me, &w, &transfer_cmd(other, u, "2")).is_ok());

    let unfrozen = wallet::unfreeze(&w, admin, Currency::USD, now).expect("unfrozen");
    unfrozen[0].events.iter().for_each(|e| w.apply(e));
    assert_eq!(w.state.frozen, None);
    assert!(wallet::withdraw(&w, &withdraw).is_ok());
}
