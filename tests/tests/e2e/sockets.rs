//! WebSockets end when they should: at their token's expiry, on an oversized client
//! message, and a user cannot open more than `WS_CONNECTIONS_PER_USER_MAX`.

use std::time::{Duration, Instant};

use escrow_tests::{spawn_app_with, AppOptions, TestApp, TestUser};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn open(
    app: &TestApp,
    u: &TestUser,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("{}/ws", app.base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", u.token).parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await?;
    match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => {
            let hello: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(hello["type"], "hello");
        }
        other => panic!("no hello: {other:?}"),
    }
    Ok(socket)
}

/// Reads until the server closes; returns its close code (None: closed without a frame).
pub(crate) async fn closed_with(socket: &mut Socket, within: Duration) -> Option<CloseCode> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("still open after {within:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Fails without the expiry arm in the socket's loop (`api/src/routes/ws.rs`, `serve`: the
/// `sleep_until(expires)` branch removed): the socket stays open past its token.
#[tokio::test]
async fn a_socket_closes_when_its_token_expires() {
    let app = spawn_app_with(AppOptions {
        jwt_ttl_seconds: Some(2),
        ..Default::default()
    })
    .await;
    let u = app.user().await;
    let opened = Instant::now();
    let mut socket = open(&app, &u).await.expect("upgrade");
    let code = closed_with(&mut socket, Duration::from_secs(6)).await;
    assert_eq!(code, Some(CloseCode::Library(4001)), "closed for its token");
    assert!(opened.elapsed() < Duration::from_secs(4), "at the expiry");
}

/// Fails without the size limit on the upgrade (`api/src/routes/ws.rs`: the
/// `max_message_size` and `max_frame_size` calls removed): a 5 KiB message is taken.
#[tokio::test]
async fn an_oversized_client_message_closes_the_socket() {
    let app = spawn_app_with(AppOptions::default()).await;
    let u = app.user().await;
    let mut socket = open(&app, &u).await.expect("upgrade");
    // A small message is fine: the socket still answers a ping.
    socket
        .send(Message::Text("x".repeat(100).into()))
        .await
        .unwrap();
    socket
        .send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Ok(Message::Pong(p))) = socket.next().await {
                return p;
            }
        }
    })
    .await
    .expect("a pong");
    assert_eq!(&pong[..], b"still there?");
    socket
        .send(Message::Text("x".repeat(5 * 1024).into()))
        .await
        .unwrap();
    let code = closed_with(&mut socket, Duration::from_secs(5)).await;
    assert!(
        matches!(code, None | Some(CloseCode::Size)),
        "closed for the size: {code:?}"
    );
}

/// Fails without the cap (`api/src/notify.rs`, `Hub::try_register`: the `max` test
/// removed): a third socket opens.
#[tokio::test]
async fn sockets_per_user_are_capped() {
    let app = spawn_app_with(AppOptions {
        ws_per_user: Some(2),
        ..Default::default()
    })
    .await;
    let (u, other) = (app.user().await, app.user().await);
    let first = open(&app, &u).await.expect("first");
    let _second = open(&app, &u).await.expect("second");
    match open(&app, &u).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 429),
        other => panic!("a third socket: {:?}", other.map(|_| "opened")),
    }
    let _theirs = open(&app, &other)
        .await
        .expect("another user has their own");
    // Closing one makes room.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match open(&app, &u).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("no room after a close: {e}"),
        }
    }
}
