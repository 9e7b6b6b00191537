//! A wallet's history as people read it: direction, running balance and counterparty;
//! statements (JSON and CSV) and balances as of an instant, each checked against the fold
//! of the wallet's own events; looking a user up by e-mail.

use chrono::{DateTime, SecondsFormat, Utc};
use domain::codec::decode;
use domain::stream::Aggregate;
use domain::{Currency, Wallet, WalletId};
use escrow_tests::{spawn_app, spawn_app_with, AppOptions, TestApp, TestUser};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a decimal string: {v}"))
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The balance of `user`'s USD wallet after each of its events: (recorded at, balance).
async fn folded(app: &TestApp, user: &str) -> Vec<(DateTime<Utc>, Decimal)> {
    let id = WalletId::of(domain::UserId(user.parse().expect("uuid")), Currency::USD);
    let rows: Vec<(String, i32, Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT event_type, schema_version, data, recorded_at FROM events \
         WHERE stream_id = $1 ORDER BY version",
    )
    .bind(format!("wallet-{id}"))
    .fetch_all(&app.pool)
    .await
    .expect("events");
    let mut w = Wallet::default();
    rows.into_iter()
        .map(|(t, v, data, at)| {
            let e = decode(&t, v, &data).expect("decodes");
            w.apply(&e);
            (at, w.balance)
        })
        .collect()
}

/// The folded balance just before `at` (0 before the first event).
fn balance_before(fold: &[(DateTime<Utc>, Decimal)], at: DateTime<Utc>) -> Decimal {
    fold.iter()
        .take_while(|(t, _)| *t < at)
        .last()
        .map_or(Decimal::ZERO, |(_, b)| *b)
}

