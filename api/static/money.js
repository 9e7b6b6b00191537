// The console's money in and out: a user's payouts and statements, and for the service
// role and admins the pay-ins and payouts they record. Uses console.js's helpers (api,
// cell, button, run, onSubmit); like it, writes user text with textContent only.
"use strict";

// A user named by e-mail (looked up) or by id (taken as typed).
async function userIdOf(text) {
  const named = String(text || "").trim();
  if (!named.includes("@")) return named;
  const found = await api("GET", `/users/lookup?email=${encodeURIComponent(named)}`);
  return found.id;
}

async function loadPayouts() {
  const page = await api("GET", withQuery("/payouts", "limit=20", fresh()));
  const body = $("payouts").tBodies[0];
  body.replaceChildren();
  for (const p of page.items) {
    const row = body.insertRow();
    row.dataset.payoutId = p.id;
    cell(row, new Date(p.createdAt).toLocaleString());
    cell(row, `${p.amount} ${p.currency}`);
    cell(row, p.destination);
    const status = p.reason ? `${p.status} (${p.reason})` : p.status;
    cell(row, status).className = "payout-status";
  }
}

// A date input's day as an RFC 3339 instant at the start of that day, local time.
const dayStart = (value) => (value ? new Date(`${value}T00:00:00`).toISOString() : "");
const nextDayStart = (value) => {
  if (!value) return "";
  const d = new Date(`${value}T00:00:00`);
  d.setDate(d.getDate() + 1);
  return (d > new Date() ? new Date() : d).toISOString();
};

function statementPath(format) {
  const from = dayStart($("statement-from").value);
  const to = nextDayStart($("statement-to").value);
  return withQuery(
    `/wallets/${S.user.id}/statement`,
    from && `from=${encodeURIComponent(from)}`,
    to && `to=${encodeURIComponent(to)}`,
    format === "csv" && "format=csv",
  );
}

async function showStatement() {
  const s = await api("GET", statementPath("json"));
  const totals = Object.entries(s.totals).map(([k, v]) => `${k} ${v}`).join(", ");
  $("statement-summary").textContent =
    `${s.items.length} movements · opening ${s.openingBalance} · closing ${s.closingBalance} ${s.currency}` +
    (totals ? ` · ${totals}` : "");
  return null;
}

// The CSV comes with the bearer token, so it is fetched here and handed to the browser
// as a file.
async function downloadStatement() {
  const res = await fetch(API + statementPath("csv"), {
    headers: { Authorization: `Bearer ${S.token}` },
  });
  if (!res.ok) {
    let problem = null;
    try { problem = await res.json(); } catch { problem = null; }
    throw new ApiError(res.status, problem);
  }
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = `statement-${S.user.id}.csv`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return "Statement downloaded";
}

// The service's and admins' queue: pending pay-ins to confirm or fail, pending payouts to
// complete or fail. A payout's provider reference or a failure's reason is typed beside it.
async function loadOperations() {
  const [payins, payouts] = await Promise.all([
    api("GET", withQuery("/payins", "status=PENDING", "limit=50", fresh())),
    api("GET", withQuery("/payouts", "status=PENDING", "limit=50", fresh())),
  ]);
  const inBody = $("payins").tBodies[0];
  inBody.replaceChildren();
  for (const p of payins.items) {
    const row = inBody.insertRow();
    row.dataset.payinId = p.id;
    cell(row, p.reference);
    cell(row, p.userId);
    cell(row, `${p.amount} ${p.currency}`);
    cell(row, p.status);
    const td = cell(row, "");
    td.className = "actions";
    td.append(
      button("Confirm", "confirm-payin", async () => {
        await api("POST", `/payins/${p.id}/confirm`, {});
        return `Pay-in ${p.reference} confirmed`;
      }),
      button("Fail", "fail-payin", async () => {
        await api("POST", `/payins/${p.id}/fail`, { reason: "failed at the provider" });
        return `Pay-in ${p.reference} failed`;
      }),
    );
  }
  const outBody = $("pending-payouts").tBodies[0];
  outBody.replaceChildren();
  for (const p of payouts.items) {
    const row = outBody.insertRow();
    row.dataset.payoutId = p.id;
    cell(row, new Date(p.createdAt).toLocaleString());
    cell(row, p.userId);
    cell(row, `${p.amount} ${p.currency}`);
    cell(row, p.destination);
    const td = cell(row, "");
    td.className = "actions";
    const note = document.createElement("input");
    note.className = "payout-note";
    note.placeholder = "Provider reference or reason";
    td.append(
      note,
      button("Complete", "complete-payout", async () => {
        await api("POST", `/payouts/${p.id}/complete`, { providerReference: note.value });
        return `Payout of ${p.amount} ${p.currency} completed`;
      }),
      button("Fail", "fail-payout", async () => {
        await api("POST", `/payouts/${p.id}/fail`, { reason: note.value });
        return `Payout of ${p.amount} ${p.currency} failed: the amount went back`;
      }),
    );
  }
}

function wireMoney() {
  onSubmit("payout-form", async (f) => {
    const p = await api("POST", "/payouts", {
      amount: f.get("amount"),
      destination: f.get("destination"),
    });
    return `Payout of ${p.amount} ${p.currency} asked for: pending`;
  });
  $("statement-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run($("show-statement"), showStatement);
  });
  $("download-statement").addEventListener("click", () => run($("download-statement"), downloadStatement));
  onSubmit("payin-form", async (f) => {
    const userId = await userIdOf(f.get("user"));
    const p = await api("POST", "/payins", {
      userId,
      amount: f.get("amount"),
      reference: f.get("reference"),
    });
    return `Pay-in ${p.reference} announced: pending`;
  });
  // Other users' payouts notify the service no one: the queue is refreshed by hand too.
  $("refresh-operations").addEventListener("click", () => run($("refresh-operations"), loadOperations));
}
