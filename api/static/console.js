// The ledger's console: plain DOM, no build step. Everything it shows comes from the
// public REST API and the notification WebSocket; it holds no state the server lacks.
// User-supplied text is only ever written with textContent, never parsed as HTML.
"use strict";

const API = "/api/v1";
const S = {
  token: sessionStorage.getItem("escrow.token"),
  user: JSON.parse(sessionStorage.getItem("escrow.user") || "null"),
  position: 0, // highest event position this page has seen; reads wait for it
  socket: null,
  reconnectMs: 500,
  refreshTimer: null,
};

const $ = (id) => document.getElementById(id);

function say(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = kind || "";
}

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.code = problem && problem.code;
  }
}

// One HTTP call. Commands carry a fresh Idempotency-Key so a retried click is one command.
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (S.token) headers.Authorization = `Bearer ${S.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["Idempotency-Key"] = crypto.randomUUID();
  const res = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (res.status === 401 && S.token) logout("Your session expired: log in again.");
  if (!res.ok) throw new ApiError(res.status, data);
  if (data && typeof data.position === "number" && data.position > S.position) {
    S.position = data.position;
  }
  return data;
}

const fresh = () => (S.position > 0 ? `minPosition=${S.position}` : "");
const withQuery = (path, ...parts) => {
  const q = parts.filter(Boolean).join("&");
  return q ? `${path}?${q}` : path;
};

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  row.appendChild(td);
  return td;
}

function button(label, id, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = id;
  b.addEventListener("click", () => run(b, onClick));
  return b;
}

// Runs a user action with its button disabled; reports the outcome in the status line.
async function run(control, action) {
  if (control) control.disabled = true;
  try {
    const message = await action();
    if (message) say(message, "ok");
    scheduleRefresh(0);
  } catch (e) {
    say(e.code ? `${e.code}: ${e.message}` : e.message, "error");
  } finally {
    if (control) control.disabled = false;
  }
}

function onSubmit(formId, action) {
  const form = $(formId);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const submit = form.querySelector("button[type=submit]");
    run(submit, async () => {
      const message = await action(new FormData(form));
      form.reset();
      return message;
    });
  });
}

// ---- session -------------------------------------------------------------------------

async function login(email, password) {
  const r = await api("POST", "/auth/login", { email, password });
  S.token = r.access_token;
  S.user = r.user;
  sessionStorage.setItem("escrow.token", S.token);
  sessionStorage.setItem("escrow.user", JSON.stringify(S.user));
  start();
  return `Logged in as ${r.user.email}`;
}

function logout(message) {
  S.token = null;
  S.user = null;
  sessionStorage.removeItem("escrow.token");
  sessionStorage.removeItem("escrow.user");
  if (S.socket) S.socket.close(1000);
  S.socket = null;
  $("app").hidden = true;
  $("session").hidden = true;
  $("login-panel").hidden = false;
  say(message || "Logged out.");
}

function start() {
  $("login-panel").hidden = true;
  $("app").hidden = false;
  $("session").hidden = false;
  $("me").textContent = `${S.user.email} (${S.user.role}) · id ${S.user.id}`;
  $("arbiter-panel").hidden = !["arbiter", "admin"].includes(S.user.role);
  $("admin-panel").hidden = S.user.role !== "admin";
  $("operations-panel").hidden = !["service", "admin"].includes(S.user.role);
  $("webhooks-panel").hidden = S.user.role !== "admin";
  connect();
  scheduleRefresh(0);
}

// ---- live notifications --------------------------------------------------------------

function connect() {
  if (!S.token) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}${API}/ws?access_token=${encodeURIComponent(S.token)}`;
  const socket = new WebSocket(url);
  S.socket = socket;
  socket.onopen = () => {
    S.reconnectMs = 500;
    $("live").textContent = "live";
    $("live").className = "badge on";
  };
  socket.onmessage = (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch { return; }
    if (msg.type !== "event") return;
    if (msg.position > S.position) S.position = msg.position;
    const li = document.createElement("li");
    li.textContent = `#${msg.position} ${msg.event} on ${msg.streamId}`;
    $("feed").prepend(li);
    while ($("feed").children.length > 50) $("feed").lastChild.remove();
    scheduleRefresh(50);
  };
  socket.onclose = () => {
    $("live").textContent = "offline";
    $("live").className = "badge off";
    if (S.socket !== socket || !S.token) return;
    setTimeout(connect, S.reconnectMs);
    S.reconnectMs = Math.min(S.reconnectMs * 2, 10000);
  };
}