async fn contract_paid(app: &TestApp, buyer: &TestUser, seller: &TestUser, amount: &str) {
    let c = app
        .post(
            "/contracts",
            Some(&buyer.token),
            json!({"buyerId": buyer.id, "sellerId": seller.id, "title": "logo", "amount": amount}),
        )
        .await;
    let id = c.str("id");
    for (who, verb) in [(buyer, "fund"), (seller, "deliver"), (buyer, "release")] {
        let r = app
            .post(
                &format!("/contracts/{id}/{verb}"),
                Some(&who.token),
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{verb}: {:?}", r.body);
    }
}

/// A history of every kind of movement for Alice, with an instant recorded after each
/// step (and Alice's wallet as she read it then).
async fn history(app: &TestApp) -> (TestUser, TestUser, Vec<(DateTime<Utc>, Value)>) {
    let (alice, bob) = (app.user().await, app.user().await);
    let service = app.grant(&app.user().await, "service").await;
    let mut seen = Vec::new();
    let mut mark = |at: DateTime<Utc>, w: Value| seen.push((at, w));
    let read = |who: &TestUser, position: Option<i64>| {
        let path = match position {
            Some(p) => format!("/wallets/{}?minPosition={p}", who.id),
            None => format!("/wallets/{}", who.id),
        };
        let token = who.token.clone();
        async move { app.get(&path, Some(&token)).await.body }
    };
    mark(Utc::now(), read(&alice, None).await);
    app.post(
        "/wallets/deposit",
        Some(&alice.token),
        json!({"userId": alice.id, "amount": "300", "description": "Salary, \"December\"\nthanks"}),
    )
    .await;
    mark(Utc::now(), read(&alice, None).await);
    app.deposit(&bob, "100").await;
    app.transfer(&alice, &bob.id, "25.50").await;
    mark(Utc::now(), read(&alice, None).await);
    app.transfer(&bob, &alice.id, "10").await;
    mark(Utc::now(), read(&alice, None).await);
    // Funded and not yet released: held in escrow.
    let c = app
        .post(
            "/contracts",
            Some(&alice.token),
            json!({"buyerId": alice.id, "sellerId": bob.id, "title": "held", "amount": "40"}),
        )
        .await;
    app.post(
        &format!("/contracts/{}/fund", c.str("id")),
        Some(&alice.token),
        json!({}),
    )
    .await;
    mark(Utc::now(), read(&alice, None).await);
    contract_paid(app, &bob, &alice, "15").await;
    mark(Utc::now(), read(&alice, None).await);
    let p = app
        .post(
            "/payouts",
            Some(&alice.token),
            json!({"amount": "50", "destination": "IBAN"}),
        )
        .await;
    mark(Utc::now(), read(&alice, None).await);
    let done = app
        .post(
            &format!("/payouts/{}/complete", p.str("id")),
            Some(&service.token),
            json!({"providerReference": "po-1"}),
        )
        .await;
    let position = done.body["position"].as_i64();
    mark(Utc::now(), read(&alice, position).await);
    let p = app
        .post(
            "/payouts",
            Some(&alice.token),
            json!({"amount": "5", "destination": "IBAN"}),
        )
        .await;
    app.post(
        &format!("/payouts/{}/fail", p.str("id")),
        Some(&service.token),
        json!({"reason": "closed"}),
    )
    .await;
    mark(Utc::now(), read(&alice, None).await);
    app.post(
        &format!("/contracts/{}/refund", c.str("id")),
        Some(&bob.token),
        json!({}),
    )
    .await;
    mark(Utc::now(), read(&alice, None).await);
    (alice, bob, seen)
}

#[tokio::test]
async fn history_items_say_direction_balance_after_and_counterparty() {
    let app = spawn_app().await;
    let (alice, bob, _) = history(&app).await;
    let page = app
        .get(
            &format!("/wallets/{}/transactions?limit=100", alice.id),
            Some(&alice.token),
        )
        .await;
    let items = page.body["items"].as_array().cloned().unwrap_or_default();
    let find = |kind: &str, direction: &str| {
        items
            .iter()
            .find(|i| i["type"] == kind && i["direction"] == direction)
            .cloned()
            .unwrap_or_else(|| panic!("{kind} {direction} in {items:?}"))
    };
    let sent = find("TRANSFER", "OUT");
    assert_eq!(
        (&sent["counterpartyUserId"], &sent["counterpartyEmail"]),
        (&json!(bob.id), &json!(bob.email))
    );
    assert_eq!(sent["balanceAfter"], "274.50");
    let received = find("TRANSFER", "IN");
    assert_eq!(received["counterpartyUserId"], json!(bob.id));
    assert_eq!(received["balanceAfter"], "284.50");
    let hold = find("ESCROW_HOLD", "OUT");
    assert_eq!(hold["counterpartyUserId"], json!(bob.id), "the seller");
    let paid = find("PAYMENT", "IN");
    assert_eq!(paid["counterpartyUserId"], json!(bob.id), "the buyer");
    let deposit = find("DEPOSIT", "IN");
    assert!(deposit.get("counterpartyUserId").is_none());
    // The running balance holds from item to item (newest first). The other party's
    // movements on a shared contract have no direction here.
    let own: Vec<Value> = items
        .iter()
        .filter(|i| i.get("direction").is_some())
        .cloned()
        .collect();
    assert!(
        items.len() > own.len(),
        "Bob's side of their contract is listed too"
    );
    for pair in own.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        let sign = if newer["direction"] == "IN" {
            Decimal::ONE
        } else {
            -Decimal::ONE
        };
        assert_eq!(
            dec(&older["balanceAfter"]) + sign * dec(&newer["amount"]),
            dec(&newer["balanceAfter"]),
            "{older} then {newer}"
        );
    }
    // Bob sees Alice as his counterparty.
    let bobs = app
        .get(
            &format!("/wallets/{}/transactions", bob.id),
            Some(&bob.token),
        )
        .await;
    let from_alice = bobs.body["items"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|i| i["type"] == "TRANSFER" && i["direction"] == "IN")
                .cloned()
        })
        .expect("bob's incoming transfer");
    assert_eq!(from_alice["counterpartyEmail"], json!(alice.email));
    // Each side of a transfer has its own balance after, whichever leg the projection
    // took first (fails without merging the second leg into the row: seen).
    assert_eq!(from_alice["balanceAfter"], "125.50");
}

