//! Replay rebuilds read models equal to the live ones, even after an interruption.

use std::time::Duration;

use escrow_tests::{spawn_app, TestApp};
use projections::replay::{replay, ReplayOptions};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn snapshot(app: &TestApp) -> Vec<Value> {
    let mut out = Vec::new();
    for (table, order) in [
        ("rm_users", "id"),
        ("rm_wallets", "id"),
        ("rm_transactions", "id"),
        ("rm_contracts", "id"),
        ("rm_disputes", "id"),
        ("rm_fee_schedules", "currency"),
        ("rm_revenue", "currency"),
        ("rm_revenue_transactions", "id"),
        ("rm_payins", "id"),
        ("rm_payouts", "id"),
        ("rm_webhooks", "id"),
        // `ord` numbers rows in the order they were written, which a replay renumbers.
        (
            "(SELECT wallet_id, position, at, balance, held_in_escrow, pending_payouts FROM rm_wallet_states)",
            "wallet_id, position",
        ),
        ("projection_streams", "stream_id"),
    ] {
        let (v,): (Option<Value>,) = sqlx::query_as(&format!(
            "SELECT json_agg(t ORDER BY {order}) FROM {table} t"
        ))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        out.push(json!({ table: v }));
    }
    out
}

/// Asserts the read models equal `live`, table by table (a whole snapshot is too long to
/// read in a failure).
async fn same(app: &TestApp, live: &[Value], what: &str) {
    let now = snapshot(app).await;
    assert_eq!(now.len(), live.len());
    for (now, live) in now.iter().zip(live) {
        assert_eq!(now, live, "{what}");
    }
}

