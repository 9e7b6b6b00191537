// The admins' webhook panel: register an endpoint (its secret is shown once), pause,
// resume or re-enable it, rotate its secret, delete it, and read its deliveries, retrying
// one by hand. Helpers (api, $, cell, button, run, onSubmit) are console.js's.

async function loadWebhooks() {
  const list = await api("GET", "/webhooks");
  const body = $("webhooks").tBodies[0];
  body.replaceChildren();
  for (const w of list.items) {
    const row = body.insertRow();
    row.dataset.webhookId = w.id;
    cell(row, w.url);
    cell(row, w.events.join(", "));
    cell(row, w.status);
    const td = cell(row, "");
    td.className = "actions";
    const next = w.status === "ACTIVE" ? "PAUSED" : "ACTIVE";
    td.append(
      button("Deliveries", "webhook-deliveries", async () => {
        S.webhook = w;
        await loadDeliveries();
        return null;
      }),
      button(next === "PAUSED" ? "Pause" : "Resume", "webhook-status", async () => {
        await api("PATCH", `/webhooks/${w.id}`, { status: next });
        return `Webhook ${next === "PAUSED" ? "paused" : "active again"}`;
      }),
      button("Rotate secret", "webhook-rotate", async () => {
        const r = await api("POST", `/webhooks/${w.id}/rotate-secret`);
        showSecret(r.secret, `the old one signs beside it until ${new Date(r.previousSecretExpiresAt).toLocaleString()}`);
        return "Secret rotated";
      }),
      button("Delete", "webhook-delete", async () => {
        await api("DELETE", `/webhooks/${w.id}`);
        if (S.webhook && S.webhook.id === w.id) S.webhook = null;
        return "Webhook deleted";
      }),
    );
  }
  if (S.webhook) await loadDeliveries();
}

function showSecret(secret, note) {
  $("webhook-secret").textContent = secret;
  $("webhook-secret-note").textContent = `Shown once: keep it with the receiver; ${note}.`;
  $("webhook-secret-box").hidden = false;
}

async function loadDeliveries() {
  const w = S.webhook;
  $("webhook-deliveries-title").textContent = w ? `Deliveries to ${w.url}` : "Deliveries";
  const body = $("webhook-deliveries").tBodies[0];
  body.replaceChildren();
  if (!w) return;
  const page = await api("GET", `/webhooks/${w.id}/deliveries?limit=50`);
  for (const d of page.items) {
    const row = body.insertRow();
    row.dataset.deliveryId = d.id;
    cell(row, d.sequence);
    cell(row, d.eventType);
    cell(row, d.status);
    cell(row, d.attempts);
    cell(row, d.lastStatusCode != null ? `HTTP ${d.lastStatusCode}` : (d.lastError || ""));
    const td = cell(row, "");
    td.className = "actions";
    if (d.status !== "SUCCEEDED") {
      td.append(button("Retry now", "webhook-retry", async () => {
        await api("POST", `/webhooks/${w.id}/deliveries/${d.id}/retry`);
        return `Delivery ${d.sequence} queued again`;
      }));
    }
  }
}

function wireWebhooks() {
  onSubmit("webhook-form", async (f) => {
    const events = String(f.get("events") || "*").split(",").map((e) => e.trim()).filter(Boolean);
    const w = await api("POST", "/webhooks", { url: f.get("url"), events });
    S.webhook = w;
    showSecret(w.secret, "sign checks use it as the HMAC-SHA256 key");
    return `Webhook registered: ${w.url}`;
  });
  $("refresh-webhooks").addEventListener("click", () => run($("refresh-webhooks"), async () => {
    await loadWebhooks();
    return null;
  }));
}
