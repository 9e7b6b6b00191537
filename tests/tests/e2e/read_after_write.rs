//! A GET of something that exists never answers 404 because the read models are behind:
//! it waits for them (bounded), and an id nobody created still answers 404 at once.

use std::time::{Duration, Instant};

use api::config::WorkerRole;
use escrow_tests::{spawn_app_with, AppOptions};
use reqwest::StatusCode;
use serde_json::json;

/// Fails without `read_or_wait` in the contract handler (seen: the contract the caller
/// had just created answered 404 while nothing projected it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_exists_is_waited_for_and_an_unknown_id_answers_404_at_once() {
    // A server that stores commands but projects nothing: its read models stay empty until
    // a second server, which projects, joins the same ledger.
    let api_only = spawn_app_with(AppOptions {
        role: Some(WorkerRole::Api),
        read_wait_ms: Some(3_000),
        ..Default::default()
    })
    .await;
    let (buyer, seller) = (api_only.user().await, api_only.user().await);
    let created = api_only
        .post(
            "/contracts",
            Some(&buyer.token),
            json!({"sellerId": seller.id, "buyerId": buyer.id, "title": "t", "amount": "5"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.str("id");

    let started = Instant::now();
    let unknown = api_only
        .get(
            &format!("/contracts/{}", uuid::Uuid::now_v7()),
            Some(&buyer.token),
        )
        .await;
    assert_eq!(unknown.code(), "CONTRACT_NOT_FOUND");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "an unknown id is not waited for: {:?}",
        started.elapsed()
    );

    // Nothing projects: after the bounded wait, a 503 to retry, never a 404.
    let started = Instant::now();
    let behind = api_only
        .get(&format!("/contracts/{id}"), Some(&buyer.token))
        .await;
    assert_eq!(
        (behind.status, behind.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "READ_MODEL_BEHIND"),
        "{:?}",
        behind.body
    );
    assert!(started.elapsed() >= Duration::from_secs(3), "it waited");
    assert_eq!(behind.headers["retry-after"], "1");
    let me = api_only
        .get(&format!("/users/{}", seller.id), Some(&seller.token))
        .await;
    assert_eq!(me.code(), "READ_MODEL_BEHIND", "{:?}", me.body);

    // A read issued now waits, and answers once a projecting server catches up.
    let reader = {
        let (base, token, path) = (
            api_only.base.clone(),
            buyer.token.clone(),
            format!("/contracts/{id}"),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let res = reqwest::Client::new()
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("sent");
            (res.status(), started.elapsed())
        })
    };
    let _projecting = spawn_app_with(AppOptions {
        share_with: Some(api_only.shared()),
        ..Default::default()
    })
    .await;
    let (status, waited) = reader.await.expect("the reader ran");
    assert_eq!(status, StatusCode::OK, "answered after waiting {waited:?}");
    let wallet = api_only
        .get(&format!("/wallets/{}", seller.id), Some(&seller.token))
        .await;
    assert_eq!(wallet.status, StatusCode::OK, "{:?}", wallet.body);
}
