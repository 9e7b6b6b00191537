//! Webhook endpoints: one stream each, changed by an admin (or disabled by the ledger's
//! deliverer); nothing else is read or written.

use chrono::Utc;
use domain::webhook::{self, ChangeWebhook};
use domain::{StreamId, WebhookEndpoint};

use super::{after_states, state_after, Plan, Reader};
use crate::command::{CommandError, Outcome, WebhookChange};
use crate::load::{Load, State};

pub(super) async fn change<L: Load>(
    r: &mut Reader<'_, L>,
    c: &ChangeWebhook,
) -> Result<Plan, CommandError> {
    let stream = StreamId::webhook(c.webhook_id);
    let endpoint = r.get::<WebhookEndpoint>(stream.clone()).await?;
    let writes = webhook::decide(&endpoint, c)?;
    let after = after_states(&writes, vec![(stream.clone(), State::Webhook(endpoint))]);
    Ok(Plan {
        outcome: Outcome::Webhook(WebhookChange {
            webhook_id: c.webhook_id,
            endpoint: state_after::<WebhookEndpoint>(&after, &stream).unwrap_or_default(),
            recorded_at: Utc::now(),
        }),
        writes,
        credentials: None,
        after,
    })
}
