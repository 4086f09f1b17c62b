//! The pages people use. Handlers stay thin: parse, ask `queries`, render a template.

mod apps;
pub(crate) mod dashboard;
mod dead;
mod events;
mod live;
mod login;
mod rejected;
mod reports;
mod stats;
pub(crate) mod types;

use actix_web::{HttpResponse, web};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(dashboard::show))
        .route("/login", web::get().to(login::form))
        .route("/login", web::post().to(login::submit))
        .route("/logout", web::post().to(login::logout))
        .route("/events", web::get().to(events::list))
        .route("/events.csv", web::get().to(events::export))
        .route("/events/{application}/{id}", web::get().to(events::detail))
        .route(
            "/sessions/{application}/{id}",
            web::get().to(events::session),
        )
        .route("/rejected", web::get().to(rejected::list))
        .route("/types", web::get().to(types::list))
        .route("/stats", web::get().to(stats::show))
        .route("/reports", web::get().to(reports::list))
        .route("/reports", web::post().to(reports::create))
        .route("/reports/{id}/csv", web::get().to(reports::csv))
        .route("/live", web::get().to(live::show))
        .route("/live/stream", web::get().to(live::stream))
        .route("/dead-letters", web::get().to(dead::list))
        .route("/dead-letters/replay", web::post().to(dead::replay_all))
        .route("/dead-letters/{id}", web::get().to(dead::detail))
        .route(
            "/dead-letters/{id}/replay",
            web::post().to(dead::replay_one),
        )
        .route("/dead-letters/{id}/discard", web::post().to(dead::discard))
        .route("/applications", web::get().to(apps::list))
        .route("/applications", web::post().to(apps::create))
        .route("/applications/state", web::post().to(apps::set_state))
        .route("/applications/limit", web::post().to(apps::set_limit))
        .route("/tokens", web::post().to(apps::issue))
        .route("/tokens/{id}/revoke", web::post().to(apps::revoke))
        .route("/static/app.css", web::get().to(css))
        .route("/static/app.js", web::get().to(js))
        .route("/static/live.js", web::get().to(live_js))
        .route("/healthz", web::get().to(healthz));
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "max-age=3600"))
        .body(include_str!("../../static/app.css"))
}

async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "max-age=3600"))
        .body(include_str!("../../static/app.js"))
}

async fn live_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "max-age=3600"))
        .body(include_str!("../../static/live.js"))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// The form field every POST carries.
#[derive(Debug, serde::Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}
