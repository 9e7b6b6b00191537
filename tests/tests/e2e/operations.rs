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
    let poor = app.user().await;
    let r = app
        .post(
            "/wallets/withdraw",
            Some(&poor.token),
            serde_json::json!({"userId": poor.id, "amount": "1"}),
        )
        .await;
    assert_eq!(r.code(), "INSUFFICIENT_FUNDS");
    assert!(app.wait_for_read_models(Duration::from_secs(10)).await);
    // The relay saves its checkpoint (which the lag is measured from) once it is caught
    // up, which may be a moment after the read models are: read until both lags are 0.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let res = app.http.get(&app.metrics_url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let text = res.text().await.unwrap();
        let caught_up = text.contains("escrow_relay_lag_positions 0")
            && text.contains("escrow_projection_lag_positions{projection=\"read_models\"} 0");
        if caught_up || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Not on the API's port: that one is public.
    let public = app
        .http
        .get(app.base.replace("/api/v1", "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    for needle in [
        r#"escrow_http_requests_total{method="POST",route="/api/v1/wallets/deposit",status="201"} 1"#,
        r#"escrow_http_requests_total{method="POST",route="/api/v1/wallets/deposit",status="422"} 1"#,
        r#"escrow_http_request_duration_seconds_count{method="POST",route="/api/v1/wallets/deposit"} 2"#,
        "escrow_projection_lag_positions{projection=\"read_models\"} 0",
        "escrow_relay_lag_positions 0",
        "escrow_websocket_connections 0",
        "escrow_db_pool_connections{state=\"idle\"}",
        "escrow_jetstream_publish_errors_total",
        r#"escrow_commands_total{command="Deposit",outcome="ok"} 1"#,
        r#"escrow_commands_total{command="Withdraw",outcome="INSUFFICIENT_FUNDS"} 1"#,
        r#"escrow_commands_total{command="RegisterUser",outcome="ok"} 2"#,
        r#"escrow_command_duration_seconds_count{command="Deposit"} 1"#,
        // Two registrations and one deposit committed, one command per transaction.
        r#"escrow_append_batch_commands_count 3"#,
        r#"escrow_command_attempts_bucket{le="1"} 4"#,
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

/// A request can be followed through the JSON logs of the real binary: the request span,
/// the command span beneath it and the projection of its events all carry the request's
/// correlation id (and the first two its request id); secrets never appear.
#[tokio::test]
async fn json_logs_follow_a_request_from_http_to_the_read_model() {
    let (db, _pool) = escrow_tests::fresh_database().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut server = crate::faults::Server::new(db, "logs");
    server.args = vec!["--log-format".into(), "json".into()];
    server.env = vec![(
        "RUST_LOG".into(),
        "info,api=debug,command_handlers=debug,projections=debug".into(),
    )];
    let (port, log) = (server.port, server.log.clone());
    server.start().await;
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::new();
    let password = format!("Secret-{id}");
    let email = format!("{id}@example.com");
    let creds = serde_json::json!({"email": email, "password": password});
    let r = http
        .post(format!("{base}/auth/register"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let login: serde_json::Value = http
        .post(format!("{base}/auth/login"))
        .json(&creds)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let user = login["user"]["id"].as_str().unwrap().to_owned();

    let request_id = format!("req-{id}");
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let r = http
        .post(format!("{base}/wallets/deposit"))
        .bearer_auth(&token)
        .header("X-Request-Id", &request_id)
        .header("X-Correlation-Id", &correlation_id)
        .json(&serde_json::json!({"userId": user, "amount": "12.34"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["x-request-id"], request_id.as_str());
    assert_eq!(r.headers()["x-correlation-id"], correlation_id.as_str());
    let position = r.json::<serde_json::Value>().await.unwrap()["position"]
        .as_i64()
        .unwrap();
    // A request without ids gets minted ones, echoed back.
    let r = http.get(format!("{base}/health")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
    let r = http
        .get(format!("{base}/wallets/{user}?minPosition={position}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-read-consistency"], "fresh");

    // The projection's log line is written just after its commit; give it a moment.
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let spans_have = |l: &serde_json::Value, key: &str, want: &str| {
        l["spans"].as_array().is_some_and(|spans| {
            spans
                .iter()
                .any(|s| s.get(key).and_then(|v| v.as_str()) == Some(want))
        })
    };
    for _ in 0..50 {
        let text = std::fs::read_to_string(&log).unwrap();
        lines = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.iter().any(|l| {
            l["fields"]["message"] == "applied" && spans_have(l, "correlation_id", &correlation_id)
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    server.kill9().await;
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"] == message
                    && spans_have(l, "correlation_id", &correlation_id)
            })
            .unwrap_or_else(|| panic!("no {message:?} line with the correlation id in:\n{text}"))
    };
    let request = find("request finished");
    assert!(spans_have(request, "request_id", &request_id));
    assert_eq!(request["span"]["route"], "/api/v1/wallets/deposit");
    assert_eq!(request["span"]["status"], 201);
    let command = find("command finished");
    assert!(spans_have(command, "request_id", &request_id));
    assert_eq!(command["span"]["command"], "Deposit");
    assert_eq!(command["span"]["outcome"], "ok");
    let projected = find("applied");
    assert_eq!(projected["span"]["name"], "project");
    assert!(!text.contains(&password), "the password is never logged");
    assert!(!text.contains(&token), "the token is never logged");
    let _ = std::fs::remove_file(&log);
}

/// `escrow users grant-role` names a user by id as well as by e-mail; an unknown id is
/// refused with a non-zero exit and writes nothing.
#[tokio::test]
async fn grant_role_names_a_user_by_id() {
    let app = spawn_app().await;
    let u = app.user().await;
    let run = |args: Vec<String>| {
        std::process::Command::new(crate::faults::binary())
            .args(["users", "grant-role"])
            .args(args)
            .env("DATABASE_URL", &app.db_url)
            .output()
            .expect("escrow runs")
    };
    let events = app.event_count().await;
    let unknown = run(vec![
        "--user-id".into(),
        uuid::Uuid::now_v7().to_string(),
        "--role".into(),
        "arbiter".into(),
    ]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no user with id"));
    assert_eq!(app.event_count().await, events, "nothing written");
    let granted = run(vec![
        "--user-id".into(),
        u.id.clone(),
        "--role".into(),
        "arbiter".into(),
    ]);
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    let login = app
        .post(
            "/auth/login",
            None,
            serde_json::json!({"email": u.email, "password": "password123"}),
        )
        .await;
    assert_eq!(login.body["user"]["role"], "arbiter");
}
