//! The OpenAPI document states what the server enforces, and its links lead somewhere.

use escrow_tests::spawn_app;
use reqwest::StatusCode;
use serde_json::Value;

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
    let creation = &paths["/api/v1/contracts"]["post"]["responses"]["201"]["links"];
    assert!(
        creation["FundContract"].is_object(),
        "a contract links to its funding"
    );
    assert!(links >= 12, "{links} links");
}
