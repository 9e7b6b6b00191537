//! The OpenAPI document states what the server enforces, and its links lead somewhere.

use escrow_tests::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The operation an `operationRef` such as `#/paths/~1api~1v1~1contracts~1{id}/get` names.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

/// Every link of every response names an operation the document has, with parameters that
/// operation takes; the creations link to what a client does next. Every path id is
/// declared a UUID, and every `Idempotency-Key` header its length and characters.
///
/// Fails when a link's target is renamed or removed (seen with the contract-history link
/// pointing at `/api/v1/contracts/{id}/histories`: the reference resolves to nothing), and
/// when links are served as utoipa writes them (`operation_ref`, which clients ignore).
#[tokio::test]
async fn links_resolve_and_ids_and_keys_are_constrained() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.body;
    let mut links = 0;
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("an item") {
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let reference = link["operationRef"].as_str().expect("an operationRef");
                    let target = resolve(&doc, reference).unwrap_or_else(|| {
                        panic!("{method} {path} {status} {name}: {reference} names nothing")
                    });
                    for param in link["parameters"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, _)| k)
                    {
                        let takes = target["parameters"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| p["name"] == param.as_str());
                        assert!(takes, "{reference} takes no parameter {param}");
                    }
                    links += 1;
                }
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or_default();
                if p["in"] == "path" && (name == "id" || name == "userId") {
                    assert_eq!(p["schema"]["format"], "uuid", "{method} {path}: {name}");
                }
                if name == "Idempotency-Key" {
                    assert_eq!(p["schema"]["maxLength"], 255, "{method} {path}");
                    assert_eq!(p["schema"]["pattern"], "^[!-~]+$", "{method} {path}");
                }
            }
        }
    }
    // An optional amount the server reads `null` as absent is documented nullable (utoipa
    // drops `nullable` beside `schema_with`; schemathesis sent a `null` minimum the
    // document refused and the server took).
    for (schema, field) in [
        ("PayoutRequest", "amount"),
        ("FeeScheduleRequest", "minimum"),
        ("FeeScheduleRequest", "maximum"),
    ] {
        let alternatives = &doc["components"]["schemas"][schema]["properties"][field]["oneOf"];
        assert!(
            alternatives
                .as_array()
                .is_some_and(|a| a.contains(&serde_json::json!({"type": "null"}))),
            "{schema}.{field}: {alternatives}"
        );
    }
    let creation = &paths["/api/v1/contracts"]["post"]["responses"]["201"]["links"];
    assert!(
        creation["FundContract"].is_object(),
        "a contract links to its funding"
    );
    assert!(links >= 12, "{links} links");
}

/// The resolve body's rule across fields is in the document, and the server enforces the
/// same rule: a `SPLIT` names both amounts, `RELEASE` and `REFUND` name neither.
///
/// Fails without `outcome_rule` in `api/src/openapi.rs` (seen: the document then allows a
/// `SPLIT` with no amounts, which the server refuses with 422).
#[tokio::test]
async fn the_resolve_rule_across_fields_is_documented_and_enforced() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", None).await.body;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["ResolveDisputeRequest"]["oneOf"],
        json!([{"$ref": "#/components/schemas/ResolveReleaseOrRefund"},
               {"$ref": "#/components/schemas/ResolveSplit"}])
    );
    let split = &schemas["ResolveSplit"];
    assert_eq!(
        split["required"],
        json!(["resolution", "outcome", "sellerAmount", "buyerAmount"])
    );
    assert_eq!(split["properties"]["outcome"]["enum"], json!(["SPLIT"]));
    assert!(!split["properties"]["sellerAmount"]
        .to_string()
        .contains("null"));
    let others = &schemas["ResolveReleaseOrRefund"];
    assert_eq!(
        others["properties"]["outcome"]["enum"],
        json!(["RELEASE", "REFUND"])
    );
    assert_eq!(others["properties"]["buyerAmount"]["type"], "null");
    assert_eq!(others["required"], json!(["resolution", "outcome"]));

    let arbiter = app.user().await;
    let arbiter = app.grant(&arbiter, "arbiter").await;
    let path = format!("/disputes/{}/resolve", uuid::Uuid::now_v7());
    for body in [
        json!({"resolution": "r", "outcome": "SPLIT"}),
        json!({"resolution": "r", "outcome": "SPLIT", "sellerAmount": "1.00"}),
        json!({"resolution": "r", "outcome": "RELEASE", "buyerAmount": "1.00"}),
        json!({"resolution": "r", "outcome": "SPLIT", "sellerAmount": null, "buyerAmount": "1.00"}),
    ] {
        let res = app
            .request(Method::PUT, &path, Some(&arbiter.token), Some(&body), &[])
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let allowed =
        json!({"resolution": "r", "outcome": "SPLIT", "sellerAmount": "1.00", "buyerAmount": 0});
    let res = app
        .request(
            Method::PUT,
            &path,
            Some(&arbiter.token),
            Some(&allowed),
            &[],
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::NOT_FOUND,
        "a well-formed body reaches the lookup"
    );
}

