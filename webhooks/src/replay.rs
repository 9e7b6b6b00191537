//! `POST /webhooks/{id}/replay`: the events an endpoint's filter matches from a global
//! position on, read from the event store in feed order and queued again as new
//! deliveries after the endpoint's newest, with new sequence numbers.

use escrow_nats::envelope_bytes;
use event_store::EventStore;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{self, EnvelopeHead, Staged};

const BATCH: i64 = 1_000;

/// Queues the matching events at or after `from_position`; returns how many.
pub async fn replay(
    pool: &PgPool,
    webhook: Uuid,
    filter: &[String],
    from_position: i64,
) -> anyhow::Result<u64> {
    let store = EventStore::new(pool.clone());
    let Some(mut cursor) = store.cursor_for_position(from_position).await? else {
        return Ok(0);
    };
    let mut conn = pool.acquire().await?;
    let mut queued = 0u64;
    loop {
        let events = EventStore::read_feed_text_on(&mut conn, cursor, BATCH).await?;
        let Some(last) = events.last() else { break };
        cursor = last.event.cursor();
        let mut batch = Vec::new();
        for e in &events {
            let d = &e.event;
            if d.position < from_position
                || !domain::webhook::filter_matches(filter, &d.stream_id, &d.event_type)
            {
                continue;
            }
            let body = String::from_utf8(envelope_bytes(e)?)?;
            batch.push(Staged {
                head: EnvelopeHead {
                    event_id: d.event_id,
                    stream_id: d.stream_id.clone(),
                    position: d.position,
                    event_type: d.event_type.clone(),
                    recorded_at: d.recorded_at,
                },
                body,
            });
        }
        if !batch.is_empty() {
            store::append(pool, webhook, &batch).await?;
            queued += batch.len() as u64;
        }
        if (events.len() as i64) < BATCH {
            break;
        }
    }
    Ok(queued)
}
