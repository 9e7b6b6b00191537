//! What both load generators ask of the ledger: a user as a client holds it, and the
//! escrow flow, whatever each does with the answers (the bench times them, the store
//! grower counts them).

use serde_json::{json, Value};

/// A registered user: its id and a bearer token.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub token: String,
}

/// Sends a command as a user: its answer's JSON when 2xx, `None` otherwise.
pub trait Commands {
    async fn command(&self, path: &str, user: &User, body: Value) -> Option<Value>;
}

/// create → fund → deliver → release, titled `title`; the release's answer.
pub async fn escrow_flow(
    c: &impl Commands,
    buyer: &User,
    seller: &User,
    title: &str,
) -> Option<Value> {
    let created = c
        .command(
            "/contracts",
            buyer,
            json!({"buyerId": buyer.id, "sellerId": seller.id, "title": title, "amount": "1.00"}),
        )
        .await?;
    let id = created.get("id")?.as_str()?.to_owned();
    c.command(&format!("/contracts/{id}/fund"), buyer, json!({}))
        .await?;
    c.command(&format!("/contracts/{id}/deliver"), seller, json!({}))
        .await?;
    c.command(&format!("/contracts/{id}/release"), buyer, json!({}))
        .await
}
