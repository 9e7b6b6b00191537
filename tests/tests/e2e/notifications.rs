//! Live notifications over WebSocket, across two server processes.

use std::time::{Duration, Instant};

use escrow_tests::{spawn_app, spawn_app_with, AppOptions, TestApp, TestUser};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, u: &TestUser, via_query: bool) -> Socket {
    let base = app.base.replace("http://", "ws://");
    let mut req = if via_query {
        format!("{base}/ws?access_token={}", u.token)
            .into_client_request()
            .unwrap()
    } else {
        format!("{base}/ws").into_client_request().unwrap()
    };
    if !via_query {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", u.token).parse().unwrap(),
        );
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    let hello = next_json(&mut socket).await;
    assert_eq!(hello["type"], json!("hello"));
    socket
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message in time")
            .unwrap()
            .unwrap();
        match m {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(p) => socket.send(Message::Pong(p)).await.unwrap(),
            _ => {}
        }
    }
}

/// The next event message of a given type (skipping the others, such as WalletOpened).
async fn next_event(socket: &mut Socket, event: &str) -> Value {
    loop {
        let v = next_json(socket).await;
        if v["event"] == json!(event) || v["type"] == json!(event) {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_get_their_own_events_on_any_server() {
    let one = spawn_app().await;
    let two = spawn_app_with(AppOptions {
        share_with: Some(one.shared()),
        ..Default::default()
    })
    .await;
    let (a, b) = (one.user().await, one.user().await);
    let admin = one.grant(&one.user().await, "admin").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let registration events pass

    let mut a_on_two = connect(&two, &a, false).await;
    let mut a_on_one = connect(&one, &a, true).await;
    let mut b_on_two = connect(&two, &b, true).await;

    // A command handled by server one reaches A's sockets on both servers.
    let started = Instant::now();
    let d = one.deposit(&a, "42").await;
    assert_eq!(d.status, StatusCode::CREATED);
    let got = next_event(&mut a_on_two, "FundsDeposited").await;
    let latency = started.elapsed();
    assert_eq!(got["data"]["amount"], json!("42.00"));
    assert_eq!(got["position"], d.body["position"]);
    assert_eq!(
        next_event(&mut a_on_one, "FundsDeposited").await["data"]["amount"],
        json!("42.00")
    );
    println!("deposit → WebSocket on the other server: {latency:?}");
    assert!(latency < Duration::from_secs(2), "{latency:?}");

    // B sees its own deposit next, never A's.
    one.deposit(&b, "7").await;
    let first_for_b = next_event(&mut b_on_two, "FundsDeposited").await;
    assert_eq!(
        first_for_b["data"]["amount"],
        json!("7.00"),
        "B does not receive A's events"
    );

    // A transfer: A hears "sent", B hears "received".
    one.transfer(&a, &b.id, "2").await;
    assert_eq!(
        next_event(&mut a_on_two, "TransferSent").await["data"]["amount"],
        json!("2.00")
    );
    assert_eq!(
        next_event(&mut b_on_two, "TransferReceived").await["data"]["amount"],
        json!("2.00")
    );

    // Contract events reach both parties.
    let c = one
        .post(
            "/contracts",
            Some(&a.token),
            json!({"sellerId": b.id, "buyerId": a.id, "title": "t", "amount": "5"}),
        )
        .await;
    assert_eq!(
        next_event(&mut a_on_two, "ContractCreated").await["streamId"],
        json!(format!("contract-{}", c.str("id")))
    );
    assert_eq!(
        next_event(&mut b_on_two, "ContractCreated").await["data"]["title"],
        json!("t")
    );

    // A custom notification from an admin, sent through server one, pushed by server two.
    let n = one
        .post(
            "/notifications",
            Some(&admin.token),
            json!({"userId": b.id, "type": "maintenance", "message": "back soon"}),
        )
        .await;
    assert_eq!(n.status, StatusCode::ACCEPTED, "{:?}", n.body);
    let got = next_event(&mut b_on_two, "notification").await;
    assert_eq!(
        (got["notificationType"].clone(), got["message"].clone()),
        (json!("maintenance"), json!("back soon"))
    );
    let refused = one
        .post(
            "/notifications",
            Some(&a.token),
            json!({"userId": b.id, "type": "x", "message": "y"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_websocket_without_a_valid_token_is_refused_before_upgrade() {
    let app = spawn_app().await;
    let u = app.user().await;
    let base = app.base.replace("http://", "ws://");
    for url in [
        format!("{base}/ws"),
        format!("{base}/ws?access_token=garbage"),
        format!("{base}/ws?userId={}", u.id),
    ] {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), 401, "{url}")
            }
            other => panic!("{url}: expected a 401, got {other:?}"),
        }
    }
    let plain = app.get("/ws", Some(&u.token)).await;
    assert_eq!(
        (plain.status, plain.code()),
        (StatusCode::BAD_REQUEST, "NOT_A_WEBSOCKET")
    );
}
