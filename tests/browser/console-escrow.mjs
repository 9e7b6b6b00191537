// Clicks through a whole escrow in the console served at ORIGIN, in headless Chromium:
// Alice registers and deposits, creates and funds a contract with Bob; Bob sees it appear
// live (no reload), delivers; Alice releases; a second contract is disputed and Carol, an
// arbiter, splits it from her queue; Dave, an admin, sets a 2.5 % seller fee, and a
// contract of two milestones is paid one released, one refunded; Dave withdraws part of
// the revenue, freezes and unfreezes Bob's wallet. Bob pays Alice naming her by e-mail;
// Alice asks for a payout that Dave completes from his queue, Dave announces and confirms
// a pay-in for her, and she reads and downloads her statement. Every page follows along
// over the WebSocket.
// Exits non-zero on the first failed expectation, on any page error and on any
// Content-Security-Policy violation. Run by tests/tests/e2e/console.rs.
import { chromium } from "playwright-core";
import { strict as assert } from "node:assert";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const ORIGIN = env("ORIGIN");
const PASSWORD = env("PASSWORD");
const ALICE = env("ALICE_EMAIL"); // registers through the page
const BOB = env("BOB_EMAIL");
const BOB_ID = env("BOB_ID");
const CAROL = env("CAROL_EMAIL"); // an arbiter
const DAVE = env("DAVE_EMAIL"); // an admin
const SCREENSHOT = process.env.SCREENSHOT;
const WAIT = { timeout: 15000 };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const problems = [];
const pages = {};

async function open(name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  pages[name] = page;
  page.on("pageerror", (e) => problems.push(`${name}: page error: ${e.message}`));
  page.on("console", (m) => {
    // A refused command is an HTTP error the page handles; Chromium logs each one as
    // "Failed to load resource". Anything else (script errors, CSP violations) fails.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      problems.push(`${name}: console error: ${m.text()}`);
    }
  });
  await page.goto(ORIGIN + "/");
  return page;
}

async function login(page, email, register) {
  await page.fill("#login-email", email);
  await page.fill("#login-password", PASSWORD);
  await page.click(register ? "#register" : "#login");
  await page.waitForSelector("#app:not([hidden])", WAIT);
  await page.waitForSelector("#live.on", WAIT);
}

const row = (page, title) => page.locator("#contracts tbody tr", { hasText: title });
async function expectStatus(page, title, status) {
  await row(page, title).locator(".contract-status", { hasText: status }).waitFor(WAIT);
}
async function expectText(page, selector, text) {
  await page.locator(selector, { hasText: text }).waitFor(WAIT);
}
async function act(page, title, action) {
  await row(page, title).locator(`button[data-action=${action}]`).click();
}
async function step(name, fn) {
  const t0 = Date.now();
  await fn();
  console.log(`ok ${name} (${Date.now() - t0} ms)`);
}

