//! Given events → when command → then events (or a rejection), for pay-ins.

use domain::payin::{self, CreatePayin};
use domain::{
    Actor, Amount, Currency, DomainError, Email, Event, Payin, PayinStatus, Role, StreamWrite,
    Timestamp, TransactionId, User, UserId, Versioned, Wallet, WalletId,
};

fn usd(s: &str) -> Amount {
    Amount::parse(s, Currency::USD).expect("valid")
}

fn user(id: UserId) -> Versioned<User> {
    Versioned::from_events(&[Event::UserRegistered {
        user_id: id,
        email: Email::parse("p@example.com").expect("valid"),
        role: Role::User,
    }])
}

fn as_role(role: Role) -> Actor {
    Actor::User {
        id: UserId::new_v7(),
        role,
    }
}

fn code(r: Result<Vec<StreamWrite>, DomainError>) -> &'static str {
    r.expect_err("refused").code()
}

fn announce(service: Actor, to: UserId, reference: &str) -> CreatePayin {
    CreatePayin {
        actor: service,
        user_id: to,
        amount: usd("250"),
        currency: Currency::USD,
        reference: reference.into(),
        description: None,
        now: Timestamp(1),
    }
}

#[test]
fn a_pay_in_is_announced_then_confirmed_once_crediting_the_wallet() {
    let (service, u) = (as_role(Role::Service), UserId::new_v7());
    let cmd = announce(service, u, "psp-123");
    assert_eq!(
        code(payin::create(
            &Versioned::default(),
            &user(u),
            &announce(as_role(Role::User), u, "x")
        )),
        "FORBIDDEN"
    );
    assert_eq!(
        code(payin::create(
            &Versioned::default(),
            &user(u),
            &announce(service, u, "  ")
        )),
        "INVALID_TEXT"
    );
    assert_eq!(
        code(payin::create(
            &Versioned::default(),
            &Versioned::default(),
            &cmd
        )),
        "USER_NOT_FOUND"
    );
    let created = payin::create(&Versioned::default(), &user(u), &cmd).expect("created");
    assert_eq!(
        created[0].stream.as_str(),
        format!("payin-{}", cmd.payin_id())
    );
    let p: Versioned<Payin> = Versioned::from_events(&created[0].events);
    assert_eq!(p.state.status, PayinStatus::Pending);
    // The same reference again, by the same service: the first pay-in is named.
    let again = payin::create(&p, &user(u), &cmd).expect_err("refused");
    assert_eq!(again.code(), "PAYIN_EXISTS");
    assert!(
        again.to_string().contains(&cmd.payin_id().to_string()),
        "{again}"
    );
    // Another service may use the same reference: another pay-in.
    assert_ne!(
        announce(as_role(Role::Service), u, "psp-123").payin_id(),
        cmd.payin_id()
    );

    let wallet = Versioned::<Wallet>::default();
    assert_eq!(
        code(payin::confirm(
            &p,
            &wallet,
            as_role(Role::User),
            TransactionId::new_v7(),
            Timestamp(2)
        )),
        "FORBIDDEN"
    );
    let confirmed = payin::confirm(&p, &wallet, service, TransactionId::new_v7(), Timestamp(2))
        .expect("confirmed");
    // The wallet is opened and credited in the same decision.
    assert_eq!(
        confirmed[1].stream.as_str(),
        format!("wallet-{}", WalletId::of(u, Currency::USD))
    );
    assert!(matches!(
        &confirmed[1].events[..],
        [Event::WalletOpened { .. }, Event::FundsDeposited { amount, channel: domain::DepositChannel::Payin, .. }] if *amount == usd("250")
    ));
    let mut p = p;
    confirmed[0].events.iter().for_each(|e| p.apply(e));
    assert_eq!(p.state.status, PayinStatus::Confirmed);
    assert_eq!(
        code(payin::confirm(
            &p,
            &wallet,
            service,
            TransactionId::new_v7(),
            Timestamp(3)
        )),
        "PAYIN_NOT_PENDING"
    );
    assert_eq!(
        code(payin::fail(&p, service, "bounced", Timestamp(3))),
        "PAYIN_NOT_PENDING"
    );
}

#[test]
fn a_failed_pay_in_credits_nothing_and_stays_failed() {
    let (admin, u) = (as_role(Role::Admin), UserId::new_v7());
    let cmd = announce(admin, u, "psp-9");
    let p: Versioned<Payin> = Versioned::from_events(
        &payin::create(&Versioned::default(), &user(u), &cmd).expect("created")[0].events,
    );
    assert_eq!(
        code(payin::fail(&p, admin, " ", Timestamp(2))),
        "INVALID_TEXT"
    );
    let failed = payin::fail(&p, admin, "card declined", Timestamp(2)).expect("failed");
    assert_eq!(failed.len(), 1, "only the pay-in's stream");
    let mut p = p;
    failed[0].events.iter().for_each(|e| p.apply(e));
    assert_eq!(p.state.status, PayinStatus::Failed);
    assert_eq!(p.state.reason.as_deref(), Some("card declined"));
    assert_eq!(
        code(payin::confirm(
            &p,
            &Versioned::default(),
            admin,
            TransactionId::new_v7(),
            Timestamp(3)
        )),
        "PAYIN_NOT_PENDING"
    );
    assert_eq!(
        code(payin::confirm(
            &Versioned::default(),
            &Versioned::default(),
            admin,
            TransactionId::new_v7(),
            Timestamp(3)
        )),
        "PAYIN_NOT_FOUND"
    );
}
