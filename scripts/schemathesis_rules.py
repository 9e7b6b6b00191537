"""The refusals of schema-valid requests that the OpenAPI document cannot state.

Loaded by scripts/schemathesis.sh (SCHEMATHESIS_HOOKS). A request that conforms to the
document may still be refused with 422 for exactly these reasons:

- POST /api/v1/contracts, SAME_PARTIES: buyerId equals sellerId (an inequality between two
  fields, which JSON Schema has no way to say);
- POST /api/v1/contracts, INVALID_FUND_BY: fundBy is not in the future or more than 366 days
  ahead (it depends on the clock; the document states only that it is a date-time);
- POST /api/v1/contracts, MILESTONES_MISMATCH: an amount given beside milestones that is not
  their sum; AMOUNT_TOO_LARGE: milestones that add up to more than the largest amount (a
  sum over array items, which JSON Schema cannot state); AMOUNT_REQUIRED: neither an
  amount nor milestones (JSON Schema could say it with `anyOf`, but generated clients,
  openapi-python-client among them, then cannot build the request's model at all);
- PUT /api/v1/disputes/{id}/resolve, SPLIT_MISMATCH: the two sides of a SPLIT do not add
  up to what the contract holds (stored state);
- GET /api/v1/wallets/{userId}, INVALID_AS_OF: asOf is in the future (it depends on the
  clock);
- GET /api/v1/wallets/{userId}/statement, INVALID_PERIOD: from after to, or more than ten
  years apart (an order and a distance between two parameters);
- POST /api/v1/logs, INVALID_DETAILS: details over 4096 bytes as JSON text (a size of
  the serialised value, which JSON Schema cannot bound), or a NUL character anywhere in
  them (PostgreSQL's jsonb cannot store one; a schema cannot forbid it in every nested
  string and key);
- PUT /api/v1/admin/fee-schedule, INVALID_FEE_SCHEDULE: minimum above maximum (an order
  between two fields);
- an amount with a currency (deposits, withdrawals, transfers, payouts, contracts, fee
  schedules, revenue withdrawals), AMOUNT_TOO_PRECISE: decimals the currency does not have, such as
  cents of yen (the amount's precision depends on the currency field);
- any request with an Idempotency-Key, IDEMPOTENCY_KEY_REUSED: the key was stored earlier
  with another body (stored state; 422 as the IETF Idempotency-Key draft says).

Any other 422 to a schema-valid request fails the run.
"""

import json

import schemathesis

PRECISION = "AMOUNT_TOO_PRECISE"
RULES = {
    ("POST", "/api/v1/contracts"): {
        "SAME_PARTIES",
        "INVALID_FUND_BY",
        "MILESTONES_MISMATCH",
        "AMOUNT_TOO_LARGE",
        "AMOUNT_REQUIRED",
        PRECISION,
    },
    ("PUT", "/api/v1/disputes/{id}/resolve"): {"SPLIT_MISMATCH"},
    ("PUT", "/api/v1/admin/fee-schedule"): {"INVALID_FEE_SCHEDULE", PRECISION},
    ("POST", "/api/v1/logs"): {"INVALID_DETAILS"},
    ("GET", "/api/v1/wallets/{userId}"): {"INVALID_AS_OF"},
    ("GET", "/api/v1/wallets/{userId}/statement"): {"INVALID_PERIOD"},
    ("POST", "/api/v1/wallets/deposit"): {PRECISION},
    ("POST", "/api/v1/wallets/withdraw"): {PRECISION},
    ("POST", "/api/v1/transfers"): {PRECISION},
    ("POST", "/api/v1/payouts"): {PRECISION},
    ("POST", "/api/v1/platform/revenue/withdraw"): {PRECISION},
}


def _code(response):
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


@schemathesis.check
def refusals_follow_the_stated_rules(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    allowed = set(RULES.get((case.method.upper(), case.operation.path), set()))
    if any(name.lower() == "idempotency-key" for name in (case.headers or {})):
        allowed.add("IDEMPOTENCY_KEY_REUSED")
    code = _code(response)
    if code not in allowed:
        raise AssertionError(
            f"a schema-valid request was refused with 422 {code}; "
            f"only {sorted(allowed) or 'nothing'} may refuse it here"
        )
    return None
