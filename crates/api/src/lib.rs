//! The ingestion api: authenticates, checks the shape of events, queues them and answers
//! 202 once the broker confirmed. It keeps no state of its own beyond each application's
//! rate-limit bucket, which is per instance by design, so instances scale out.

mod address_limit;
pub mod browser;
mod cors;
mod ingest;
pub mod metrics;
pub mod openapi;
mod outbox;
mod problem;
mod rate_limit;
pub mod segment;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, web};
use eye_auth::TokenGate;
use eye_core::Settings;
use eye_core::metrics::Registry;
use eye_core::queue::{Publisher, Readiness};
use eye_core::token::TokenKeys;
use eye_http::proxies::TrustedProxies;
use sea_orm::DatabaseConnection;
use serde_json::json;
use utoipa_swagger_ui::SwaggerUi;

pub use address_limit::{AddressLimiter, PRUNE_TASK};
pub use ingest::{Limits, parse_events};
use metrics::ApiMetrics;
pub use metrics::OutboxMetrics;
pub use outbox::{Outbox, OutboxConfig};
pub use problem::ApiError;
pub use rate_limit::{REPORT_TASK, RateLimiter, Refusal};

/// What every request handler shares.
pub struct State {
    gate: Arc<TokenGate>,
    /// One per api instance, shared by every HTTP worker thread.
    rate_limiter: Arc<RateLimiter>,
    outbox: Outbox,
    limits: Limits,
    metrics: Arc<ApiMetrics>,
    /// Publishable keys: the limit per client address, and whose forwarding headers count.
    address_limiter: Arc<AddressLimiter>,
    proxies: TrustedProxies,
}

/// A bound, not yet running api server.
pub struct Api {
    server: Server,
    port: u16,
}

impl Api {
    /// Binds `settings.api_addr` (port 0 picks a free port) and prepares the server, counting
    /// into `metrics` and serving it on `/metrics`.
    pub async fn build(
        settings: &Settings,
        db: DatabaseConnection,
        publisher: Publisher,
        metrics: Registry,
    ) -> anyhow::Result<Self> {
        let proxies = TrustedProxies::parse("api_trusted_proxies", &settings.api_trusted_proxies)?;
        let listener = TcpListener::bind(&settings.api_addr)
            .map_err(|e| anyhow::anyhow!("failed to bind the api to {}: {e}", settings.api_addr))?;
        let port = listener.local_addr()?.port();
        let gate = Arc::new(TokenGate::new(
            TokenKeys::new(settings.jwt_secret()?),
            db.clone(),
        ));
        if let Err(e) = gate.refresh().await {
            tracing::warn!(error = %e, "could not load api tokens yet; will keep trying");
        }
        gate.spawn_refresh(settings.token_refresh());
        let rate_limiter = Arc::new(RateLimiter::new(settings.rate_limit()));
        rate_limiter.spawn_report(db, settings.token_refresh());
        let address_limiter = Arc::new(AddressLimiter::new(settings.publishable_rate_limit()));
        address_limiter.spawn_prune();
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
        // Declaring the queues once here, rather than in every thread's first request, keeps
        // the broker's slowest step out of the first requests' time.
        match publisher.readiness().await {
            Readiness::Ready => {}
            not_ready => tracing::warn!(
                broker = not_ready.label(),
                reason = not_ready.reason(),
                "the broker is not ready at start; events are refused with 503 until it is"
            ),
        }
        let metrics = Arc::new(ApiMetrics::new(metrics));
        let openapi = openapi::document();
        // Built once per HTTP worker thread: each has its own outbox and broker connection,
        // so a request is read, queued, confirmed and answered without changing threads.
        let mut server = actix_web::HttpServer::new(move || {
            let outbox = Outbox::start(publisher.sibling(), outbox_config, metrics.outbox.clone());
            let state = web::Data::new(State {
                gate: gate.clone(),
                rate_limiter: rate_limiter.clone(),
                outbox,
                limits,
                metrics: metrics.clone(),
                address_limiter: address_limiter.clone(),
                proxies: proxies.clone(),
            });
            App::new()
                .app_data(state)
                .service(
                    SwaggerUi::new("/swagger-ui/{_:.*}")
                        .url("/openapi.json", openapi.clone())
                        .config(
                            utoipa_swagger_ui::Config::from("/openapi.json").validator_url("none"),
                        ),
                )
                .wrap(actix_web::middleware::from_fn(cors::headers))
                .wrap(actix_web::middleware::from_fn(metrics::track))
                .wrap(actix_web::middleware::from_fn(eye_http::request_id))
                .route("/v1/events", web::post().to(ingest::post_events))
                .configure(segment::routes)
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics::render))
                .configure(browser::routes)
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

/// Alive: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses((status = 200, description = "The api is up.", body = openapi::Health))
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when a message could be published now; otherwise 503 naming why (the broker is
/// unreachable, or blocks publishers during a resource alarm).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Events can be queued now.", body = openapi::Readiness),
        (status = 503, description = "Events cannot be queued now; `reason` says why.",
         body = openapi::Readiness,
         headers(("Retry-After" = u64, description = "Seconds to wait before asking again.")))
    )
)]
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
