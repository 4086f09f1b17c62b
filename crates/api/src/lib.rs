//! The ingestion api: authenticates, checks the shape of events, queues them and answers
//! 202 once the broker confirmed. It keeps no state of its own, so instances scale out.

mod ingest;
mod outbox;
mod problem;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, web};
use eye_auth::TokenGate;
use eye_core::Settings;
use eye_core::queue::{Publisher, Readiness};
use eye_core::token::TokenKeys;
use sea_orm::DatabaseConnection;
use serde_json::json;

pub use ingest::{Limits, parse_events};
pub use outbox::{Outbox, OutboxConfig};
pub use problem::ApiError;

/// What every request handler shares.
pub struct State {
    gate: Arc<TokenGate>,
    outbox: Outbox,
    limits: Limits,
}

/// A bound, not yet running api server.
pub struct Api {
    server: Server,
    port: u16,
}

impl Api {
    /// Binds `settings.api_addr` (port 0 picks a free port) and prepares the server.
    pub async fn build(
        settings: &Settings,
        db: DatabaseConnection,
        publisher: Publisher,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.api_addr)
            .map_err(|e| anyhow::anyhow!("failed to bind the api to {}: {e}", settings.api_addr))?;
        let port = listener.local_addr()?.port();
        let gate = Arc::new(TokenGate::new(TokenKeys::new(settings.jwt_secret()?), db));
        if let Err(e) = gate.refresh().await {
            tracing::warn!(error = %e, "could not load api tokens yet; will keep trying");
        }
        gate.spawn_refresh(settings.token_refresh());
        let limits = Limits {
            max_events: settings.max_events_per_request,
            max_event_bytes: settings.max_event_bytes,
            max_request_bytes: settings.max_request_bytes,
        };
        let outbox_config = OutboxConfig {
            max_in_flight: settings.publish_channels,
            linger: settings.publish_linger(),
            timeout: settings.publish_timeout(),
            max_bytes: settings.outbox_max_bytes,
        };
        // Built once per HTTP worker thread: each has its own outbox and broker connection,
        // so a request is read, queued, confirmed and answered without changing threads.
        let mut server = actix_web::HttpServer::new(move || {
            let outbox = Outbox::start(publisher.sibling(), outbox_config);
            let state = web::Data::new(State {
                gate: gate.clone(),
                outbox,
                limits,
            });
            App::new()
                .app_data(state)
                .route("/v1/events", web::post().to(ingest::post_events))
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
        })
        .disable_signals();
        if let Some(workers) = settings.api_workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Self { server, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server gracefully: in-flight requests finish first.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when a message could be published now; otherwise 503 naming why (the broker is
/// unreachable, or blocks publishers during a resource alarm).
async fn readyz(state: web::Data<State>) -> HttpResponse {
    let readiness = state.outbox.readiness().await;
    if readiness == Readiness::Ready {
        return HttpResponse::Ok().json(json!({"status": "ready", "broker": "ok"}));
    }
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "1"))
        .json(json!({
            "status": "unavailable",
            "broker": readiness.label(),
            "reason": readiness.reason(),
        }))
}
