//! Operations: Prometheus metrics, and a shutdown that says goodbye.

use std::time::Duration;

use escrow_tests::spawn_app;
use futures::StreamExt;
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn metrics_count_requests_and_report_lags() {
    let app = spawn_app().await;
    let u = app.user().await;
    app.deposit(&u, "5").await;
    app.deposit(&u, "0").await;
    assert!(app.wait_for_read_models(Duration::from_secs(10)).await);
    let res = app
        .http
        .get(app.base.replace("/api/v1", "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    for needle in [
        r#"escrow_http_requests_total{method="POST",route="/api/v1/wallets/deposit",status="201"} 1"#,
        r#"escrow_http_requests_total{method="POST",route="/api/v1/wallets/deposit",status="422"} 1"#,
        r#"escrow_http_request_duration_seconds_count{method="POST",route="/api/v1/wallets/deposit"} 2"#,
        "escrow_projection_lag_positions 0",
        "escrow_relay_lag_positions 0",
        "escrow_websocket_connections 0",
        "escrow_db_pool_connections{state=\"idle\"}",
        "escrow_jetstream_publish_errors_total",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
}

#[tokio::test]
async fn shutdown_closes_websockets_with_a_close_frame() {
    let mut app = spawn_app().await;
    let u = app.user().await;
    let url = format!(
        "{}/ws?access_token={}",
        app.base.replace("http://", "ws://"),
        u.token
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let _hello = socket.next().await;
    let started = std::time::Instant::now();
    app.stop().await;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        started.elapsed()
    );
}
