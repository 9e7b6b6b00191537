//! Funding deadlines end to end: `fundBy` on creation, refused when malformed, past or too
//! far ahead; a draft nobody funded expires once however many servers run; funding after
//! the deadline is refused.

use std::sync::Arc;
use std::time::Duration;

use escrow_tests::{spawn_app, spawn_app_with, two_servers_one_clock, AppOptions, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::contracts::{act, assert_conserved, create, expect, funded_pair, pos};

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn events(app: &TestApp) -> i64 {
    app.event_count().await
}

#[tokio::test]
async fn a_deadline_that_is_malformed_past_or_too_far_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let (buyer, seller) = funded_pair(&app, "10").await;
    let now = chrono::Utc::now();
    let before = events(&app).await;
    for (fund_by, what) in [
        (json!("tomorrow"), "not a time"),
        (json!("2027-01-31 12:00:00Z"), "a space for the T"),
        (json!("2027-13-01T00:00:00Z"), "month 13"),
        (json!("2027-01-31T12:00:00"), "no offset"),
        (
            json!(rfc3339(now - chrono::Duration::minutes(1))),
            "in the past",
        ),
        (
            json!(rfc3339(now + chrono::Duration::days(367))),
            "more than a year ahead",
        ),
    ] {
        expect(
            &create(
                &app,
                &buyer,
                &buyer,
                &seller,
                "1",
                json!({"fundBy": fund_by}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_FUND_BY",
            what,
        );
    }
    expect(
        &create(
            &app,
            &buyer,
            &buyer,
            &seller,
            "1",
            json!({"fundBy": 1_900_000_000}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
        "a number",
    );
    assert_eq!(events(&app).await, before, "nothing written");

    let at = now + chrono::Duration::days(366) - chrono::Duration::minutes(1);
    let ok = create(
        &app,
        &buyer,
        &buyer,
        &seller,
        "1",
        json!({"fundBy": rfc3339(at)}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
    assert_eq!(ok.str("fundBy"), rfc3339(at));
    let plain = create(&app, &buyer, &buyer, &seller, "1", json!({})).await;
    assert!(
        plain.body.get("fundBy").is_none(),
        "a contract without a deadline answers as before: {:?}",
        plain.body
    );
}

/// Two servers' schedulers expire the same unfunded drafts: each once, as `system`. A
/// draft funded in time, and one without a deadline, stay as they are; an expired draft
/// cannot be funded.
///
/// Fails with `CONTRACT_NOT_DRAFT` removed from `contract::expire` (seen: the second
/// scheduler's expiry of an expired draft is written too, 2 events for one contract).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unfunded_drafts_expire_once_with_two_servers() {
    let (clock, app, second) = two_servers_one_clock().await;
    let (buyer, seller) = funded_pair(&app, "100").await;
    let fund_by = json!({"fundBy": rfc3339(chrono::Utc::now() + chrono::Duration::hours(1))});
    let mut drafts = Vec::new();
    for i in 0..8 {
        let server = if i % 2 == 0 { &app } else { &second };
        let c = create(server, &buyer, &buyer, &seller, "5", fund_by.clone()).await;
        assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
        drafts.push(c.str("id"));
    }
    let in_time = create(&app, &buyer, &buyer, &seller, "5", fund_by.clone())
        .await
        .str("id");
    assert_eq!(
        act(&second, &buyer, &in_time, "fund", None).await.status,
        StatusCode::OK
    );
    let open_ended = create(&app, &buyer, &buyer, &seller, "5", json!({}))
        .await
        .str("id");

    // Not due yet: nothing expires.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let expired_events = || async {
        let rows: Vec<(String, Value)> = sqlx::query_as(
            "SELECT stream_id, metadata FROM events WHERE event_type = 'ContractExpired'",
        )
        .fetch_all(&app.pool)
        .await
        .expect("read the events");
        rows
    };
    assert!(expired_events().await.is_empty());

    clock.advance(chrono::Duration::hours(1) + chrono::Duration::seconds(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (done,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM rm_contracts WHERE status = 'EXPIRED'")
                .fetch_one(&app.pool)
                .await
                .expect("count");
        if done == 8 || tokio::time::Instant::now() > deadline {
            assert_eq!(done, 8, "every unfunded draft expired");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both schedulers keep scanning: give the loser time to try again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expired = expired_events().await;
    assert!(expired.iter().all(|(_, m)| m["actor"] == json!("system")));
    let mut streams: Vec<String> = expired.into_iter().map(|(s, _)| s).collect();
    streams.sort();
    let mut want: Vec<String> = drafts.iter().map(|id| format!("contract-{id}")).collect();
    want.sort();
    assert_eq!(streams, want, "each unfunded draft expired exactly once");

    let refused = act(&app, &buyer, &drafts[0], "fund", None).await;
    expect(
        &refused,
        StatusCode::CONFLICT,
        "CONTRACT_NOT_DRAFT",
        "fund an expired draft",
    );
    assert!(app.wait_for_read_models(Duration::from_secs(10)).await);
    for (id, status) in [
        (drafts[0].as_str(), "EXPIRED"),
        (in_time.as_str(), "ACTIVE"),
        (open_ended.as_str(), "DRAFT"),
    ] {
        let c = second
            .get(&format!("/contracts/{id}"), Some(&seller.token))
            .await;
        assert_eq!(c.str("status"), status, "{id}");
    }
    let listed = app
        .get(
            &format!("/contracts/user/{}?status=EXPIRED&limit=100", buyer.id),
            Some(&buyer.token),
        )
        .await;
    assert_eq!(
        listed.body["items"].as_array().map(Vec::len),
        Some(8),
        "{:?}",
        listed.body
    );
    let history = app
        .get(
            &format!("/contracts/{}/history", drafts[0]),
            Some(&buyer.token),
        )
        .await;
    assert!(
        history.body.to_string().contains("ContractExpired"),
        "{:?}",
        history.body
    );
    assert_conserved(&app).await;
}

/// Funding once the deadline has passed is refused even before a scheduler expired the
/// draft: the deadline is checked against the contract's own stream. The funding server
/// runs no scheduler (the `api` role) and its clock is an hour ahead of the other's, whose
/// scheduler therefore leaves the draft alone.
#[tokio::test]
async fn funding_after_the_deadline_is_refused() {
    let app = spawn_app().await;
    let late_clock = Arc::new(api::clock::ManualClock::default());
    let late = spawn_app_with(AppOptions {
        clock: Some(late_clock.clone()),
        share_with: Some(app.shared()),
        role: Some(api::config::WorkerRole::Api),
        ..Default::default()
    })
    .await;
    let (buyer, seller) = funded_pair(&app, "10").await;
    let fund_by = rfc3339(chrono::Utc::now() + chrono::Duration::hours(1));
    let c = create(
        &app,
        &buyer,
        &buyer,
        &seller,
        "5",
        json!({"fundBy": fund_by}),
    )
    .await;
    let id = c.str("id");
    late_clock.advance(chrono::Duration::hours(1));
    let before = app.event_count().await;
    expect(
        &act(&late, &buyer, &id, "fund", None).await,
        StatusCode::CONFLICT,
        "FUNDING_DEADLINE_PASSED",
        "fund after fundBy",
    );
    assert_eq!(app.event_count().await, before, "nothing written");
    let in_time = act(&app, &buyer, &id, "fund", None).await;
    assert_eq!(in_time.status, StatusCode::OK, "{:?}", in_time.body);
    assert!(pos(&in_time) > 0);
}
