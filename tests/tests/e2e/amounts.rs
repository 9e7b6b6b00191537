//! Every amount-taking endpoint, driven with extreme and malformed amounts: each answer is
//! a 4xx problem that writes nothing, or a 2xx whose amount is exactly the one sent —
//! never a 5xx, never a dropped connection.

use escrow_tests::{spawn_app, TestApp, TestUser};
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// Amounts as they may appear in a JSON body (`raw` is spliced in as is, so numbers stay
/// numbers): the decimal limits, exponents, 28 and more decimals, other scripts' digits.
fn extreme_amounts() -> Vec<String> {
    let fixed = [
        "79228162514264337593543950335",
        "-79228162514264337593543950335",
        "79228162514264337593543950336",
        "7.9228162514264337593543950335",
        "0.0000000000000000000000000001",
        "0.00000000000000000000000000001",
        "1e2",
        "1E2",
        "1.5e-3",
        "1e400",
        "5.000000000000000000000000000001e0",
        "-0",
        "0",
        "0.001",
        "999999999.99",
        "1000000000",
        "1000000000.01",
        "0.01",
        "00001.50",
    ];
    let strings = [
        "\"79228162514264337593543950335\"",
        "\"1e2\"",
        "\"5.000000000000000000000000000001e0\"",
        "\"١٢\"",
        "\"１２\"",
        "\"NaN\"",
        "\"Infinity\"",
        "\"\"",
        "\" 1\"",
        "\"1 \"",
        "\"0x10\"",
        "\"+1\"",
        "\"--1\"",
        "\"1.\"",
        "\".5\"",
        "\"1.2.3\"",
        "\"12.50\"",
        "\"0.0000000000000000000000000001\"",
        "null",
        "true",
        "[1]",
        "{\"v\": 1}",
    ];
    let mut out: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    out.extend(strings.iter().map(|s| s.to_string()));
    // And random text over the characters a number is written with, and some that look
    // like them.
    let alphabet: Vec<char> = "0123456789.-+eE٣９ ".chars().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(34);
    for _ in 0..40 {
        let len = rng.gen_range(1..=34);
        let s: String = (0..len)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        out.push(serde_json::to_string(&s).unwrap());
    }
    out
}

/// The exact value an accepted amount must have: the text read as a plain decimal.
fn exact(raw: &str) -> Option<Decimal> {
    let text = raw.trim_matches('"');
    domain::money::parse_decimal(text).ok()
}

async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    who: &TestUser,
    body: String,
) -> (StatusCode, Value) {
    let res = app
        .http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(&who.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: the connection failed: {e}"));
    let status = res.status();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Checks one answer: a 4xx problem that wrote nothing, or a 2xx.
async fn judged(
    app: &TestApp,
    what: &str,
    answer: &(StatusCode, Value),
    events_before: i64,
) -> bool {
    let (status, body) = answer;
    assert!(
        status.is_success() || status.is_client_error(),
        "{what}: {status} {body}"
    );
    if status.is_client_error() {
        assert!(
            body["code"].is_string(),
            "{what}: problem+json with a code: {body}"
        );
        assert_eq!(
            app.event_count().await,
            events_before,
            "{what}: a refusal wrote something"
        );
        return false;
    }
    true
}

#[tokio::test]
async fn extreme_amounts_get_a_4xx_or_the_exact_amount() {
    let app = spawn_app().await;
    let (a, b) = (app.user().await, app.user().await);
    let arbiter = app.grant(&app.user().await, "arbiter").await;
    assert_eq!(app.deposit(&a, "1000000").await.status, StatusCode::CREATED);
    let amounts = extreme_amounts();
    let mut accepted = 0;
    for amount in &amounts {
        let cases = [
            (
                "/wallets/deposit",
                format!(r#"{{"userId":"{}","amount":{amount}}}"#, b.id),
                &b,
            ),
            (
                "/wallets/withdraw",
                format!(r#"{{"userId":"{}","amount":{amount}}}"#, a.id),
                &a,
            ),
            (
                "/transfers",
                format!(r#"{{"toUserId":"{}","amount":{amount}}}"#, b.id),
                &a,
            ),
            (
                "/contracts",
                format!(
                    r#"{{"sellerId":"{}","buyerId":"{}","title":"t","amount":{amount}}}"#,
                    b.id, a.id
                ),
                &a,
            ),
        ];
        for (path, body, who) in cases {
            let before = app.event_count().await;
            let answer = raw(&app, Method::POST, path, who, body).await;
            if judged(&app, &format!("{path} {amount}"), &answer, before).await {
                accepted += 1;
                let value = exact(amount).expect("only plain decimals are accepted");
                let got = if path == "/contracts" {
                    &answer.1["amount"]
                } else {
                    &answer.1["transaction"]["amount"]
                };
                let got: Decimal = got.as_str().unwrap().parse().unwrap();
                assert_eq!(got, value, "{path} {amount}: the amount sent");
            }
        }
    }
    assert!(
        accepted >= 12,
        "the plain amounts were accepted ({accepted})"
    );

    // Partial release and refund of a funded contract, and an arbiter's split.
    let c = app
        .post(
            "/contracts",
            Some(&a.token),
            json!({"sellerId": b.id, "buyerId": a.id, "title": "t", "amount": "50000"}),
        )
        .await
        .str("id");
    let funded = app
        .request(
            Method::POST,
            &format!("/contracts/{c}/fund"),
            Some(&a.token),
            None,
            &[],
        )
        .await;
    assert_eq!(funded.status, StatusCode::OK);
    // (`null` is no amount: the whole held amount, which would end the contract.)
    for amount in amounts.iter().filter(|a| *a != "null") {
        for (step, who) in [("release", &a), ("refund", &b)] {
            let before = app.event_count().await;
            let path = format!("/contracts/{c}/{step}");
            let answer = raw(
                &app,
                Method::POST,
                &path,
                who,
                format!(r#"{{"amount":{amount}}}"#),
            )
            .await;
            judged(&app, &format!("{path} {amount}"), &answer, before).await;
        }
    }
    let d = app
        .post(
            "/disputes",
            Some(&a.token),
            json!({"contractId": c, "description": "d"}),
        )
        .await;
    assert_eq!(d.status, StatusCode::CREATED, "{:?}", d.body);
    let path = format!("/disputes/{}/resolve", d.str("id"));
    let held: Decimal = app
        .get(
            &format!("/contracts/{c}?minPosition={}", app.event_count().await),
            Some(&a.token),
        )
        .await
        .str("heldAmount")
        .parse()
        .unwrap();
    for s in &amounts {
        for other in ["\"0\"", s.as_str()] {
            let before = app.event_count().await;
            let body = format!(
                r#"{{"resolution":"r","outcome":"SPLIT","sellerAmount":{s},"buyerAmount":{other}}}"#
            );
            let answer = raw(&app, Method::PUT, &path, &arbiter, body).await;
            if judged(&app, &format!("split {s} + {other}"), &answer, before).await {
                let sum = exact(s)
                    .zip(exact(other))
                    .and_then(|(x, y)| x.checked_add(y));
                assert_eq!(
                    sum,
                    Some(held),
                    "split {s} + {other} accepted: {}",
                    answer.1
                );
                return;
            }
        }
    }
    // None of them summed to what is held; the exact split still settles.
    let settled = app
        .request(
            Method::PUT,
            &path,
            Some(&arbiter.token),
            Some(&json!({"resolution": "r", "outcome": "SPLIT", "sellerAmount": held.to_string(), "buyerAmount": "0"})),
            &[],
        )
        .await;
    assert_eq!(settled.status, StatusCode::OK, "{:?}", settled.body);
}
