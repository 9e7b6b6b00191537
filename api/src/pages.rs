//! Pages served by the binary itself: the console at `/` and the API reference at
//! `/api/v1/docs`. Everything is compiled in (no CDN, no build step) and sent with a
//! Content-Security-Policy that allows scripts from this origin only, so text a user typed
//! can never run as script even if a page had a bug that rendered it as HTML.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;

/// The console and the docs page, with their scripts and styles.
const CONSOLE_HTML: &str = include_str!("../static/console.html");
const CONSOLE_JS: &str = include_str!("../static/console.js");
const CONSOLE_CSS: &str = include_str!("../static/console.css");
const MONEY_JS: &str = include_str!("../static/money.js");
const WEBHOOKS_JS: &str = include_str!("../static/webhooks.js");
const DOCS_HTML: &str = include_str!("../static/docs.html");
const DOCS_JS: &str = include_str!("../static/docs.js");

/// Where Swagger UI's own files are served.
const DOCS_ASSETS: &str = "/api/v1/docs/assets";
/// The only files of Swagger UI's router we expose: its generated index page echoes the
/// request URI into HTML unescaped, so it stays unreachable and `docs.html` is used instead.
const DOCS_ASSET_FILES: [&str; 4] = [
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui.css.map",
    "swagger-ui-bundle.js.map",
];

/// Scripts from this origin only; the console talks to this origin (HTTP and WebSocket).
const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";
/// Swagger UI sets inline styles and uses data: images; scripts are still this origin's.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The routes of the console and the API reference (stateless).
pub fn routes() -> Router {
    let swagger = swagger_ui_dist::generate_routes(swagger_ui_dist::ApiDefinition {
        uri_prefix: DOCS_ASSETS,
        api_definition: swagger_ui_dist::OpenApiSource::Uri("/api/v1/openapi.json"),
        title: Some("Escrow ledger API"),
    })
    .layer(axum::middleware::from_fn(only_asset_files));
    let pages = Router::new()
        .route(
            "/",
            get(|| page(CONSOLE_HTML, "text/html; charset=utf-8", CONSOLE_CSP)),
        )
        .route(
            "/console.js",
            get(|| page(CONSOLE_JS, "text/javascript; charset=utf-8", CONSOLE_CSP)),
        )
        .route(
            "/money.js",
            get(|| page(MONEY_JS, "text/javascript; charset=utf-8", CONSOLE_CSP)),
        )
        .route(
            "/webhooks.js",
            get(|| page(WEBHOOKS_JS, "text/javascript; charset=utf-8", CONSOLE_CSP)),
        )
        .route(
            "/console.css",
            get(|| page(CONSOLE_CSS, "text/css; charset=utf-8", CONSOLE_CSP)),
        )
        .route(
            "/api/v1/docs",
            get(|| page(DOCS_HTML, "text/html; charset=utf-8", DOCS_CSP)),
        )
        .route(
            "/api/v1/docs/init.js",
            get(|| page(DOCS_JS, "text/javascript; charset=utf-8", DOCS_CSP)),
        );
    pages.merge(swagger)
}

async fn page(body: &'static str, content_type: &'static str, csp: &'static str) -> Response {
    let mut res = Response::new(Body::from(body));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

async fn only_asset_files(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let file = path.rsplit('/').next().unwrap_or_default();
    if !DOCS_ASSET_FILES.contains(&file) {
        return ApiError::not_found("NOT_FOUND", "no such endpoint").into_response();
    }
    let mut res = next.run(req).await;
    if res.status() == StatusCode::OK {
        let h = res.headers_mut();
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=86400"),
        );
    }
    res
}