#[tokio::test]
async fn a_statement_equals_the_fold_of_the_wallets_events() {
    let app = spawn_app().await;
    let (alice, _bob, seen) = history(&app).await;
    assert!(
        app.wait_for_read_models(std::time::Duration::from_secs(10))
            .await
    );
    let fold = folded(&app, &alice.id).await;
    let money_events = fold.windows(2).filter(|w| w[0].1 != w[1].1).count();

    // The whole life of the wallet, and a period starting mid-way (after the first
    // transfer): opening + movements = closing, and both equal the fold.
    for from in [None, Some(seen[3].0)] {
        let path = match from {
            None => format!("/wallets/{}/statement", alice.id),
            Some(t) => format!("/wallets/{}/statement?from={}", alice.id, instant(t)),
        };
        let s = app.get(&path, Some(&alice.token)).await;
        assert_eq!(s.status, StatusCode::OK, "{:?}", s.body);
        let opening = dec(&s.body["openingBalance"]);
        let closing = dec(&s.body["closingBalance"]);
        let items = s.body["items"].as_array().cloned().unwrap_or_default();
        let mut running = opening;
        for i in &items {
            running += if i["direction"] == "IN" {
                dec(&i["amount"])
            } else {
                -dec(&i["amount"])
            };
            assert_eq!(running, dec(&i["balanceAfter"]), "{i}");
        }
        assert_eq!(running, closing);
        let totals: Decimal = s.body["totals"]
            .as_object()
            .map(|o| o.values().map(dec).sum())
            .unwrap_or_default();
        assert_eq!(opening + totals, closing);
        let want_opening = from.map_or(Decimal::ZERO, |t| balance_before(&fold, t));
        assert_eq!(opening, want_opening, "opening, from {from:?}");
        assert_eq!(closing, fold.last().map(|f| f.1).unwrap_or_default());
        if from.is_none() {
            assert_eq!(items.len(), money_events, "every movement");
        }
    }

    // CSV: RFC 4180, one row per movement, the same numbers.
    let res = app
        .http
        .get(format!(
            "{}/wallets/{}/statement?format=csv",
            app.base, alice.id
        ))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/csv; charset=utf-8")
    );
    let csv = res.text().await.expect("body");
    let json = app
        .get(
            &format!("/wallets/{}/statement", alice.id),
            Some(&alice.token),
        )
        .await;
    assert!(
        csv.starts_with("id,createdAt,type,direction,amount,currency,balanceAfter,description,")
    );
    assert!(
        csv.contains("\"Salary, \"\"December\"\"\nthanks\""),
        "a field with a comma, quotes and a line break is quoted: {csv}"
    );
    let rows = parse_csv(&csv);
    let items = json.body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), items.len() + 1, "a header and one row per item");
    for (row, item) in rows[1..].iter().zip(&items) {
        assert_eq!(row[0], item["id"].as_str().unwrap_or_default());
        assert_eq!(row[4], item["amount"].as_str().unwrap_or_default());
        assert_eq!(row[6], item["balanceAfter"].as_str().unwrap_or_default());
        assert!(row[1].ends_with('Z'), "UTC: {}", row[1]);
    }
}

/// Splits RFC 4180 text into records (quoted fields may hold commas, quotes, line breaks).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn as_of_answers_the_wallet_as_it_was_at_every_step() {
    let app = spawn_app().await;
    let (alice, _bob, seen) = history(&app).await;
    assert!(
        app.wait_for_read_models(std::time::Duration::from_secs(10))
            .await
    );
    let fold = folded(&app, &alice.id).await;
    for (at, then) in &seen {
        let r = app
            .get(
                &format!("/wallets/{}?asOf={}", alice.id, instant(*at)),
                Some(&alice.token),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        for field in ["balance", "heldInEscrow", "pendingPayouts"] {
            assert_eq!(
                r.body[field], then[field],
                "{field} as of {at}: {:?}",
                r.body
            );
        }
        let folded_then = fold
            .iter()
            .take_while(|(t, _)| t <= at)
            .last()
            .map_or(Decimal::ZERO, |(_, b)| *b);
        assert_eq!(dec(&r.body["balance"]), folded_then, "the fold as of {at}");
        assert_eq!(r.str("asOf")[..19], instant(*at)[..19]);
    }
}