/// Every index and constraint of the read-model tables, as the database describes them.
async fn schema(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes \
         WHERE schemaname = 'public' AND (tablename LIKE 'rm\\_%' OR tablename LIKE 'projection\\_%') \
         UNION ALL \
         SELECT conname::text, pg_get_constraintdef(c.oid) FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = 'public' AND (t.relname LIKE 'rm\\_%' OR t.relname LIKE 'projection\\_%') \
         ORDER BY 1, 2",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Users, deposits in two currencies, transfers, a split platform fee, and three contracts:
/// one partly released, one disputed and split by an arbiter, one of two milestones with
/// the first released; then some revenue withdrawn, a wallet frozen and a pay-in
/// confirmed. Every command is checked, so a replay is compared over every kind of read
/// model.
async fn mixed_workload(app: &TestApp) {
    let arbiter = app.grant(&app.user().await, "arbiter").await;
    let admin = app.grant(&app.user().await, "admin").await;
    let schedule = app
        .request(
            Method::PUT,
            "/admin/fee-schedule",
            Some(&admin.token),
            Some(&json!({"currency": "USD", "percentBps": 250, "payer": "SPLIT"})),
            &[],
        )
        .await;
    assert_eq!(schedule.status, StatusCode::OK, "{:?}", schedule.body);
    let users = futures::future::join_all((0..4).map(|_| app.user())).await;
    for (i, u) in users.iter().enumerate() {
        assert_eq!(
            app.deposit(u, &format!("{}.25", 100 + i)).await.status,
            StatusCode::CREATED
        );
    }
    for i in 0..12 {
        let t = app
            .transfer(&users[i % 4], &users[(i + 1) % 4].id, "3.10")
            .await;
        assert_eq!(t.status, StatusCode::CREATED, "{:?}", t.body);
    }
    let eur = app
        .post(
            "/wallets/deposit",
            Some(&users[0].token),
            json!({"userId": users[0].id, "amount": "7", "currency": "EUR"}),
        )
        .await;
    assert_eq!(eur.status, StatusCode::CREATED, "{:?}", eur.body);
    let ok = |r: &escrow_tests::Resp, status: StatusCode, what: &str| {
        assert_eq!(r.status, status, "{what}: {:?}", r.body);
    };
    for k in 0..3 {
        let (b, s) = (&users[k], &users[k + 1]);
        let created = app
            .post(
                "/contracts",
                Some(&b.token),
                if k == 2 {
                    json!({"sellerId": s.id, "buyerId": b.id, "title": "staged",
                           "milestones": [{"title": "a", "amount": "8"}, {"title": "b", "amount": "12"}]})
                } else {
                    json!({"sellerId": s.id, "buyerId": b.id, "title": "job", "amount": "20"})
                },
            )
            .await;
        ok(&created, StatusCode::CREATED, "create");
        let id = created.str("id");
        let funded = app
            .request(
                Method::POST,
                &format!("/contracts/{id}/fund"),
                Some(&b.token),
                None,
                &[],
            )
            .await;
        ok(&funded, StatusCode::OK, "fund");
        match k {
            0 => {
                let released = app
                    .request(
                        Method::POST,
                        &format!("/contracts/{id}/release"),
                        Some(&b.token),
                        Some(&json!({"amount": "5"})),
                        &[],
                    )
                    .await;
                ok(&released, StatusCode::OK, "partial release");
            }
            1 => {
                let x = app
                    .post(
                        "/disputes",
                        Some(&s.token),
                        json!({"contractId": id, "description": "d"}),
                    )
                    .await;
                ok(&x, StatusCode::CREATED, "dispute");
                let resolved = app.request(Method::PUT, &format!("/disputes/{}/resolve", x.str("id")), Some(&arbiter.token),
                    Some(&json!({"resolution": "r", "outcome": "SPLIT", "sellerAmount": "12.5", "buyerAmount": "7.5"})), &[]).await;
                ok(&resolved, StatusCode::OK, "resolve");
            }
            _ => {
                // One milestone delivered and released, the other still held.
                for (who, action) in [(s, "deliver"), (b, "release")] {
                    let r = app
                        .request(
                            Method::POST,
                            &format!("/contracts/{id}/milestones/1/{action}"),
                            Some(&who.token),
                            None,
                            &[],
                        )
                        .await;
                    ok(&r, StatusCode::OK, action);
                }
            }
        }
    }
    let withdrawn = app
        .post(
            "/platform/revenue/withdraw",
            Some(&admin.token),
            json!({"amount": "0.1"}),
        )
        .await;
    ok(&withdrawn, StatusCode::CREATED, "revenue withdrawn");
    let frozen = app
        .post(
            &format!("/admin/wallets/{}/freeze", users[0].id),
            Some(&admin.token),
            json!({"reason": "review"}),
        )
        .await;
    ok(&frozen, StatusCode::OK, "wallet frozen");
    let service = app.grant(&app.user().await, "service").await;
    let payin = app
        .post(
            "/payins",
            Some(&service.token),
            json!({"userId": users[1].id, "amount": "4", "reference": "replayed"}),
        )
        .await;
    ok(&payin, StatusCode::CREATED, "pay-in");
    let confirmed = app
        .post(
            &format!("/payins/{}/confirm", payin.str("id")),
            Some(&service.token),
            json!({}),
        )
        .await;
    ok(&confirmed, StatusCode::OK, "pay-in confirmed");
    for (n, verb, body) in [
        (1, "complete", json!({"providerReference": "po-1"})),
        (2, "fail", json!({"reason": "bank refused"})),
    ] {
        let payout = app
            .post(
                "/payouts",
                Some(&users[1].token),
                json!({"amount": n, "destination": "IBAN DE00 1234"}),
            )
            .await;
        ok(&payout, StatusCode::CREATED, "payout");
        let done = app
            .post(
                &format!("/payouts/{}/{verb}", payout.str("id")),
                Some(&service.token),
                body,
            )
            .await;
        ok(&done, StatusCode::OK, verb);
    }
    // Webhook endpoints: one paused, one deleted.
    let admin = app.grant(&app.user().await, "admin").await;
    for (n, last) in [(1, "PAUSED"), (2, "DELETED")] {
        let hook = app
            .post(
                "/webhooks",
                Some(&admin.token),
                json!({"url": format!("http://127.0.0.1:9/hook{n}"), "events": ["contract.*"]}),
            )
            .await;
        ok(&hook, StatusCode::CREATED, "webhook");
        let path = format!("/webhooks/{}", hook.str("id"));
        let r = if last == "PAUSED" {
            app.request(
                reqwest::Method::PATCH,
                &path,
                Some(&admin.token),
                Some(&json!({"status": "PAUSED"})),
                &[],
            )
            .await
        } else {
            app.request(
                reqwest::Method::DELETE,
                &path,
                Some(&admin.token),
                None,
                &[],
            )
            .await
        };
        assert!(r.status.is_success(), "{last}: {:?}", r.body);
    }
    assert!(app.wait_for_read_models(Duration::from_secs(20)).await);
    let (statuses,): (Vec<String>,) =
        sqlx::query_as("SELECT array_agg(status ORDER BY status) FROM rm_contracts")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["ACTIVE", "ACTIVE", "SETTLED"]);
    let (disputes,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM rm_disputes WHERE status = 'RESOLVED'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(disputes, 1);
}

#[tokio::test]
async fn replay_equals_live_read_models_even_after_an_interruption() {
    let app = spawn_app().await;
    mixed_workload(&app).await;
    let live = snapshot(&app).await;
    let migrated = schema(&app).await;
    assert!(
        migrated
            .iter()
            .any(|(n, _)| n == "rm_transactions_from_idx"),
        "{migrated:?}"
    );

    let stats = replay(&app.pool, &ReplayOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(stats.swapped && stats.events > 40, "{stats:?}");
    same(
        &app,
        &live,
        "a full replay reproduces the read models exactly",
    )
    .await;
    assert_eq!(
        schema(&app).await,
        migrated,
        "the swapped-in tables have the migrated indexes and constraints, by name"
    );

    // Interrupted after two small batches, then run again: still exact.
    let small = ReplayOptions {
        batch_events: 7,
        stop_after_batches: Some(2),
    };
    let first = replay(&app.pool, &small, |_| {}).await.unwrap();
    assert!(!first.swapped);
    same(
        &app,
        &live,
        "the live models are untouched while a replay is under way",
    )
    .await;
    let resumed = replay(
        &app.pool,
        &ReplayOptions {
            batch_events: 7,
            stop_after_batches: None,
        },
        |_| {},
    )
    .await
    .unwrap();
    assert!(resumed.swapped);
    assert_eq!(
        resumed.events + first.events,
        stats.events,
        "the rerun resumed where the first stopped"
    );
    assert_eq!(snapshot(&app).await, live);
    assert_eq!(schema(&app).await, migrated);

    // The live worker keeps working on the swapped-in tables.
    let u = app.user().await;
    let d = app.deposit(&u, "1").await;
    let w = app
        .get(
            &format!("/wallets/{}?minPosition={}", u.id, d.body["position"]),
            Some(&u.token),
        )
        .await;
    assert_eq!(w.str("balance"), "1.00");
    assert!(api::verify::verify(&app.pool).await.unwrap().ok());
}

#[tokio::test]
async fn replay_refuses_a_store_with_a_version_gap_and_leaves_the_live_models() {
    let app = spawn_app().await;
    mixed_workload(&app).await;
    let live = snapshot(&app).await;
    // A stream whose first stored event is version 2: the replay's batches cannot see
    // that (they take each stream's first event as the next), so the check made when it
    // has caught up must.
    sqlx::query(
        "INSERT INTO events (event_id, stream_id, version, event_type, schema_version, data, \
                             metadata, recorded_at, prev_hash, hash) \
         SELECT gen_random_uuid(), 'user-' || gen_random_uuid(), 2, event_type, schema_version, \
                data, metadata, recorded_at, prev_hash, hash \
         FROM events WHERE event_type = 'RoleGranted' LIMIT 1",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let err = replay(&app.pool, &ReplayOptions::default(), |_| {})
        .await
        .expect_err("a gap in the store fails the replay");
    assert!(err.to_string().contains("version gap"), "{err:#}");
    same(&app, &live, "nothing is swapped in when the replay fails").await;
}
