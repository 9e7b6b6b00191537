//! Money under concurrency: many clients, random transfers, some overdrawing.

use std::time::Duration;

use escrow_tests::{folded_ledger, read_model_balances, spawn_app};
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use rust_decimal::Decimal;

const WALLETS: usize = 50;
const CLIENTS: usize = 20;
const TRANSFERS: usize = 2_000;
const FUNDING: &str = "100.00";

/// Twenty clients, 2,000 random transfers out of fifty wallets, many overdrawing.
///
/// Fails only when all three of the write side's version checks are gone: the committer's
/// (`command-handlers/src/committer/batch.rs`, `still_valid`), the batch layout's head check
/// (`event-store/src/append.rs`, `Rows::lay_out`) and `UNIQUE (stream_id, version)` on
/// `events` (checked with the three removed; with `still_valid` alone removed it passes:
/// they are layers, and one process's racing commands meet the first two before the third).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_transfers_conserve_money_and_never_overdraw() {
    let app = spawn_app().await;
    let users = futures::future::join_all((0..WALLETS).map(|_| app.user())).await;
    for u in &users {
        assert_eq!(app.deposit(u, FUNDING).await.status, StatusCode::CREATED);
    }
    let total_before = Decimal::from(WALLETS as i64) * Decimal::new(10_000, 2);

    let per_client = TRANSFERS / CLIENTS;
    let results = futures::future::join_all((0..CLIENTS).map(|c| {
        let app = &app;
        let users = &users;
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let mut outcomes = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let from = rng.gen_range(0..WALLETS);
                let mut to = rng.gen_range(0..WALLETS);
                if to == from {
                    to = (to + 1) % WALLETS;
                }
                // Up to 60.00 out of 100.00 starting balances: many transfers overdraw.
                let cents: i64 = rng.gen_range(1..=6_000);
                let r = app
                    .transfer(
                        &users[from],
                        &users[to].id,
                        &Decimal::new(cents, 2).to_string(),
                    )
                    .await;
                outcomes.push((r.status, r.code().to_owned()));
            }
            outcomes
        }
    }))
    .await;
    let all: Vec<_> = results.into_iter().flatten().collect();
    let ok = all
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let overdrawn = all
        .iter()
        .filter(|(s, c)| *s == StatusCode::CONFLICT && c == "INSUFFICIENT_FUNDS")
        .count();
    assert_eq!(
        ok + overdrawn,
        TRANSFERS,
        "only successes and deliberate overdrafts: {:?}",
        all.iter()
            .filter(|(s, c)| *s != StatusCode::CREATED && c != "INSUFFICIENT_FUNDS")
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        ok > TRANSFERS / 4 && overdrawn > 0,
        "the workload exercised both paths ({ok} ok, {overdrawn} overdrawn)"
    );

    let (folded, ledger_sum) = folded_ledger(&app.pool).await;
    assert_eq!(
        ledger_sum,
        Decimal::ZERO,
        "double-entry sum over all accounts"
    );
    let wallet_sum: Decimal = folded.values().copied().sum();
    assert_eq!(wallet_sum, total_before, "money is conserved");
    assert!(folded.values().all(|b| *b >= Decimal::ZERO));

    assert!(
        app.wait_for_read_models(Duration::from_secs(30)).await,
        "read models caught up"
    );
    assert_eq!(
        read_model_balances(&app.pool).await,
        folded,
        "read models equal the balances folded from events"
    );
    let (rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM rm_transactions WHERE type = 'TRANSFER'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows as usize, ok, "one history row per successful transfer");
}

/// Two `escrow serve` processes on one Postgres and one NATS, clients spread across both,
/// racing transfers out of the same wallets and fundings of the same contracts.
///
/// Fails without `UNIQUE (stream_id, version)` on `events` (migrations): the two
/// processes' committers each know only their own heads, and both fundings of a contract
/// are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_one_ledger() {
    let one = spawn_app().await;
    let two = escrow_tests::spawn_app_with(escrow_tests::AppOptions {
        share_with: Some(one.shared()),
        ..Default::default()
    })
    .await;
    let users = futures::future::join_all((0..6).map(|_| one.user())).await;
    for u in &users {
        assert_eq!(one.deposit(u, "50").await.status, StatusCode::CREATED);
    }
    // Every user spends from its wallet through both servers at once: 10 × 8.00 against 50.00.
    let spends = futures::future::join_all(users.iter().enumerate().flat_map(|(i, u)| {
        let (one, two, users) = (&one, &two, &users);
        (0..10).map(move |k| async move {
            let server = if k % 2 == 0 { one } else { two };
            let r = server
                .transfer(u, &users[(i + 1 + k % 5) % 6].id, "8.00")
                .await;
            if r.status.is_server_error() {
                eprintln!("5xx: {:?}", r.body);
            }
            r.status
        })
    }))
    .await;
    assert!(
        spends
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{spends:?}"
    );
    // Contracts funded through both servers at once: funded once each.
    for pair in users.chunks(2) {
        let created = one
            .post("/contracts", Some(&pair[0].token), serde_json::json!({"sellerId": pair[1].id, "buyerId": pair[0].id, "title": "t", "amount": "1"}))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let c = created.str("id");
        let path = format!("/contracts/{c}/fund");
        let (a, b) = tokio::join!(
            one.request(
                reqwest::Method::POST,
                &path,
                Some(&pair[0].token),
                None,
                &[]
            ),
            two.request(
                reqwest::Method::POST,
                &path,
                Some(&pair[0].token),
                None,
                &[]
            ),
        );
        let funded = [a.status, b.status]
            .iter()
            .filter(|s| **s == StatusCode::OK)
            .count();
        let (events,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'ContractFunded'",
        )
        .bind(format!("contract-{c}"))
        .fetch_one(&one.pool)
        .await
        .unwrap();
        assert_eq!(
            (funded, events),
            (1, 1),
            "funded exactly once: ok answers and ContractFunded events ({:?} / {:?})",
            a.body,
            b.body
        );
        let loser = if a.status == StatusCode::OK { &b } else { &a };
        assert_eq!(
            (loser.status, loser.code()),
            (StatusCode::CONFLICT, "CONTRACT_NOT_DRAFT"),
            "the other funding is refused: {:?}",
            loser.body
        );
    }
    let (folded, sum) = folded_ledger(&one.pool).await;
    assert_eq!(sum, Decimal::ZERO);
    assert!(folded.values().all(|b| *b >= Decimal::ZERO), "no overdraft");
    assert!(one.wait_for_read_models(Duration::from_secs(20)).await);
    assert_eq!(read_model_balances(&one.pool).await, folded);
    let report = api::verify::verify(&one.pool).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
