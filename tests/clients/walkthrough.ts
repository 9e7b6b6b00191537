// The README walkthrough through a TypeScript client generated from the served OpenAPI
// document (openapi-typescript for the types, openapi-fetch for the calls), used as a new
// user would: no `minPosition` anywhere, every request sent to the other server than the
// one before (no affinity). `tsc --strict` checks every call and every field read against
// the generated types before this runs; at run time each answer must have the status the
// document gives it and the fields read from it.
//
// Environment: BASES (two base URLs, comma-separated), PASSWORD, CAROL_EMAIL (an arbiter),
// RUN (a suffix for the e-mail addresses). Prints "typescript client: all steps passed"
// last. Run by tests/tests/e2e/clients.rs.
import createClient from "openapi-fetch";
import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import type { components, paths } from "./generated/schema.js";

type Schemas = components["schemas"];

const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BASES = env("BASES").split(",");
const PASSWORD = env("PASSWORD");
const RUN = env("RUN");
let turn = 0;

// A client for the next server: every request goes to the other one than before.
function api(token?: string) {
  const baseUrl = BASES[turn++ % BASES.length];
  return createClient<paths>({
    baseUrl,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
}

// The answer's body, which openapi-fetch types from the document; a refusal fails the run.
function ok<T>(r: { data?: T; error?: unknown; response: Response }): T {
  assert.ok(r.response.ok, `HTTP ${r.response.status}: ${JSON.stringify(r.error)}`);
  assert.ok(r.data !== undefined, "an answer with a body");
  return r.data;
}

function step(name: string) {
  console.log(`ok ${name}`);
}

async function signIn(email: string): Promise<{ token: string; id: string }> {
  const session: Schemas["LoginResponse"] = ok(
    await api().POST("/api/v1/auth/login", { body: { email, password: PASSWORD } }),
  );
  return { token: session.access_token, id: session.user.id };
}

async function signUp(name: string) {
  const email = `${name}-${RUN}@example.com`;
  const user: Schemas["RegisteredUser"] = ok(
    await api().POST("/api/v1/auth/register", { body: { email, password: PASSWORD } }),
  );
  assert.equal(user.email, email);
  return signIn(email);
}

async function wallet(token: string, userId: string): Promise<Schemas["WalletView"]> {
  return ok(await api(token).GET("/api/v1/wallets/{userId}", { params: { path: { userId } } }));
}

const alice = await signUp("alice");
const bob = await signUp("bob");
step("register and log in");

const key = randomUUID();
const deposit = { userId: alice.id, amount: "500.00", description: "Initial deposit" };
const first: Schemas["MoneyResponse"] = ok(
  await api(alice.token).POST("/api/v1/wallets/deposit", {
    body: deposit,
    params: { header: { "Idempotency-Key": key } },
  }),
);
const again = ok(
  await api(alice.token).POST("/api/v1/wallets/deposit", {
    body: deposit,
    params: { header: { "Idempotency-Key": key } },
  }),
);
assert.equal(again.transaction.id, first.transaction.id, "a retried deposit is one deposit");
assert.equal((await wallet(alice.token, alice.id)).balance, "500.00");
step("deposit, retried with its Idempotency-Key, read back");

ok(
  await api(alice.token).POST("/api/v1/transfers", {
    body: { toUserId: bob.id, amount: 125.25, description: "Logo design" },
  }),
);
assert.equal((await wallet(alice.token, alice.id)).balance, "374.75");
assert.equal((await wallet(bob.token, bob.id)).balance, "125.25");
const history: Schemas["TransactionPage"] = ok(
  await api(alice.token).GET("/api/v1/wallets/{userId}/transactions", {
    params: { path: { userId: alice.id } },
  }),
);
assert.deepEqual(history.items.map((t) => t.type), ["TRANSFER", "DEPOSIT"]);
step("transfer; balances and history on the other server");

ok(await api(bob.token).POST("/api/v1/wallets/withdraw", { body: { userId: bob.id, amount: "25" } }));
const refused = await api(bob.token).POST("/api/v1/wallets/withdraw", {
  body: { userId: bob.id, amount: "1000" },
});
assert.equal(refused.response.status, 409);
const problem: Schemas["Problem"] | undefined = refused.error;
assert.equal(problem?.code, "INSUFFICIENT_FUNDS");
assert.equal((await wallet(bob.token, bob.id)).balance, "100.25");
step("withdraw; an overdraft is a Problem and changes nothing");

const logo: Schemas["ContractView"] = ok(
  await api(bob.token).POST("/api/v1/contracts", {
    body: {
      sellerId: bob.id,
      buyerId: alice.id,
      title: "Logo design",
      amount: "300.00",
      inspectionPeriodHours: 72,
    },
  }),
);
assert.equal(logo.status, "DRAFT");
assert.equal(logo.milestones.length, 1);
const onLogo = { params: { path: { id: logo.id } } };
assert.equal(ok(await api(alice.token).POST("/api/v1/contracts/{id}/fund", onLogo)).status, "ACTIVE");
assert.equal((await wallet(alice.token, alice.id)).heldInEscrow, "300.00");
ok(await api(bob.token).POST("/api/v1/contracts/{id}/deliver", onLogo));
const released = ok(await api(alice.token).POST("/api/v1/contracts/{id}/release", onLogo));
assert.equal(released.status, "COMPLETED");
assert.equal(ok(await api(bob.token).GET("/api/v1/contracts/{id}", onLogo)).status, "COMPLETED");
assert.equal((await wallet(bob.token, bob.id)).balance, "400.25");
step("contract: create, fund, deliver, release");

const site = ok(
  await api(alice.token).POST("/api/v1/contracts", {
    body: { sellerId: bob.id, buyerId: alice.id, title: "Website", amount: 50 },
  }),
);
const onSite = { params: { path: { id: site.id } } };
ok(await api(alice.token).POST("/api/v1/contracts/{id}/fund", onSite));
const dispute: Schemas["DisputeView"] = ok(
  await api(alice.token).POST("/api/v1/disputes", {
    body: { contractId: site.id, description: "Only half of the pages were delivered" },
  }),
);
assert.equal(ok(await api(bob.token).GET("/api/v1/contracts/{id}", onSite)).status, "DISPUTED");
const carol = await signIn(env("CAROL_EMAIL"));
const queue: Schemas["DisputePage"] = ok(
  await api(carol.token).GET("/api/v1/disputes", { params: { query: { status: "OPEN" } } }),
);
assert.ok(queue.items.some((d) => d.id === dispute.id));
const decision: Schemas["ResolveSplit"] = {
  resolution: "Half the work was delivered",
  outcome: "SPLIT",
  sellerAmount: "25.00",
  buyerAmount: "25.00",
};
const resolved = ok(
  await api(carol.token).PUT("/api/v1/disputes/{id}/resolve", {
    params: { path: { id: dispute.id } },
    body: decision,
  }),
);
assert.equal(resolved.status, "RESOLVED");
assert.equal(ok(await api(alice.token).GET("/api/v1/contracts/{id}", onSite)).status, "SETTLED");
assert.equal((await wallet(alice.token, alice.id)).balance, "49.75");
assert.equal((await wallet(bob.token, bob.id)).balance, "425.25");
step("dispute raised and split by an arbiter");

console.log("typescript client: all steps passed");