/// Random money movements of every kind Alice's wallet knows; after each, the wallet as
/// she reads it. Then `asOf` each of those instants answers exactly that, and its balance
/// is the fold of her wallet's events up to then.
#[tokio::test]
async fn as_of_equals_the_fold_at_every_step_of_a_random_history() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let service = app.grant(&app.user().await, "service").await;
    app.deposit(&alice, "500").await;
    app.deposit(&bob, "500").await;
    let (mut pending, mut funded): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let mut seen: Vec<(DateTime<Utc>, Value, String)> = Vec::new();
    for step in 0..16 {
        let cents = rng.gen_range(1..3_000);
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let (what, position) = match rng.gen_range(0..7) {
            0 => (
                "deposit",
                app.deposit(&alice, &amount).await.body["position"].as_i64(),
            ),
            1 => (
                "transfer out",
                app.transfer(&alice, &bob.id, &amount).await.body["position"].as_i64(),
            ),
            2 => (
                "transfer in",
                app.transfer(&bob, &alice.id, &amount).await.body["position"].as_i64(),
            ),
            3 => {
                let p = app
                    .post(
                        "/payouts",
                        Some(&alice.token),
                        json!({"amount": amount, "destination": "IBAN"}),
                    )
                    .await;
                if p.status == StatusCode::CREATED {
                    pending.push(p.str("id"));
                }
                ("payout", p.body["position"].as_i64())
            }
            4 if !pending.is_empty() => {
                let id = pending.remove(0);
                let (verb, body) = if rng.gen_bool(0.5) {
                    (
                        "complete",
                        json!({"providerReference": format!("po-{step}")}),
                    )
                } else {
                    ("fail", json!({"reason": "bounced"}))
                };
                let r = app
                    .post(&format!("/payouts/{id}/{verb}"), Some(&service.token), body)
                    .await;
                ("payout settled", r.body["position"].as_i64())
            }
            5 => {
                let c = app
                    .post(
                        "/contracts",
                        Some(&alice.token),
                        json!({"buyerId": alice.id, "sellerId": bob.id, "title": "t", "amount": amount}),
                    )
                    .await;
                let f = app
                    .post(
                        &format!("/contracts/{}/fund", c.str("id")),
                        Some(&alice.token),
                        json!({}),
                    )
                    .await;
                if f.status == StatusCode::OK {
                    funded.push(c.str("id"));
                }
                ("funding", f.body["position"].as_i64())
            }
            _ if !funded.is_empty() => {
                let id = funded.remove(0);
                let r = app
                    .post(
                        &format!("/contracts/{id}/release"),
                        Some(&alice.token),
                        json!({}),
                    )
                    .await;
                ("release", r.body["position"].as_i64())
            }
            _ => ("nothing", None),
        };
        // Read at the step's own position: a payout settled by the service is not Alice's
        // own write.
        let path = match position {
            Some(p) => format!("/wallets/{}?minPosition={p}", alice.id),
            None => format!("/wallets/{}", alice.id),
        };
        let then = app.get(&path, Some(&alice.token)).await.body;
        seen.push((Utc::now(), then, format!("step {step}: {what}")));
    }
    assert!(
        app.wait_for_read_models(std::time::Duration::from_secs(10))
            .await
    );
    let fold = folded(&app, &alice.id).await;
    for (at, then, what) in &seen {
        let r = app
            .get(
                &format!("/wallets/{}?asOf={}", alice.id, instant(*at)),
                Some(&alice.token),
            )
            .await;
        for field in ["balance", "heldInEscrow", "pendingPayouts"] {
            assert_eq!(
                r.body[field], then[field],
                "{field} after {what} (seed {seed})"
            );
        }
        let folded_then = fold
            .iter()
            .take_while(|(t, _)| t <= at)
            .last()
            .map_or(Decimal::ZERO, |(_, b)| *b);
        assert_eq!(
            dec(&r.body["balance"]),
            folded_then,
            "the fold after {what} (seed {seed})"
        );
    }
}