try {
  const alice = await open("alice");
  const bob = await open("bob");
  const carol = await open("carol");

  await step("alice registers and logs in through the page", () => login(alice, ALICE, true));
  await step("bob and carol log in", async () => {
    await login(bob, BOB, false);
    await login(carol, CAROL, false);
    assert.equal(await alice.isHidden("#arbiter-panel"), true, "users see no dispute queue");
    assert.equal(await carol.isVisible("#arbiter-panel"), true, "arbiters see the queue");
  });

  await step("alice deposits 500", async () => {
    await alice.fill("#deposit-amount", "500");
    await alice.click("#deposit");
    await expectText(alice, "#balance", "500.00 USD");
    await expectText(alice, "#history tbody", "DEPOSIT");
  });

  await step("a refused command shows its problem and changes nothing", async () => {
    await alice.fill("#withdraw-amount", "5000");
    await alice.click("#withdraw");
    await expectText(alice, "#status.error", "INSUFFICIENT_FUNDS");
    await expectText(alice, "#balance", "500.00 USD");
  });

  await step("alice creates a contract as buyer and funds it", async () => {
    await alice.selectOption("#contract-my-role", "buyer");
    await alice.fill("#contract-counterparty", BOB_ID);
    await alice.fill("#contract-title", "Logo design");
    await alice.fill("#contract-amount", "300");
    await alice.fill("#contract-inspection", "72");
    await alice.click("#create-contract");
    await expectStatus(alice, "Logo design", "DRAFT");
    await act(alice, "Logo design", "fund");
    await expectStatus(alice, "Logo design", "ACTIVE");
    await expectText(alice, "#balance", "200.00 USD");
  });

  await step("bob sees the funded contract live and delivers", async () => {
    await expectStatus(bob, "Logo design", "ACTIVE");
    await act(bob, "Logo design", "deliver");
    await expectText(bob, "#status.ok", "Delivered");
  });

  await step("alice releases; bob is paid live", async () => {
    await act(alice, "Logo design", "release");
    await expectStatus(alice, "Logo design", "COMPLETED");
    await expectStatus(bob, "Logo design", "COMPLETED");
    await expectText(bob, "#balance", "300.00 USD");
    await expectText(bob, "#history tbody", "PAYMENT");
  });

  await step("alice drafts a contract with a funding deadline", async () => {
    const tomorrow = new Date(Date.now() + 86400000);
    const local = new Date(tomorrow.getTime() - tomorrow.getTimezoneOffset() * 60000)
      .toISOString()
      .slice(0, 16);
    await alice.fill("#contract-counterparty", BOB_ID);
    await alice.fill("#contract-title", "Banner");
    await alice.fill("#contract-amount", "20");
    await alice.fill("#contract-fund-by", local);
    await alice.click("#create-contract");
    await expectStatus(alice, "Banner", "fund by");
    await alice.fill("#contract-fund-by", "");
  });

  await step("alice funds a second contract and disputes it", async () => {
    await alice.fill("#contract-counterparty", BOB_ID);
    await alice.fill("#contract-title", "Website");
    await alice.fill("#contract-amount", "50");
    await alice.click("#create-contract");
    await expectStatus(alice, "Website", "DRAFT");
    await act(alice, "Website", "fund");
    await expectStatus(alice, "Website", "ACTIVE");
    await act(alice, "Website", "dispute");
    await alice.fill("#dispute-description", "Only half of the pages were delivered");
    await alice.click("#raise-dispute");
    await expectStatus(alice, "Website", "DISPUTED");
    await expectStatus(bob, "Website", "DISPUTED");
  });

  await step("carol splits the dispute from her queue", async () => {
    const d = carol.locator("#disputes tbody tr", { hasText: "Only half of the pages" });
    await d.waitFor(WAIT);
    await d.locator("select.outcome").selectOption("SPLIT");
    await d.locator("input.resolution").fill("Half the work was delivered");
    await d.locator("input.seller-amount").fill("25.00");
    await d.locator("input.buyer-amount").fill("25.00");
    await d.locator("button[data-action=resolve]").click();
    await expectText(carol, "#status.ok", "Dispute resolved: SPLIT");
    await d.waitFor({ state: "detached", ...WAIT });
  });

  await step("both parties see the settlement live", async () => {
    await expectStatus(alice, "Website", "SETTLED");
    await expectStatus(bob, "Website", "SETTLED");
    await expectText(alice, "#balance", "175.00 USD");
    await expectText(bob, "#balance", "325.00 USD");
    await expectText(alice, "#feed", "DisputeResolved");
  });

  await step("the contract's audit trail is shown with hashes", async () => {
    await act(alice, "Logo design", "history");
    await expectText(alice, "#contract-events", "ContractReleased");
    const items = await alice.locator("#contract-events li").count();
    assert.ok(items >= 4, `expected at least 4 events in the trail, saw ${items}`);
  });

  const dave = await open("dave");
  await step("dave, an admin, sets a 2.5 % seller fee in the console", async () => {
    await login(dave, DAVE, false);
    assert.equal(await dave.isVisible("#admin-panel"), true, "admins see the platform");
    assert.equal(await alice.isHidden("#admin-panel"), true, "users do not");
    await dave.fill("#fee-bps", "250");
    await dave.selectOption("#fee-payer", "SELLER");
    await dave.click("#set-fee");
    await expectText(dave, "#fee-schedules tbody tr", "2.5 %");
  });

  await step("alice creates a contract of two milestones and funds it", async () => {
    await alice.fill("#contract-counterparty", BOB_ID);
    await alice.fill("#contract-title", "Shop");
    await alice.fill("#contract-milestones", "Design: 40\nBuild: 60");
    await alice.click("#create-contract");
    await expectStatus(alice, "Shop", "DRAFT");
    await expectText(alice, "#contracts tbody tr", "100.00 USD · fee 2.5 %");
    await act(alice, "Shop", "fund");
    await expectStatus(alice, "Shop", "ACTIVE");
    await expectText(alice, "#balance", "75.00 USD");
  });

  const stage = (page, n) => row(page, "Shop").locator(`li.milestone[data-milestone="${n}"]`);
  await step("bob delivers milestone 1, alice releases it, bob is paid less the fee", async () => {
    await stage(bob, 1).locator("button[data-action=deliver-1]").click();
    await stage(alice, 1).locator(".milestone-status", { hasText: "DELIVERED" }).waitFor(WAIT);
    await stage(alice, 1).locator("button[data-action=release-1]").click();
    await stage(bob, 1).locator(".milestone-status", { hasText: "RELEASED" }).waitFor(WAIT);
    await expectText(bob, "#balance", "364.00 USD");
    await expectStatus(bob, "Shop", "ACTIVE");
  });

  await step("bob refunds milestone 2: COMPLETED, one released, one refunded", async () => {
    await stage(bob, 2).locator("button[data-action=refund-2]").click();
    await expectStatus(alice, "Shop", "COMPLETED");
    await stage(alice, 2).locator(".milestone-status", { hasText: "REFUNDED" }).waitFor(WAIT);
    await expectText(alice, "#balance", "135.00 USD");
  });

  await step("dave sees the fee in revenue and withdraws part of it", async () => {
    // Other users' payments notify no admin: the panel is refreshed by hand.
    for (let tries = 0; ; tries++) {
      await dave.click("#refresh-platform");
      const seen = dave.locator("#revenue tbody tr", { hasText: "1.00" });
      if (await seen.isVisible()) break;
      assert.ok(tries < 50, "the revenue shows the fee");
      await dave.waitForTimeout(200);
    }
    await dave.fill("#revenue-amount", "0.40");
    await dave.click("#withdraw-revenue");
    await expectText(dave, "#revenue .revenue-balance", "0.60");
  });

  await step("dave freezes bob's wallet; bob sees it live; dave unfreezes it", async () => {
    await dave.fill("#freeze-user", BOB_ID);
    await dave.fill("#freeze-reason", "chargeback review");
    await dave.click("#freeze");
    await expectText(dave, "#status.ok", "Froze the wallet");
    await bob.locator("#frozen:not([hidden])").waitFor(WAIT);
    const aliceId = await alice.evaluate(() => JSON.parse(sessionStorage.getItem("escrow.user")).id);
    await bob.fill("#transfer-to", aliceId);
    await bob.fill("#transfer-amount", "1");
    await bob.click("#transfer");
    await expectText(bob, "#status.error", "WALLET_FROZEN");
    await dave.fill("#freeze-user", BOB_ID);
    await dave.click("#unfreeze");
    await expectText(dave, "#status.ok", "Unfroze the wallet");
    await bob.locator("#frozen[hidden]").waitFor({ state: "attached", ...WAIT });
  });

  await step("bob names alice by e-mail; both histories show sign, balance and counterparty", async () => {
    await bob.fill("#transfer-to", ALICE);
    await bob.fill("#transfer-amount", "5");
    await bob.click("#transfer");
    await expectText(bob, "#status.ok", "Sent 5");
    const sent = bob.locator("#history tbody tr", { hasText: ALICE }).first();
    await sent.locator("td.amount.out", { hasText: "−5.00 USD" }).waitFor(WAIT);
    await sent.locator("td", { hasText: "359.00" }).waitFor(WAIT);
    await expectText(alice, "#balance", "140.00 USD");
    const received = alice.locator("#history tbody tr", { hasText: BOB }).first();
    await received.locator("td.amount.in", { hasText: "+5.00 USD" }).waitFor(WAIT);
  });

  await step("alice asks for a payout; dave completes it from his queue; alice sees it live", async () => {
    await alice.fill("#payout-amount", "40");
    await alice.fill("#payout-destination", "IBAN DE00 1234");
    await alice.click("#request-payout");
    await expectText(alice, "#pending", "40.00 USD");
    await expectText(alice, "#balance", "100.00 USD");
    await expectText(alice, "#payouts .payout-status", "PENDING");
    const queued = dave.locator("#pending-payouts tbody tr", { hasText: "IBAN DE00 1234" });
    for (let tries = 0; !(await queued.isVisible()); tries++) {
      assert.ok(tries < 50, "the payout reaches the queue");
      await dave.click("#refresh-operations");
      await dave.waitForTimeout(200);
    }
    await queued.locator("input.payout-note").fill("po_789");
    await queued.locator("button[data-action=complete-payout]").click();
    await expectText(dave, "#status.ok", "completed");
    await expectText(alice, "#payouts .payout-status", "COMPLETED");
    await expectText(alice, "#pending", "0.00 USD");
  });

  await step("dave announces a pay-in for alice by e-mail and confirms it", async () => {
    await dave.fill("#payin-user", ALICE);
    await dave.fill("#payin-amount", "25");
    await dave.fill("#payin-reference", "psp-42");
    await dave.click("#create-payin");
    const p = dave.locator("#payins tbody tr", { hasText: "psp-42" });
    await p.waitFor(WAIT);
    await p.locator("button[data-action=confirm-payin]").click();
    await expectText(dave, "#status.ok", "confirmed");
    await expectText(alice, "#balance", "125.00 USD");
  });

  await step("alice reads her statement and downloads it as CSV", async () => {
    await alice.click("#show-statement");
    await expectText(alice, "#statement-summary", "closing 125.00 USD");
    const [download] = await Promise.all([
      alice.waitForEvent("download", WAIT),
      alice.click("#download-statement"),
    ]);
    const path = await download.path();
    const { readFile } = await import("node:fs/promises");
    const csv = await readFile(path, "utf8");
    assert.ok(csv.startsWith("id,createdAt,type,direction,amount"), csv.slice(0, 80));
    assert.ok(csv.includes(",PAYOUT,OUT,40.00,USD,100.00,"), csv);
  });

  await step("dave registers a webhook, pauses and resumes it, retries a delivery and rotates its secret", async () => {
    assert.equal(await dave.isVisible("#webhooks-panel"), true, "admins see webhooks");
    assert.equal(await alice.isHidden("#webhooks-panel"), true, "users do not");
    // Nobody listens on port 9: its deliveries fail and wait in the log.
    await dave.fill("#webhook-url", "http://127.0.0.1:9/hook");
    await dave.fill("#webhook-events", "webhook.*, FundsDeposited");
    await dave.click("#create-webhook");
    await expectText(dave, "#status.ok", "Webhook registered");
    const first = await dave.textContent("#webhook-secret");
    assert.ok(first.startsWith("whsec_"), first);
    const row = dave.locator("#webhooks tbody tr", { hasText: "127.0.0.1:9" });
    await row.waitFor(WAIT);
    await row.locator("button[data-action=webhook-status]").click();
    await expectText(dave, "#webhooks tbody tr", "PAUSED");
    await row.locator("button[data-action=webhook-status]").click();
    await expectText(dave, "#webhooks tbody tr", "ACTIVE");
    await row.locator("button[data-action=webhook-deliveries]").click();
    const failing = dave.locator("#webhook-deliveries tbody tr", { hasText: "WebhookEndpointUpdated" });
    for (let i = 0; i < 100 && !(await failing.count()); i++) {
      await dave.click("#refresh-webhooks");
      await dave.waitForTimeout(200);
    }
    await failing.first().locator("button[data-action=webhook-retry]").click();
    await expectText(dave, "#status.ok", "queued again");
    await row.locator("button[data-action=webhook-rotate]").click();
    await expectText(dave, "#status.ok", "Secret rotated");
    const second = await dave.textContent("#webhook-secret");
    assert.ok(second.startsWith("whsec_") && second !== first, second);
  });

  await step("the API reference renders from the binary", async () => {
    const docs = await open("docs");
    await docs.goto(ORIGIN + "/api/v1/docs");
    await docs.locator(".swagger-ui .opblock-summary-path", { hasText: "/api/v1/transfers" }).first().waitFor(WAIT);
  });

  if (SCREENSHOT) await alice.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.deepEqual(problems, [], "the pages reported errors");
  console.log("console escrow: all steps passed");
} catch (e) {
  console.error(`FAILED: ${e.stack || e}`);
  if (problems.length) console.error(problems.join("\n"));
  for (const [name, page] of Object.entries(pages)) {
    const status = await page.textContent("#status").catch(() => "");
    if (status) console.error(`${name}'s status line: ${status}`);
    // What the server says, to tell a page that missed an update from a command that did
    // not happen.
    const seen = await page.evaluate(async () => {
      const u = JSON.parse(sessionStorage.getItem("escrow.user") || "null");
      if (!u) return null;
      const headers = { Authorization: `Bearer ${sessionStorage.getItem("escrow.token")}` };
      const c = await (await fetch(`/api/v1/contracts/user/${u.id}`, { headers })).json();
      return (c.items || []).map((x) => `${x.title}=${x.status}${x.deliveredAt ? " (delivered)" : ""}`);
    }).catch((e) => `unavailable: ${e}`);
    if (seen) console.error(`${name}'s contracts on the server: ${JSON.stringify(seen)}`);
    if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT.replace(/\.png$/, `-${name}-failed.png`), fullPage: true });
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
