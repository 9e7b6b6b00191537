//! The OpenAPI 3.1 document, generated from the handlers' annotations so it cannot drift.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Problem;
use crate::routes::{audit, auth, contracts, disputes, health, users, wallets, ws};

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
        users::me, users::by_id, users::suspend, users::reactivate,
        wallets::get_wallet, wallets::deposit, wallets::withdraw, wallets::transfer, wallets::transactions,
        contracts::create, contracts::get, contracts::list_for_user, contracts::fund, contracts::deliver,
        contracts::release, contracts::refund, contracts::cancel,
        disputes::raise, disputes::get, disputes::list, disputes::resolve,
        audit::for_user, audit::contract_history, audit::all,
        ws::ws, ws::notify,
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags((name = "health"), (name = "auth"), (name = "users"), (name = "wallets"), (name = "contracts"), (name = "disputes"), (name = "audit"), (name = "notifications"))
)]
pub struct ApiDoc;