#[tokio::test]
async fn bad_statement_and_as_of_requests_are_refused() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let admin = app.grant(&app.user().await, "admin").await;
    app.deposit(&alice, "5").await;
    let base = format!("/wallets/{}", alice.id);
    let cases = [
        (
            format!("{base}/statement?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_PERIOD",
        ),
        (
            format!("{base}/statement?format=xml"),
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_PARAMETER",
        ),
        (
            format!("{base}/statement?from=2010-01-01T00:00:00Z&to=2021-01-01T00:00:00Z"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_PERIOD",
        ),
        (
            format!("{base}/statement?from=yesterday"),
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_PARAMETER",
        ),
        (
            format!("{base}/statement?currency=EUR"),
            StatusCode::NOT_FOUND,
            "WALLET_NOT_FOUND",
        ),
        (
            format!("{base}/statement?page=2"),
            StatusCode::BAD_REQUEST,
            "UNKNOWN_QUERY_PARAMETER",
        ),
        (
            format!("{base}?asOf=2999-01-01T00:00:00Z"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_AS_OF",
        ),
        (
            format!("{base}?asOf=2026-12-07"),
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_PARAMETER",
        ),
        (
            format!("{base}?asOf=2001-01-01T00:00:00Z"),
            StatusCode::NOT_FOUND,
            "WALLET_NOT_FOUND",
        ),
    ];
    for (path, status, code) in &cases {
        let r = app.get(path, Some(&alice.token)).await;
        assert_eq!(
            (r.status, r.code()),
            (*status, *code),
            "{path}: {:?}",
            r.body
        );
    }
    // The owner and admins read a statement; nobody else.
    let other = app
        .get(&format!("{base}/statement"), Some(&bob.token))
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    let by_admin = app
        .get(&format!("{base}/statement"), Some(&admin.token))
        .await;
    assert_eq!(by_admin.status, StatusCode::OK);
    assert_eq!(by_admin.body["closingBalance"], "5.00");
}

#[tokio::test]
async fn users_are_looked_up_by_e_mail_within_a_budget() {
    let app = spawn_app_with(AppOptions {
        lookups_per_minute: Some(3),
        ..Default::default()
    })
    .await;
    let (alice, bob) = (app.user().await, app.user().await);
    let found = app
        .get(
            &format!("/users/lookup?email={}", bob.email.to_uppercase()),
            Some(&alice.token),
        )
        .await;
    assert_eq!(found.status, StatusCode::OK, "{:?}", found.body);
    assert_eq!(
        (found.str("id"), found.str("email")),
        (bob.id.clone(), bob.email.clone())
    );
    let unknown = app
        .get("/users/lookup?email=nobody@example.com", Some(&alice.token))
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "USER_NOT_FOUND")
    );
    let invalid = app
        .get("/users/lookup?email=not-an-address", Some(&alice.token))
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = app.get("/users/lookup?email=a@example.com", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // Two found or not, one more allowed this minute; then 429 with Retry-After.
    app.get("/users/lookup?email=x@example.com", Some(&alice.token))
        .await;
    let limited = app
        .get(
            &format!("/users/lookup?email={}", bob.email),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        (limited.status, limited.code()),
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED")
    );
    assert!(limited.headers.contains_key("retry-after"));
    // Another user has a budget of its own.
    let by_bob = app
        .get(
            &format!("/users/lookup?email={}", alice.email),
            Some(&bob.token),
        )
        .await;
    assert_eq!(by_bob.str("id"), alice.id);
}
