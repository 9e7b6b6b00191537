//! The console page at `/` and the API reference at `/api/v1/docs`: served from the binary
//! with a strict Content-Security-Policy, and a whole escrow clicked through in headless
//! Chromium (`tests/browser/console-escrow.mjs`, driven by playwright-core).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use escrow_tests::{folded_ledger, read_model_balances, spawn_app};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

fn origin(base: &str) -> String {
    base.trim_end_matches("/api/v1").to_owned()
}

#[tokio::test]
async fn pages_are_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app().await;
    let origin = origin(&app.base);
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/money.js", "text/javascript"),
        ("/webhooks.js", "text/javascript"),
        ("/console.css", "text/css"),
        ("/api/v1/docs", "text/html"),
        ("/api/v1/docs/init.js", "text/javascript"),
        (
            "/api/v1/docs/assets/swagger-ui-bundle.js",
            "text/javascript",
        ),
        ("/api/v1/docs/assets/swagger-ui.css", "text/css"),
    ] {
        let r = http.get(format!("{origin}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
        if kind == "text/html" {
            let csp = r.headers()["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
            assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
            let body = r.text().await.unwrap();
            // Nothing is fetched from anywhere but this server.
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{path}"
            );
            assert!(!body.contains("<script>"), "{path}: no inline scripts");
        }
    }
    // Swagger UI's own index page reflects the request URI into HTML; it is not reachable,
    // and neither is anything else under the assets prefix.
    for path in [
        "/api/v1/docs/assets",
        "/api/v1/docs/assets/",
        "/api/v1/docs/assets/%22%3E%3Cscript%3Ealert(1)%3C/script%3E",
        "/api/v1/docs/assets/oauth2-redirect.html",
    ] {
        let r = http.get(format!("{origin}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
}

/// Where the browser test lives, and whether its dependencies are installed.
fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

#[tokio::test]
async fn a_whole_escrow_clicked_through_in_chromium() {
    let dir = browser_dir();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && PathBuf::from(&chromium).exists(),
        "the browser test needs Debian's chromium and `npm ci` in tests/browser \
         (scripts/test.sh installs both)"
    );
    let app = spawn_app().await;
    let bob = app.user().await;
    let carol = app.grant(&app.user().await, "arbiter").await;
    let dave = app.grant(&app.user().await, "admin").await;
    let alice_email = format!("alice-{}@example.com", Uuid::new_v4().simple());
    let screenshot = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/console-escrow.png")
        .display()
        .to_string();

    let run = tokio::process::Command::new("node")
        .arg("console-escrow.mjs")
        .current_dir(&dir)
        .env("ORIGIN", origin(&app.base))
        .env("PASSWORD", "password123")
        .env("ALICE_EMAIL", &alice_email)
        .env("BOB_EMAIL", &bob.email)
        .env("BOB_ID", &bob.id)
        .env("CAROL_EMAIL", &carol.email)
        .env("DAVE_EMAIL", &dave.email)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT", &screenshot)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser run finishes within 3 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser run failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("console escrow: all steps passed"),
        "{stdout}"
    );

    // What the clicks did, checked from the API and the raw events.
    let login = app
        .post(
            "/auth/login",
            None,
            json!({ "email": alice_email, "password": "password123" }),
        )
        .await;
    let alice_id = login.body["user"]["id"].as_str().unwrap().to_owned();
    let token = login.str("access_token");
    let contracts = app
        .get(&format!("/contracts/user/{alice_id}"), Some(&token))
        .await;
    let mut statuses: Vec<String> = contracts.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}={}", c["title"].as_str().unwrap(), c["status"]))
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            "Banner=\"DRAFT\"",
            "Logo design=\"COMPLETED\"",
            "Shop=\"COMPLETED\"",
            "Website=\"SETTLED\""
        ]
    );
    // The page's local "fund by" time reached the API as the instant a day ahead.
    let banner = contracts.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["title"] == "Banner")
        .and_then(|c| c["fundBy"].as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("the Banner draft has a fundBy");
    let ahead = banner.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::hours(23) && ahead <= chrono::Duration::hours(24),
        "{ahead}"
    );
    assert!(app.wait_for_read_models(Duration::from_secs(10)).await);
    let (folded, total) = folded_ledger(&app.pool).await;
    assert_eq!(
        total,
        Decimal::ZERO,
        "every posting has its counter-posting"
    );
    for (user, tok, balance) in [
        (alice_id.as_str(), token.as_str(), 125),
        (bob.id.as_str(), bob.token.as_str(), 359),
    ] {
        let w = app.get(&format!("/wallets/{user}"), Some(tok)).await;
        let wallet: Uuid = w.str("id").parse().unwrap();
        assert_eq!(folded[&wallet], Decimal::from(balance), "{user}");
    }
    assert_eq!(read_model_balances(&app.pool).await, folded);
}