// ---- reads -----------------------------------------------------------------------------

function scheduleRefresh(delayMs) {
  clearTimeout(S.refreshTimer);
  S.refreshTimer = setTimeout(() => refresh().catch((e) => say(e.message, "error")), delayMs);
}

async function refresh() {
  if (!S.token) return;
  const jobs = [loadWallet(), loadHistory(), loadContracts(), loadPayouts()];
  if (!$("arbiter-panel").hidden) jobs.push(loadDisputes());
  if (!$("admin-panel").hidden) jobs.push(loadPlatform());
  if (!$("operations-panel").hidden) jobs.push(loadOperations());
  if (!$("webhooks-panel").hidden) jobs.push(loadWebhooks());
  await Promise.all(jobs);
}

async function loadWallet() {
  try {
    const w = await api("GET", withQuery(`/wallets/${S.user.id}`, fresh()));
    $("balance").textContent = `${w.balance} ${w.currency}`;
    $("held").textContent = `${w.heldInEscrow} ${w.currency}`;
    $("pending").textContent = `${w.pendingPayouts} ${w.currency}`;
    $("frozen").hidden = !w.frozen;
    $("wallet-id").textContent = w.id;
  } catch (e) {
    if (e.status !== 404) throw e;
    $("balance").textContent = "0.00";
    $("held").textContent = "0.00";
    $("pending").textContent = "0.00";
  }
}

async function loadHistory() {
  let page;
  try {
    page = await api("GET", withQuery(`/wallets/${S.user.id}/transactions`, "limit=20", fresh()));
  } catch (e) {
    if (e.status === 404) return;
    throw e;
  }
  const body = $("history").tBodies[0];
  body.replaceChildren();
  for (const t of page.items) {
    const row = body.insertRow();
    cell(row, new Date(t.createdAt).toLocaleString());
    cell(row, t.type);
    // Signed for this wallet; the other party's side of a shared contract is unsigned.
    const sign = t.direction === "IN" ? "+" : t.direction === "OUT" ? "−" : "";
    cell(row, `${sign}${t.amount} ${t.currency}`).className = `amount ${(t.direction || "").toLowerCase()}`;
    cell(row, t.balanceAfter || "");
    cell(row, t.counterpartyEmail || t.counterpartyUserId || "");
    cell(row, t.description);
  }
}

async function loadContracts() {
  const page = await api("GET", withQuery(`/contracts/user/${S.user.id}`, "limit=50", fresh()));
  const body = $("contracts").tBodies[0];
  body.replaceChildren();
  for (const c of page.items) {
    const row = body.insertRow();
    row.dataset.contractId = c.id;
    row.dataset.status = c.status;
    const side = c.buyerId === S.user.id ? "buyer" : "seller";
    cell(row, c.title);
    cell(row, side);
    // A platform fee shows beside the price: its rate, who pays, and what it has charged.
    const fee = c.fee
      ? ` · fee ${c.fee.percentBps / 100} % (${c.fee.payer.toLowerCase()} pays), ${c.feeCharged} charged`
      : "";
    cell(row, `${c.amount} ${c.currency}${fee}`);
    cell(row, c.heldAmount);
    const status = c.status === "DRAFT" && c.fundBy
      ? `DRAFT (fund by ${new Date(c.fundBy).toLocaleString()})`
      : c.status;
    cell(row, status).className = "contract-status";
    const stages = cell(row, "");
    stages.className = "milestones";
    // A contract without milestones has one, the whole contract: its own buttons act on it.
    if (c.milestones.length > 1) stages.appendChild(milestoneList(c, side));
    const actions = cell(row, "");
    actions.className = "actions";
    for (const b of contractActions(c, side)) actions.appendChild(b);
  }
}

function contractActions(c, side) {
  const post = (verb, done) => async () => {
    await api("POST", `/contracts/${c.id}/${verb}`);
    return done;
  };
  const out = [];
  if (c.status === "DRAFT") {
    if (side === "buyer") out.push(button("Fund", "fund", post("fund", `Funded "${c.title}": the money is held in escrow`)));
    out.push(button("Cancel", "cancel", post("cancel", `Cancelled "${c.title}"`)));
  }
  if (c.status === "ACTIVE") {
    if (side === "seller" && !c.deliveredAt) out.push(button("Mark delivered", "deliver", post("deliver", `Delivered "${c.title}"`)));
    if (side === "buyer") out.push(button("Release", "release", post("release", `Released "${c.title}" to the seller`)));
    if (side === "seller") out.push(button("Refund", "refund", post("refund", `Refunded "${c.title}" to the buyer`)));
    out.push(button("Dispute", "dispute", async () => openDispute(c)));
  }
  out.push(button("History", "history", async () => showHistory(c)));
  return out;
}

