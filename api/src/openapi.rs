//! The OpenAPI 3.1 document, generated from the handlers' annotations so it cannot drift.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Problem;
use crate::routes::{
    audit, auth, contracts, deliveries, disputes, freezes, health, milestones, payins, payouts,
    platform, statements, users, wallets, webhooks, ws,
};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API description served at `/api/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Escrow ledger API", description = "Event-sourced escrow ledger: wallets, transfers, escrow contracts, disputes, audit."),
    paths(
        health::health, health::ready,
        auth::register, auth::login, auth::logout, auth::refresh,
        users::me, users::lookup, users::by_id, users::suspend, users::reactivate,
        wallets::get_wallet, wallets::deposit, wallets::withdraw, wallets::transfer, wallets::transactions,
        contracts::create, contracts::get, contracts::list_for_user, contracts::fund, contracts::deliver,
        contracts::release, contracts::refund, contracts::cancel,
        milestones::deliver, milestones::release, milestones::refund,
        freezes::freeze, freezes::unfreeze,
        payins::create, payins::confirm, payins::fail, payins::get, payins::list,
        payouts::create, payouts::complete, payouts::fail, payouts::get, payouts::list,
        webhooks::create, webhooks::list, webhooks::get_one, webhooks::update, webhooks::delete,
        webhooks::rotate_secret, deliveries::list, deliveries::retry, deliveries::replay,
        statements::statement,
        disputes::raise, disputes::get, disputes::list, disputes::resolve,
        audit::for_user, audit::contract_history, audit::all,
        audit::record, audit::logs_for_user,
        ws::ws, ws::notify, ws::notify_at_seed_path,
        platform::set_fee_schedule, platform::fee_schedules, platform::revenue,
        platform::revenue_transactions, platform::withdraw_revenue,
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags((name = "health"), (name = "auth"), (name = "users"), (name = "wallets"), (name = "contracts"), (name = "disputes"), (name = "audit"), (name = "notifications"), (name = "platform"), (name = "payins"), (name = "payouts"), (name = "webhooks"))
)]
pub struct ApiDoc;

/// An amount as the server accepts it: a plain decimal string, or a JSON number, greater
/// than zero, at most 1000000000 (`domain::Amount::MAX`), with at most two decimal places
/// (none for JPY).
pub fn amount_schema() -> utoipa::openapi::schema::Schema {
    money_schema(
        "^([1-9][0-9]{0,8}(\\.[0-9]{1,2})?|1000000000(\\.00?)?|0\\.(0[1-9]|[1-9][0-9]?))$",
        false,
        "500.00",
        "A plain decimal (no exponent) as a string or a JSON number: greater than 0, at most 1000000000, at most two decimal places (none for JPY).",
    )
}

/// An optional amount: as [`amount_schema`], or `null` for none (the server reads a `null`
/// as an absent field).
pub fn optional_amount_schema() -> utoipa::openapi::schema::Schema {
    with_null(amount_schema())
}

/// One side of an arbiter's split: as [`amount_schema`], zero allowed, or `null` for none.
pub fn split_schema() -> utoipa::openapi::schema::Schema {
    with_null(money_schema(
        "^([0-9]{1,9}(\\.[0-9]{1,2})?|1000000000(\\.00?)?)$",
        true,
        "400.00",
        "A plain decimal (no exponent) as a string or a JSON number: 0 to 1000000000, at most two decimal places; the two sides add up to what the contract holds.",
    ))
}

/// `schema`, or `null`: utoipa drops `nullable` beside `schema_with`, so it is said here.
fn with_null(schema: utoipa::openapi::schema::Schema) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    match schema {
        Schema::OneOf(mut one_of) => {
            one_of
                .items
                .push(ObjectBuilder::new().schema_type(Type::Null).into());
            Schema::OneOf(one_of)
        }
        other => other,
    }
}

/// A decimal as a string matching `pattern`, or a number above 0 (from 0 with
/// `zero_allowed`) up to 1000000000 in steps of 0.01.
fn money_schema(
    pattern: &str,
    zero_allowed: bool,
    example: &str,
    description: &str,
) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .examples([example]);
    let number = ObjectBuilder::new()
        .schema_type(Type::Number)
        .maximum(Some(1_000_000_000))
        .multiple_of(Some(0.01));
    let number = if zero_allowed {
        number.minimum(Some(0))
    } else {
        number.exclusive_minimum(Some(0))
    };
    OneOfBuilder::new()
        .item(text)
        .item(number)
        .description(Some(description))
        .into()
}

/// The document as served. utoipa writes a link's fields in snake_case (`operation_ref`),
/// where OpenAPI names them in camelCase (`operationRef`): clients would ignore every
/// link, so the names are corrected here. A rule across two fields, which a struct's derive
/// cannot state, is added here too ([`outcome_rule`]), optional bodies
/// are declared as clients expect them ([`optional_bodies`]), and the statement's CSV
/// form is stated ([`csv_statement`]).
pub fn document() -> &'static serde_json::Value {
    static DOC: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(build);
    &DOC
}

fn build() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let responses = doc
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|op| {
            op.get_mut("responses")
                .and_then(serde_json::Value::as_object_mut)
        })
        .flat_map(|r| r.values_mut());
    for response in responses {
        let links = response
            .get_mut("links")
            .and_then(serde_json::Value::as_object_mut)
            .into_iter()
            .flat_map(|l| l.values_mut())
            .filter_map(serde_json::Value::as_object_mut);
        for link in links {
            for (snake, camel) in [
                ("operation_ref", "operationRef"),
                ("operation_id", "operationId"),
                ("request_body", "requestBody"),
            ] {
                if let Some(v) = link.remove(snake) {
                    link.insert(camel.to_owned(), v);
                }
            }
        }
    }
    outcome_rule(&mut doc);
    optional_bodies(&mut doc);
    csv_statement(&mut doc);
    doc
}

/// A statement answers JSON or, with `format=csv`, CSV: utoipa's derive states one
/// content type per response, so the second is added here.
fn csv_statement(doc: &mut serde_json::Value) {
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(serde_json::Value::as_object_mut)
    {
        schemas.insert(
            "StatementCsv".to_owned(),
            serde_json::json!({
                "type": "string",
                "description": "A statement as RFC 4180 CSV: a header row (id, createdAt, type, direction, amount, currency, balanceAfter, description, counterpartyUserId, counterpartyEmail, contractId), then one row per movement, oldest first"
            }),
        );
    }
    if let Some(content) = doc
        .pointer_mut("/paths/~1api~1v1~1wallets~1{userId}~1statement/get/responses/200/content")
        .and_then(serde_json::Value::as_object_mut)
    {
        content.insert(
            "text/csv".to_owned(),
            serde_json::json!({ "schema": { "$ref": "#/components/schemas/StatementCsv" } }),
        );
    }
}

/// A command whose body is optional (`request_body(content = Option<T>)`) is documented by
/// utoipa as a required body that may be `null`; generated clients then make callers pass
/// one (or send their own "unset" marker). Such a body becomes an optional, non-null object,
/// and a command that takes nothing (`EmptyRequest`) declares no body at all; the server
/// still accepts none, `{}` or `null`.
fn optional_bodies(doc: &mut serde_json::Value) {
    let empty = serde_json::json!({ "$ref": "#/components/schemas/EmptyRequest" });
    let operations = doc
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for op in operations {
        let branches = op
            .pointer("/requestBody/content/application~1json/schema/oneOf")
            .and_then(serde_json::Value::as_array);
        let body = match branches.map(Vec::as_slice) {
            Some([a, b]) if a["type"] == "null" && b.get("$ref").is_some() => b.clone(),
            Some([a, b]) if b["type"] == "null" && a.get("$ref").is_some() => a.clone(),
            _ => continue,
        };
        let Some(op) = op.as_object_mut() else {
            continue;
        };
        if body == empty {
            op.remove("requestBody");
        } else {
            op.insert(
                "requestBody".to_owned(),
                serde_json::json!({
                    "required": false,
                    "content": { "application/json": { "schema": body } }
                }),
            );
        }
    }
    if !doc
        .to_string()
        .contains("#/components/schemas/EmptyRequest")
    {
        if let Some(schemas) = doc
            .pointer_mut("/components/schemas")
            .and_then(serde_json::Value::as_object_mut)
        {
            schemas.remove("EmptyRequest");
        }
    }
}

/// A `SPLIT` names both amounts; `RELEASE` and `REFUND` name neither (or name them `null`,
/// which the server reads as absent). The resolve handler refuses anything else with 422,
/// so the document says it: a generator that trusts the document never sends a body the
/// server must refuse. The two shapes are named schemas of their own, each complete
/// (`ResolveReleaseOrRefund`, `ResolveSplit`): generated clients make a type of each,
/// where branches holding only the differences would lose the fields they share.
fn outcome_rule(doc: &mut serde_json::Value) {
    use serde_json::{json, Value};
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let Some(base) = schemas.get("ResolveDisputeRequest").cloned() else {
        return;
    };
    let property = |name: &str| base["properties"][name].clone();
    // An amount without its `null` branch: a split names both sides.
    let amount = |name: &str| {
        let mut a = property(name);
        if let Some(branches) = a.get_mut("oneOf").and_then(Value::as_array_mut) {
            branches.retain(|b| b["type"] != "null");
        }
        a
    };
    let mut outcome = property("outcome");
    if let Some(o) = outcome.as_object_mut() {
        o.remove("pattern");
        o.remove("example");
    }
    let mut release_or_refund = outcome.clone();
    release_or_refund["enum"] = json!(["RELEASE", "REFUND"]);
    let mut split = outcome;
    split["enum"] = json!(["SPLIT"]);
    schemas.insert(
        "ResolveReleaseOrRefund".to_owned(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "description": "Everything held goes to the seller (`RELEASE`) or back to the buyer (`REFUND`).",
            "required": ["resolution", "outcome"],
            "properties": {
                "resolution": property("resolution"),
                "outcome": release_or_refund,
                "sellerAmount": { "type": "null", "description": "Absent or null." },
                "buyerAmount": { "type": "null", "description": "Absent or null." }
            }
        }),
    );
    schemas.insert(
        "ResolveSplit".to_owned(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "description": "What is held is split: both sides named, adding up to it.",
            "required": ["resolution", "outcome", "sellerAmount", "buyerAmount"],
            "properties": {
                "resolution": property("resolution"),
                "outcome": split,
                "sellerAmount": amount("sellerAmount"),
                "buyerAmount": amount("buyerAmount")
            }
        }),
    );
    schemas.insert(
        "ResolveDisputeRequest".to_owned(),
        json!({
            "description": base["description"],
            "oneOf": [
                { "$ref": "#/components/schemas/ResolveReleaseOrRefund" },
                { "$ref": "#/components/schemas/ResolveSplit" }
            ]
        }),
    );
}
