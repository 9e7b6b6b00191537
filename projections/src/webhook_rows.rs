//! `rm_webhooks`: one row per live webhook endpoint, written one event at a time
//! (endpoints change rarely). A deleted endpoint's row stays, as `DELETED`, so that a read
//! of it answers 404 at once instead of waiting for a row that will not come.

use domain::Event;
use sqlx::PgConnection;

use crate::apply::{aggregate_uuid, Incoming};

/// Applies an endpoint's own event to its row.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    env: &Incoming,
    event: &Event,
) -> anyhow::Result<()> {
    let at = env.recorded_at;
    let id = aggregate_uuid(&env.stream_id)?;
    match event {
        Event::WebhookEndpointCreated {
            url,
            events,
            description,
            ..
        } => {
            sqlx::query(
                "INSERT INTO rm_webhooks (id, url, events, description, status, created_at, updated_at, position) \
                 VALUES ($1, $2, $3, $4, 'ACTIVE', $5, $5, $6)",
            )
            .bind(id)
            .bind(url)
            .bind(events)
            .bind(description)
            .bind(at)
            .bind(env.position)
            .execute(&mut *conn)
            .await?;
        }
        Event::WebhookEndpointUpdated {
            url,
            events,
            description,
            status,
            ..
        } => {
            sqlx::query(
                "UPDATE rm_webhooks SET url = coalesce($2, url), events = coalesce($3, events), \
                 description = CASE WHEN $4::text IS NULL THEN description ELSE nullif($4, '') END, \
                 status = coalesce($5, status), updated_at = $6, position = $7 WHERE id = $1",
            )
            .bind(id)
            .bind(url)
            .bind(events)
            .bind(description)
            .bind(status.map(|s| s.as_str()))
            .bind(at)
            .bind(env.position)
            .execute(&mut *conn)
            .await?;
        }
        Event::WebhookSecretRotated { .. } => {
            sqlx::query(
                "UPDATE rm_webhooks SET secret_version = secret_version + 1, updated_at = $2, position = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(env.position)
            .execute(&mut *conn)
            .await?;
        }
        Event::WebhookEndpointDisabled { .. } => {
            sqlx::query(
                "UPDATE rm_webhooks SET status = 'DISABLED', updated_at = $2, position = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(env.position)
            .execute(&mut *conn)
            .await?;
        }
        Event::WebhookEndpointDeleted { .. } => {
            sqlx::query(
                "UPDATE rm_webhooks SET status = 'DELETED', updated_at = $2, position = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(env.position)
            .execute(&mut *conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}