// Each milestone with its state, and the buttons for what the viewer may do to it now.
function milestoneList(c, side) {
  const list = document.createElement("ol");
  for (const m of c.milestones) {
    const li = document.createElement("li");
    li.dataset.milestone = String(m.number);
    li.className = `milestone ${m.status.toLowerCase()}`;
    li.append(`${m.title}: ${m.amount} (held ${m.heldAmount}) `);
    const state = document.createElement("span");
    state.className = "milestone-status";
    state.textContent = m.status;
    li.appendChild(state);
    const open = c.status === "ACTIVE" && (m.status === "PENDING" || m.status === "DELIVERED");
    const post = (verb, done) => async () => {
      await api("POST", `/contracts/${c.id}/milestones/${m.number}/${verb}`);
      return done;
    };
    const name = `milestone ${m.number} of "${c.title}"`;
    if (open && side === "seller" && m.status === "PENDING") {
      li.appendChild(button("Deliver", `deliver-${m.number}`, post("deliver", `Delivered ${name}`)));
    }
    if (open && side === "buyer") {
      li.appendChild(button("Release", `release-${m.number}`, post("release", `Released ${name}`)));
    }
    if (open && side === "seller") {
      li.appendChild(button("Refund", `refund-${m.number}`, post("refund", `Refunded ${name}`)));
    }
    list.appendChild(li);
  }
  return list;
}

// Milestones typed one per line as "Title: amount" (the amount after the last colon).
function parseMilestones(text) {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const at = line.lastIndexOf(":");
      if (at < 1) throw new Error(`A milestone needs "Title: amount": ${line}`);
      return { title: line.slice(0, at).trim(), amount: line.slice(at + 1).trim() };
    });
}

function openDispute(c) {
  S.disputeContract = c;
  $("dispute-contract-title").textContent = c.title;
  $("dispute-dialog").hidden = false;
  $("dispute-description").focus();
  return null;
}

async function showHistory(c) {
  const page = await api("GET", `/contracts/${c.id}/history`);
  $("history-contract-title").textContent = c.title;
  const list = $("contract-events");
  list.replaceChildren();
  for (const e of page.items) {
    const li = document.createElement("li");
    li.textContent = `#${e.position} ${e.type} by ${e.actor || "system"} at ${e.recordedAt} (hash ${e.hash.slice(0, 12)}…)`;
    list.appendChild(li);
  }
  $("contract-history").hidden = false;
  return null;
}

async function loadDisputes() {
  const page = await api("GET", withQuery("/disputes", "status=OPEN", "limit=50", fresh()));
  const body = $("disputes").tBodies[0];
  body.replaceChildren();
  for (const d of page.items) {
    const row = body.insertRow();
    row.dataset.disputeId = d.id;
    cell(row, d.contractId);
    cell(row, d.raisedBy);
    cell(row, d.description);
    const td = cell(row, "");
    const outcome = document.createElement("select");
    outcome.className = "outcome";
    for (const o of ["RELEASE", "REFUND", "SPLIT"]) outcome.add(new Option(o, o));
    const resolution = document.createElement("input");
    resolution.className = "resolution";
    resolution.placeholder = "Resolution";
    const seller = document.createElement("input");
    seller.className = "seller-amount";
    seller.placeholder = "Seller amount (split)";
    const buyer = document.createElement("input");
    buyer.className = "buyer-amount";
    buyer.placeholder = "Buyer amount (split)";
    td.append(outcome, resolution, seller, buyer, button("Resolve", "resolve", async () => {
      const req = { outcome: outcome.value, resolution: resolution.value };
      if (outcome.value === "SPLIT") {
        req.sellerAmount = seller.value;
        req.buyerAmount = buyer.value;
      }
      await api("PUT", `/disputes/${d.id}/resolve`, req);
      return `Dispute resolved: ${outcome.value}`;
    }));
  }
}

