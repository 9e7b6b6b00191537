//! Given events → when command → then events (or a rejection), for webhook endpoints.

use domain::webhook::{self, filter_matches, parse_filter, ChangeWebhook, WebhookChange};
use domain::{
    Actor, DomainError, Event, Role, StreamWrite, Timestamp, UserId, Versioned, WebhookEndpoint,
    WebhookId, WebhookStatus,
};

fn admin() -> Actor {
    Actor::User {
        id: UserId::new_v7(),
        role: Role::Admin,
    }
}

fn when(
    given: &[Event],
    actor: Actor,
    id: WebhookId,
    change: WebhookChange,
) -> Result<Vec<StreamWrite>, DomainError> {
    let state: Versioned<WebhookEndpoint> = Versioned::from_events(given);
    webhook::decide(
        &state,
        &ChangeWebhook {
            actor,
            webhook_id: id,
            change,
            now: Timestamp(1_000),
        },
    )
}

fn create(events: &[&str]) -> WebhookChange {
    WebhookChange::Create {
        url: "https://example.com/hooks".into(),
        events: events.iter().map(|s| s.to_string()).collect(),
        description: Some("orders".into()),
    }
}

fn created(id: WebhookId) -> Vec<Event> {
    let writes = when(&[], admin(), id, create(&["contract.*", "FundsDeposited"])).expect("ok");
    writes.into_iter().flat_map(|w| w.events).collect()
}

fn code(r: Result<Vec<StreamWrite>, DomainError>) -> &'static str {
    r.expect_err("refused").code()
}

#[test]
fn an_admin_creates_an_endpoint_with_a_parsed_filter() {
    let id = WebhookId::new_v7();
    let writes = when(&[], admin(), id, create(&["contract.*", "*", "contract.*"])).expect("ok");
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].expected_version, 0);
    match &writes[0].events[..] {
        [Event::WebhookEndpointCreated { events, url, .. }] => {
            assert_eq!(
                events,
                &["contract.*", "*"],
                "duplicates dropped, order kept"
            );
            assert_eq!(url, "https://example.com/hooks");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn only_an_admin_manages_endpoints() {
    let id = WebhookId::new_v7();
    for role in [Role::User, Role::Service, Role::Arbiter] {
        let actor = Actor::User {
            id: UserId::new_v7(),
            role,
        };
        assert_eq!(code(when(&[], actor, id, create(&["*"]))), "FORBIDDEN");
    }
    assert_eq!(
        code(when(&[], Actor::System, id, create(&["*"]))),
        "FORBIDDEN"
    );
}

#[test]
fn empty_and_unknown_filters_are_refused() {
    let id = WebhookId::new_v7();
    assert_eq!(code(when(&[], admin(), id, create(&[]))), "INVALID_WEBHOOK");
    for bad in ["ContractFundd", "contracts.*", "", "*.*", "contract.>"] {
        assert_eq!(
            code(when(&[], admin(), id, create(&[bad]))),
            "UNKNOWN_EVENT_FILTER",
            "{bad:?}"
        );
    }
}

#[test]
fn filters_match_types_categories_and_everything() {
    let f = parse_filter(&["contract.*".into(), "FundsDeposited".into()]).expect("valid");
    assert!(filter_matches(&f, "contract-1", "ContractFunded"));
    assert!(filter_matches(&f, "wallet-1", "FundsDeposited"));
    assert!(!filter_matches(&f, "wallet-1", "TransferSent"));
    assert!(!filter_matches(&f, "dispute-1", "DisputeRaised"));
    assert!(filter_matches(&["*".into()], "payout-1", "PayoutRequested"));
}

#[test]
fn updates_deletes_and_rotations_need_an_existing_endpoint() {
    let id = WebhookId::new_v7();
    let update = || WebhookChange::Update {
        url: None,
        events: None,
        description: None,
        status: Some(WebhookStatus::Paused),
    };
    assert_eq!(code(when(&[], admin(), id, update())), "WEBHOOK_NOT_FOUND");
    assert_eq!(
        code(when(&[], admin(), id, WebhookChange::Delete)),
        "WEBHOOK_NOT_FOUND"
    );
    let mut given = created(id);
    let paused = when(&given, admin(), id, update()).expect("ok");
    assert_eq!(paused[0].expected_version, 1);
    given.extend(
        when(&given, admin(), id, WebhookChange::Delete).expect("ok")[0]
            .events
            .clone(),
    );
    let state: Versioned<WebhookEndpoint> = Versioned::from_events(&given);
    assert!(state.state.deleted);
    assert_eq!(
        code(when(&given, admin(), id, update())),
        "WEBHOOK_NOT_FOUND"
    );
    assert_eq!(
        code(when(
            &given,
            admin(),
            id,
            WebhookChange::RotateSecret {
                previous_until: Timestamp(2)
            }
        )),
        "WEBHOOK_NOT_FOUND"
    );
}

#[test]
fn an_admin_cannot_set_disabled_but_the_ledger_disables_once_and_active_reenables() {
    let id = WebhookId::new_v7();
    let mut given = created(id);
    let set = |status| WebhookChange::Update {
        url: None,
        events: None,
        description: None,
        status: Some(status),
    };
    assert_eq!(
        code(when(&given, admin(), id, set(WebhookStatus::Disabled))),
        "INVALID_WEBHOOK"
    );
    let disable = || WebhookChange::Disable {
        delivery_id: uuid::Uuid::nil(),
        reason: "HTTP 500".into(),
    };
    assert_eq!(code(when(&given, admin(), id, disable())), "FORBIDDEN");
    given.extend(
        when(&given, Actor::System, id, disable()).expect("ok")[0]
            .events
            .clone(),
    );
    let state: Versioned<WebhookEndpoint> = Versioned::from_events(&given);
    assert_eq!(state.state.status, WebhookStatus::Disabled);
    assert_eq!(
        code(when(&given, Actor::System, id, disable())),
        "WEBHOOK_DISABLED"
    );
    given.extend(
        when(&given, admin(), id, set(WebhookStatus::Active)).expect("ok")[0]
            .events
            .clone(),
    );
    let state: Versioned<WebhookEndpoint> = Versioned::from_events(&given);
    assert_eq!(state.state.status, WebhookStatus::Active);
}
