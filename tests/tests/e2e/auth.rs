//! Bearer tokens: every way a token can be wrong gives 401.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use escrow_tests::{spawn_app, TEST_JWT_SECRET};
use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::json;

fn claims(sub: &str, iat_offset: i64, exp_offset: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": sub, "role": "admin", "iss": "escrow-ledger", "aud": "escrow-api",
           "iat": now + iat_offset, "nbf": now + iat_offset, "exp": now + exp_offset})
}

fn sign(c: &serde_json::Value, secret: &str) -> String {
    encode(
        &Header::default(),
        c,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn bad_tokens_are_rejected() {
    let app = spawn_app().await;
    let u = app.user().await;
    let path = format!("/wallets/{}", u.id);
    assert!(
        app.wait_for_read_models(std::time::Duration::from_secs(10))
            .await
    );
    assert_eq!(app.get(&path, Some(&u.token)).await.status, StatusCode::OK);

    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(&u.id, 0, 600).to_string());
    let mut hs512 = Header::new(jsonwebtoken::Algorithm::HS512);
    hs512.typ = Some("JWT".into());
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("malformed", Some("not.a.jwt".into())),
        ("garbage", Some("x".into())),
        (
            "expired",
            Some(sign(&claims(&u.id, -3600, -1800), TEST_JWT_SECRET)),
        ),
        (
            "not yet valid",
            Some(sign(&claims(&u.id, 3600, 7200), TEST_JWT_SECRET)),
        ),
        (
            "wrong secret",
            Some(sign(
                &claims(&u.id, 0, 600),
                "another-secret-0123456789abcdef0123456789",
            )),
        ),
        ("alg none", Some(format!("{none_header}.{payload}."))),
        (
            "HS512",
            Some(
                encode(
                    &hs512,
                    &claims(&u.id, 0, 600),
                    &EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes()),
                )
                .unwrap(),
            ),
        ),
        (
            "missing sub",
            Some(sign(
                &json!({"role": "user", "iss": "escrow-ledger", "aud": "escrow-api", "nbf": 0, "exp": 9999999999i64}),
                TEST_JWT_SECRET,
            )),
        ),
        (
            "wrong audience",
            Some(sign(
                &json!({"sub": u.id, "role": "user", "iss": "escrow-ledger", "aud": "other", "nbf": 0, "exp": 9999999999i64}),
                TEST_JWT_SECRET,
            )),
        ),
        ("huge", Some("a".repeat(20_000))),
        (
            "RS256 header (HS/RS confusion)",
            Some({
                let hs = sign(&claims(&u.id, 0, 600), TEST_JWT_SECRET);
                let rest = hs.split_once('.').unwrap().1.to_owned();
                format!(
                    "{}.{rest}",
                    URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#)
                )
            }),
        ),
    ];
    for (what, token) in cases {
        let r = app.get(&path, token.as_deref()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {:?}", r.body);
        assert_eq!(r.code(), "UNAUTHORIZED", "{what}");
        let d = app
            .post(
                "/wallets/deposit",
                token.as_deref(),
                json!({"userId": u.id, "amount": "1"}),
            )
            .await;
        assert_eq!(d.status, StatusCode::UNAUTHORIZED, "{what} on a command");
    }
    let r = app
        .request(
            reqwest::Method::GET,
            &path,
            None,
            None,
            &[("Authorization", "Basic dXNlcjpwYXNz")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "basic auth");
    // The public endpoints need no token.
    for p in ["/health", "/openapi.json"] {
        assert_eq!(app.get(p, None).await.status, StatusCode::OK, "{p}");
    }
}

#[tokio::test]
async fn server_refuses_to_start_without_a_strong_secret() {
    let (url, _pool) = escrow_tests::fresh_database().await;
    let mut config = api::ServeConfig {
        database_url: url,
        nats_url: std::env::var("NATS_URL").unwrap(),
        nats_stream: "UNUSED".into(),
        nats_stream_replicas: 1,
        nats_subject_prefix: "unused.events".into(),
        host: "127.0.0.1".into(),
        port: 0,
        jwt_secret: None,
        jwt_ttl_seconds: 900,
        jwt_refresh_ttl_seconds: 30 * 24 * 3600,
        jwt_issuer: "escrow-ledger".into(),
        jwt_audience: "escrow-api".into(),
        dev: false,
        cors_origins: vec![],
        body_limit_bytes: 1024,
        role: api::WorkerRole::Api,
        db_max_connections: 2,
        read_wait_ms: 10,
        session_consistency: true,
        self_deposits: true,
        auto_release_poll_ms: 1000,
        idempotency_retention_hours: 168,
        trusted_proxies: vec![],
        rate_limit_per_ip_per_minute: 0,
        rate_limit_per_user_per_minute: 0,
        rate_limits_shared: false,
        rate_limit_lookups_per_user_per_minute: 0,
        rate_limit_auth_per_ip_per_minute: 0,
        request_timeout_ms: 30_000,
        header_read_timeout_ms: 10_000,
        header_bytes_max: 32 * 1024,
        metrics_addr: "127.0.0.1:0".into(),
        ws_connections_per_user_max: 10,
        webhook_timeout_ms: 10_000,
        webhook_max_age_hours: 72.0,
        webhook_retry_base_ms: 1_000,
        webhook_max_rate_per_endpoint: 250,
        webhook_busy_rate_per_endpoint: 25,
        webhook_cpu_pressure_file: "/proc/pressure/cpu".into(),
        webhook_allow_private_networks: false,
        webhook_secrets_key: None,
        primary_api_url: None,
    };
    for secret in [
        None,
        Some("your-super-secret-jwt-key-here"),
        Some("too-short"),
        // Long enough, but typed or patterned: too little entropy.
        Some("my-super-secret-jwt-token-for-production-2024"),
        Some("abcdabcdabcdabcdabcdabcdabcdabcdabcd"),
        Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"),
    ] {
        config.jwt_secret = secret.map(|s| api::config::Secret(s.into()));
        let err = api::start(config.clone()).await.err().expect("refused");
        assert!(err.to_string().contains("JWT_SECRET"), "{err}");
    }
    // CORS: `*` alone is any origin (no credentials); among other origins it is refused
    // at start, with a clear error instead of a panic.
    config.jwt_secret = Some(api::config::Secret(escrow_tests::TEST_JWT_SECRET.into()));
    config.cors_origins = vec!["https://shop.example".into(), "*".into()];
    let err = api::start(config.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("CORS_ORIGINS"), "{err}");
    config.cors_origins = vec!["*".into()];
    let running = api::start(config.clone()).await.expect("`*` alone starts");
    let preflight = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/api/v1/health", running.addr),
        )
        .header("origin", "https://anywhere.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert!(preflight
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    running.stop().await;
    config.cors_origins = vec![];
    config.jwt_secret = None;
    config.dev = true;
    let running = api::start(config)
        .await
        .expect("dev mode starts with a random secret");
    running.stop().await;
}
