//! The write side's own lifecycle: the committer is started with the ledger and stopped by
//! its shutdown, which commits what was already handed over and refuses what comes after.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use command_handlers::{Actor, Command, CommandContext, CommandError, Ledger};
use domain::{Amount, Currency, TransactionId, UserId};
use escrow_tests::spawn_app;
use rust_decimal::Decimal;

fn deposit(user: UserId) -> Command {
    Command::Deposit(domain::wallet::Deposit {
        transaction_id: TransactionId::new_v7(),
        user_id: user,
        currency: Currency::USD,
        amount: Amount::new(Decimal::ONE, Currency::USD).expect("1.00 USD"),
        description: None,
        channel: domain::DepositChannel::Operator,
    })
}

/// Eight clients deposit in a loop while the ledger shuts down: every deposit is either
/// committed and answered, or refused as unavailable with nothing written; each client
/// ends on a refusal; the shutdown returns once the committer's thread has ended.
///
/// Fails when stopping does not close the queue (`command-handlers/src/committer/mod.rs`,
/// `rx.close()` removed from the stop branch): the committer never ends and the shutdown
/// does not return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_commits_what_was_handed_over_and_refuses_the_rest() {
    let app = spawn_app().await;
    let u = app.user().await;
    let user = UserId(uuid::Uuid::parse_str(&u.id).expect("a uuid"));
    let ledger = Arc::new(Ledger::new(event_store::EventStore::new(app.pool.clone())));
    let ctx = CommandContext::internal(Actor::Operator);
    let committed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (ledger, ctx, committed) = (ledger.clone(), ctx.clone(), committed.clone());
        clients.push(tokio::spawn(async move {
            loop {
                match ledger.execute(&ctx, deposit(user)).await {
                    Ok(_) => committed.fetch_add(1, Ordering::SeqCst),
                    Err(CommandError::Unavailable(_)) => return,
                    Err(e) => panic!("a deposit failed otherwise: {e}"),
                };
            }
        }));
    }
    while committed.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), ledger.shutdown())
        .await
        .expect("the committer stopped and its thread was joined");
    for c in clients {
        tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .expect("every client was refused once the committer stopped")
            .expect("no panic");
    }
    let deposited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'FundsDeposited' AND stream_id = $1",
    )
    .bind(domain::StreamId::wallet(domain::WalletId::of(user, Currency::USD)).as_str())
    .fetch_one(&app.pool)
    .await
    .expect("counted");
    assert_eq!(
        deposited as usize,
        committed.load(Ordering::SeqCst),
        "committed = answered; refused = not written"
    );
    let after = ledger.execute(&ctx, deposit(user)).await;
    assert!(
        matches!(after, Err(CommandError::Unavailable(_))),
        "a command after the shutdown is refused: {after:?}"
    );
}

/// A key answers its replays with the bytes of its first answer, rendered again from the
/// stored outcome; a key stored by the previous release (a rendered status and body) is
/// wrapped by the `idempotent_outcomes` migration and still replays its stored bytes. The
/// deposit happens once.
///
/// Fails when the migration does not wrap old answers (its `UPDATE` removed): the column
/// cannot be made NOT NULL and the migration fails.
#[tokio::test]
async fn keys_replay_byte_identically_across_the_upgrade() {
    let app = spawn_app().await;
    let u = app.user().await;
    let body = serde_json::json!({"userId": u.id, "amount": "12.50"});
    let send = || async {
        let r = app
            .http
            .post(format!("{}/wallets/deposit", app.base))
            .bearer_auth(&u.token)
            .header("Idempotency-Key", "old-1")
            .json(&body)
            .send()
            .await
            .expect("sent");
        let replayed = r.headers().get("idempotent-replayed").is_some();
        (r.status(), replayed, r.bytes().await.expect("a body"))
    };
    let (status, replayed, first) = send().await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    assert!(!replayed);
    assert_eq!(
        send().await,
        (status, true, first.clone()),
        "a replay from the outcome"
    );

    // The key as the previous release stored it, and its migration not yet applied.
    let rendered = std::str::from_utf8(&first).expect("utf-8").to_owned();
    for statement in [
        "ALTER TABLE idempotency_keys ADD COLUMN status SMALLINT, ADD COLUMN response JSONB",
        "UPDATE idempotency_keys SET status = 201, response = $1::jsonb WHERE key = 'old-1'",
        "ALTER TABLE idempotency_keys DROP COLUMN answer, DROP COLUMN position",
        "DELETE FROM _sqlx_migrations WHERE description = 'idempotent outcomes'",
    ] {
        let q = sqlx::query(statement);
        let q = if statement.contains("$1") {
            q.bind(&rendered)
        } else {
            q
        };
        q.execute(&app.pool).await.expect(statement);
    }
    event_store::MIGRATOR
        .run(&app.pool)
        .await
        .expect("the migration runs again");
    let wrapped: serde_json::Value =
        sqlx::query_scalar("SELECT answer FROM idempotency_keys WHERE key = 'old-1'")
            .fetch_one(&app.pool)
            .await
            .expect("the key");
    assert_eq!(wrapped["rendered"]["status"], 201, "{wrapped}");
    assert_eq!(
        send().await,
        (status, true, first),
        "a replay of the stored response"
    );
    let deposits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'FundsDeposited'")
            .fetch_one(&app.pool)
            .await
            .expect("counted");
    assert_eq!(deposits, 1);
}
