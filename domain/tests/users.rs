//! Given events → when command → then events (or a rejection), for an application's own
//! audit entries about a user.

use domain::user::{record_activity, RecordActivity};
use domain::{Actor, Email, Event, Role, StreamId, Timestamp, UserId, Versioned};

fn user(id: UserId) -> Versioned<domain::User> {
    Versioned::from_events(&[Event::UserRegistered {
        user_id: id,
        email: Email::parse("x@example.com").expect("valid"),
        role: Role::User,
    }])
}

fn entry(action: &str) -> RecordActivity {
    RecordActivity {
        action: action.into(),
        resource: Some("contract".into()),
        resource_id: None,
        details: Some(serde_json::json!({"ip": "127.0.0.1"})),
        now: Timestamp(5),
    }
}

fn code(e: Result<Vec<domain::StreamWrite>, domain::DomainError>) -> &'static str {
    e.expect_err("rejected").code()
}

#[test]
fn a_user_records_its_own_activity_and_an_admin_anyones() {
    let id = UserId::new_v7();
    let u = user(id);
    let own = Actor::User {
        id,
        role: Role::User,
    };
    let then = record_activity(&u, own, &entry("  login ")).expect("recorded");
    assert_eq!(then[0].stream, StreamId::user(id));
    assert_eq!(then[0].expected_version, 1);
    assert!(matches!(
        &then[0].events[0],
        Event::ActivityRecorded { action, resource: Some(r), recorded_at, .. }
            if action == "login" && r == "contract" && *recorded_at == Timestamp(5)
    ));
    let admin = Actor::User {
        id: UserId::new_v7(),
        role: Role::Admin,
    };
    assert!(record_activity(&u, admin, &entry("reviewed")).is_ok());
    let other = Actor::User {
        id: UserId::new_v7(),
        role: Role::Arbiter,
    };
    assert_eq!(code(record_activity(&u, other, &entry("x"))), "FORBIDDEN");
    assert_eq!(
        code(record_activity(&Versioned::default(), admin, &entry("x"))),
        "USER_NOT_FOUND"
    );
}

#[test]
fn an_activity_entry_is_bounded() {
    let id = UserId::new_v7();
    let own = Actor::User {
        id,
        role: Role::User,
    };
    let u = user(id);
    for bad in ["", "   ", "a\u{7}b", &"a".repeat(101)] {
        assert_eq!(
            code(record_activity(&u, own, &entry(bad))),
            "INVALID_TEXT",
            "{bad:?}"
        );
    }
    assert!(record_activity(&u, own, &entry(&"a".repeat(100))).is_ok());
    let mut big = entry("x");
    big.details = Some(serde_json::json!({"blob": "b".repeat(4_100)}));
    assert_eq!(code(record_activity(&u, own, &big)), "INVALID_DETAILS");
    let mut nul = entry("x");
    nul.details = Some(serde_json::json!({"k": ["a\u{0}b"]}));
    assert_eq!(code(record_activity(&u, own, &nul)), "INVALID_DETAILS");
    let mut long_id = entry("x");
    long_id.resource_id = Some("r".repeat(101));
    assert_eq!(code(record_activity(&u, own, &long_id)), "INVALID_TEXT");
}