// The admin's view of the platform: fee schedules per currency and the revenue account.
async function loadPlatform() {
  const [schedules, revenue] = await Promise.all([
    api("GET", withQuery("/admin/fee-schedule", fresh())),
    api("GET", withQuery("/platform/revenue", fresh())),
  ]);
  const fees = $("fee-schedules").tBodies[0];
  fees.replaceChildren();
  for (const f of schedules) {
    const row = fees.insertRow();
    row.dataset.currency = f.currency;
    cell(row, f.currency);
    cell(row, `${f.percentBps / 100} %`);
    cell(row, f.minimum || "–");
    cell(row, f.maximum || "–");
    cell(row, f.payer);
    cell(row, f.updatedAt ? new Date(f.updatedAt).toLocaleString() : "");
  }
  const body = $("revenue").tBodies[0];
  body.replaceChildren();
  for (const r of revenue) {
    const row = body.insertRow();
    row.dataset.currency = r.currency;
    cell(row, r.currency);
    cell(row, r.balance).className = "revenue-balance";
  }
}

// ---- wiring ----------------------------------------------------------------------------

function wire() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run($("login"), () => login($("login-email").value, $("login-password").value));
  });
  $("register").addEventListener("click", () =>
    run($("register"), async () => {
      const email = $("login-email").value;
      const password = $("login-password").value;
      await api("POST", "/auth/register", { email, password });
      return login(email, password);
    }));
  $("logout").addEventListener("click", () => logout());

  onSubmit("deposit-form", async (f) => {
    await api("POST", "/wallets/deposit", { userId: S.user.id, amount: f.get("amount") });
    return `Deposited ${f.get("amount")}`;
  });
  onSubmit("withdraw-form", async (f) => {
    await api("POST", "/wallets/withdraw", { userId: S.user.id, amount: f.get("amount") });
    return `Withdrew ${f.get("amount")}`;
  });
  onSubmit("transfer-form", async (f) => {
    const req = { toUserId: await userIdOf(f.get("toUserId")), amount: f.get("amount") };
    if (f.get("description")) req.description = f.get("description");
    await api("POST", "/transfers", req);
    return `Sent ${f.get("amount")}`;
  });
  onSubmit("contract-form", async (f) => {
    const other = await userIdOf(f.get("counterparty"));
    const iAmBuyer = f.get("myRole") === "buyer";
    const req = {
      buyerId: iAmBuyer ? S.user.id : other,
      sellerId: iAmBuyer ? other : S.user.id,
      title: f.get("title"),
    };
    if (f.get("amount")) req.amount = f.get("amount");
    const milestones = parseMilestones(f.get("milestones") || "");
    if (milestones.length) req.milestones = milestones;
    const hours = f.get("inspectionPeriodHours");
    if (hours) req.inspectionPeriodHours = Number(hours);
    // datetime-local is the browser's local time; the API takes an RFC 3339 instant.
    const fundBy = f.get("fundBy");
    if (fundBy) req.fundBy = new Date(fundBy).toISOString();
    const c = await api("POST", "/contracts", req);
    return `Created "${c.title}" (${c.status})`;
  });
  // Fees move on other users' payments, which send an admin no notification.
  $("refresh-platform").addEventListener("click", () => run($("refresh-platform"), loadPlatform));
  onSubmit("fee-form", async (f) => {
    const req = {
      currency: f.get("currency").trim(),
      percentBps: Number(f.get("percentBps")),
      payer: f.get("payer"),
    };
    if (f.get("minimum")) req.minimum = f.get("minimum");
    if (f.get("maximum")) req.maximum = f.get("maximum");
    await api("PUT", "/admin/fee-schedule", req);
    return `Fee schedule for ${req.currency} set`;
  });
  onSubmit("freeze-form", async (f) => {
    const user = f.get("userId").trim();
    await api("POST", `/admin/wallets/${user}/freeze`, { reason: f.get("reason") });
    return `Froze the wallet of ${user}`;
  });
  $("unfreeze").addEventListener("click", () =>
    run($("unfreeze"), async () => {
      const user = $("freeze-user").value.trim();
      await api("POST", `/admin/wallets/${user}/unfreeze`, {});
      return `Unfroze the wallet of ${user}`;
    }));
  onSubmit("revenue-form", async (f) => {
    const req = { amount: f.get("amount"), currency: f.get("currency").trim() };
    await api("POST", "/platform/revenue/withdraw", req);
    return `Withdrew ${req.amount} ${req.currency} of revenue`;
  });
  onSubmit("dispute-form", async (f) => {
    const c = S.disputeContract;
    await api("POST", "/disputes", { contractId: c.id, description: f.get("description") });
    $("dispute-dialog").hidden = true;
    return `Dispute raised on "${c.title}"`;
  });
  $("dispute-cancel").addEventListener("click", () => { $("dispute-dialog").hidden = true; });

  wireMoney();
  wireWebhooks();
  if (S.token && S.user) start();
}

document.addEventListener("DOMContentLoaded", wire);
