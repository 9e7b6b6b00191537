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
        ("ResolveDisputeRequest", "sellerAmount"),
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
    let branches = doc["components"]["schemas"]["ResolveDisputeRequest"]["oneOf"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let split = branches
        .iter()
        .find(|b| b["properties"]["outcome"]["const"] == "SPLIT")
        .expect("a SPLIT branch");
    assert_eq!(split["required"], json!(["sellerAmount", "buyerAmount"]));
    assert_eq!(
        split["properties"]["sellerAmount"],
        json!({"not": {"type": "null"}})
    );
    let others = branches
        .iter()
        .find(|b| b["properties"]["outcome"]["enum"] == json!(["RELEASE", "REFUND"]))
        .expect("a RELEASE/REFUND branch");
    assert_eq!(others["properties"]["buyerAmount"], json!({"type": "null"}));

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