/// The document's text patterns refuse exactly the texts of one character (alone, and between
/// two letters) the server refuses,
/// for every character of the Basic Multilingual Plane (every Unicode whitespace character
/// lies in it). The patterns spell whitespace out, because `\s` means different sets in
/// different engines (ECMAScript's includes U+FEFF and not U+0085; Rust's `trim` the other
/// way round).
///
/// Fails with the notification pattern written `^\s*\S[\s\S]*$` (seen: Rust's `\s` agrees,
/// so the check is on the explicit set: U+0085 and U+FEFF must be judged as `trim` judges
/// them) and with a title pattern that lets a control character through.
#[tokio::test]
async fn the_text_patterns_refuse_what_the_server_refuses() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", None).await.body;
    let schemas = &doc["components"]["schemas"];
    let pattern = |schema: &str, field: &str| {
        let text = schemas[schema]["properties"][field]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{schema}.{field} has a pattern"))
            .to_owned();
        assert!(
            !text.contains("\\s*\\S"),
            "{schema}.{field} spells whitespace out"
        );
        regex::Regex::new(&text).expect("a pattern the regex crate reads")
    };
    let message = pattern("NotificationRequest", "message");
    let title = pattern("CreateContractRequest", "title");
    for c in (0..=0xFFFF_u32).filter_map(char::from_u32) {
        let alone = c.to_string();
        let blank = alone.trim().is_empty();
        assert_eq!(message.is_match(&alone), !blank, "message {:?}", c);
        let control = c.is_control() && c != '\n' && c != '\t';
        assert_eq!(title.is_match(&alone), !(blank || control), "title {:?}", c);
        let inside = format!("a{c}b");
        assert_eq!(title.is_match(&inside), !control, "title a{:?}b", c);
    }
}

/// Bodies as generated clients expect them: a command that takes nothing declares no body,
/// an optional body is an optional object (never "an object or null", which generators
/// make callers fill in), and every body a request or a JSON answer carries is a named
/// schema (or a list of one); operation ids are unique. The server still takes no body,
/// `{}` or `null` alike.
///
/// Fails without `optional_bodies` in the served document (seen: `fund` declared a
/// required body of `EmptyRequest` or `null`).
#[tokio::test]
async fn bodies_are_declared_as_generated_clients_expect() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", None).await.body;
    for action in ["fund", "deliver", "cancel"] {
        let op = &doc["paths"][format!("/api/v1/contracts/{{id}}/{action}")]["post"];
        assert!(op.get("requestBody").is_none(), "{action}: {op}");
    }
    for n in ["deliver", "release", "refund"] {
        let op = &doc["paths"][format!("/api/v1/contracts/{{id}}/milestones/{{n}}/{n}")]["post"];
        assert!(op.get("requestBody").is_none(), "milestone {n}: {op}");
    }
    for action in ["release", "refund"] {
        let body =
            &doc["paths"][format!("/api/v1/contracts/{{id}}/{action}")]["post"]["requestBody"];
        assert_eq!(
            body,
            &json!({"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PayoutRequest"}}}}),
            "{action}"
        );
    }
    let named = |schema: &Value| {
        schema.get("$ref").is_some()
            || (schema["type"] == "array" && schema["items"].get("$ref").is_some())
    };
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let bodies = op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
                .chain(
                    op["responses"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .flat_map(|(_, r)| r["content"].as_object().into_iter().flatten()),
                );
            for (content_type, c) in bodies {
                assert!(
                    named(&c["schema"]),
                    "{method} {path} {content_type}: {}",
                    c["schema"]
                );
            }
        }
    }
    assert!(doc["components"]["schemas"].get("EmptyRequest").is_none());
    // Generators name a client's methods after operation ids: each is unique.
    let mut ids = std::collections::HashMap::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            if let Some(other) = ids.insert(id.clone(), format!("{method} {path}")) {
                panic!("operationId {id} names {other} and {method} {path}");
            }
        }
    }

    // The server takes no body, `{}` and `null` alike.
    let (buyer, seller) = (app.user().await, app.user().await);
    app.deposit(&buyer, "30").await;
    for body in [None, Some(json!({})), Some(Value::Null)] {
        let c = app
            .post(
                "/contracts",
                Some(&buyer.token),
                json!({"sellerId": seller.id, "buyerId": buyer.id, "title": "t", "amount": "10"}),
            )
            .await;
        let r = app
            .request(
                reqwest::Method::POST,
                &format!("/contracts/{}/fund", c.str("id")),
                Some(&buyer.token),
                body.as_ref(),
                &[],
            )
            .await;
        assert_eq!(r.status, reqwest::StatusCode::OK, "{body:?}: {:?}", r.body);
    }
}
