//! The read side: server-rendered pages for people and a JSON read api for programs, over the
//! database the workers fill. Everything shown is escaped by askama; queries bind every value.

mod auth;
mod chart;
mod csv;
mod error;
mod filter;
mod live;
mod metrics;
mod openapi;
mod pages;
mod queries;
mod queue;
mod read_api;
mod reports;
mod stats;
mod trends;
mod views;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, STRICT_TRANSPORT_SECURITY};
use actix_web::middleware::{DefaultHeaders, Next, from_fn};
use actix_web::{App, web};
use eye_auth::TokenGate;
use eye_core::Settings;
use eye_core::metrics::Registry;
use eye_core::queue::Publisher;
use eye_core::token::TokenKeys;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

pub use auth::throttle::Throttle;
pub use auth::users::{UserError, create_user};
pub use eye_http::proxies::{ProxyError, TrustedProxies};
pub use filter::{Cursor, EventFilter, parse_time};
pub use queries::events::{Order, Page, PageRequest};
pub use queue::{QueueProbe, QueueStats};

/// Where the admin publishes, when its process has a queue.
#[derive(Clone, Default)]
pub struct Publishers {
    /// Replayed dead letters go to the events queue, as the api publishes.
    pub dead_letters: Option<Publisher>,
    /// Report jobs.
    pub reports: Option<Publisher>,
}

/// What every handler shares.
pub struct State {
    /// The primary: logins, tokens, applications, dead letters, reports' rows.
    db: DatabaseConnection,
    /// `admin_database_url` when set, else the primary: events, sessions, rejections and
    /// stats.
    reads: DatabaseConnection,
    gate: Arc<TokenGate>,
    keys: TokenKeys,
    throttle: Throttle,
    password_checks: auth::checks::PasswordChecks,
    name_tags: auth::NameTags,
    proxies: TrustedProxies,
    queue: QueueProbe,
    /// Stored events as they arrive, streamed to the Live page and to read tokens.
    live: live::Live,
    search_timeout: std::time::Duration,
    /// Minutes without a stored event after which the dashboard flags an application.
    silent_minutes: i64,
    dashboard: pages::dashboard::Cache,
    /// Where replayed dead letters are published; none when this process has no queue.
    publisher: Option<Publisher>,
    /// Where report jobs are queued; none when this process has no queue.
    reports: Option<Publisher>,
    report_limits: eye_entity::report_jobs::Limits,
    session_hours: i64,
    page_size: u64,
    token_refresh_ms: u64,
    metrics: metrics::AdminMetrics,
    /// The default rate limit, shown beside applications without one of their own.
    rate_limit: eye_core::rate_limit::RateLimit,
    /// Where the Event types page reads schema files: this process's `schema_dir`.
    schema_dir: Option<std::path::PathBuf>,
    /// The last reading of `schema_dir`, compiled again only when it changed.
    schema_types: pages::types::Cache,
    /// Longest category or name a schema file may declare, as the workers allow it.
    schema_label_chars: usize,
}

/// The admin's own settings, checked: callers that start other services first (`eye dev`)
/// call it before starting any, so that a wrong setting stops everything before it listens.
pub fn check_settings(settings: &Settings) -> anyhow::Result<TrustedProxies> {
    if settings.admin_search_timeout_ms == 0 {
        anyhow::bail!(
            "admin_search_timeout_ms is 0: set how many milliseconds a text search may run (e.g. 5000)"
        );
    }
    Ok(TrustedProxies::parse(
        "admin_trusted_proxies",
        &settings.admin_trusted_proxies,
    )?)
}

/// A bound, not yet running admin server.
pub struct Admin {
    server: Server,
    port: u16,
    /// Cancelled on stop: open live streams end, so a graceful stop need not wait for them.
    closing: CancellationToken,
}

/// Stops a running admin.
#[derive(Clone)]
pub struct AdminHandle {
    server: ServerHandle,
    closing: CancellationToken,
}

impl AdminHandle {
    /// Stops the server; gracefully lets requests in flight finish, live streams ending first.
    pub fn stop(&self, graceful: bool) -> impl std::future::Future<Output = ()> + use<> {
        self.closing.cancel();
        self.server.stop(graceful)
    }
}

impl Admin {
    /// Binds `settings.admin_addr` (port 0 picks a free port) and prepares the server.
    /// Without a dead-letter publisher the Dead letters page only lists and discards; without
    /// a reports publisher reports can be read but not asked for. Counts into `metrics` and
    /// serves it on `/metrics`. `reads` is where events, sessions, rejections and stats are
    /// read: a replica's connection, or `db` again.
    pub async fn build(
        settings: &Settings,
        db: DatabaseConnection,
        reads: DatabaseConnection,
        queue: QueueProbe,
        publishers: Publishers,
        metrics: Registry,
    ) -> anyhow::Result<Self> {
        // Settings first: a wrong one stops the admin before it listens.
        let proxies = check_settings(settings)?;
        let name_tags = auth::NameTags::new(settings.jwt_secret()?)
            .map_err(|e| anyhow::anyhow!("jwt_secret cannot key the login log tags: {e}"))?;
        let listener = TcpListener::bind(&settings.admin_addr).map_err(|e| {
            anyhow::anyhow!("failed to bind the admin to {}: {e}", settings.admin_addr)
        })?;
        let port = listener.local_addr()?.port();
        let keys = TokenKeys::new(settings.jwt_secret()?);
        let gate = Arc::new(TokenGate::new(keys.clone(), db.clone()));
        if let Err(e) = gate.refresh().await {
            tracing::warn!(error = %e, "could not load api tokens yet; will keep trying");
        }
        gate.spawn_refresh(settings.token_refresh());
        let closing = CancellationToken::new();
        let state = web::Data::new(State {
            db,
            reads,
            gate,
            keys,
            throttle: Throttle::new(
                settings.admin_login_attempts,
                std::time::Duration::from_secs(settings.admin_login_window_secs),
            ),
            password_checks: auth::checks::PasswordChecks::per_core(PASSWORD_CHECK_WAIT),
            name_tags,
            proxies,
            live: live::Live::new(queue.live_source(), queue.trend_source(), closing.clone()),
            queue,
            search_timeout: settings.admin_search_timeout(),
            silent_minutes: i64::try_from(settings.admin_silent_minutes).unwrap_or(i64::MAX),
            dashboard: pages::dashboard::Cache::default(),
            publisher: publishers.dead_letters,
            reports: publishers.reports,
            report_limits: eye_entity::report_jobs::Limits::of(settings),
            session_hours: settings.admin_session_hours,
            page_size: settings.admin_page_size.clamp(1, 1000),
            token_refresh_ms: settings.token_refresh_ms,
            metrics: metrics::AdminMetrics::new(metrics),
            rate_limit: settings.rate_limit(),
            schema_dir: settings.schema_dir.clone(),
            schema_types: pages::types::Cache::default(),
            schema_label_chars: eye_worker::validation::schema::max_label_chars(settings),
        });
        let openapi = openapi::document();
        let server = actix_web::HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::FormConfig::default().limit(64 * 1024))
                .wrap(security_headers())
                .wrap(from_fn(strict_transport_security))
                .wrap(from_fn(metrics::track))
                .route("/metrics", web::get().to(metrics::render))
                .wrap(from_fn(eye_http::request_id))
                .configure(pages::routes)
                .configure(read_api::routes)
                .service(swagger_ui(openapi.clone()))
        })
        .listen(listener)?
        .disable_signals()
        .run();
        Ok(Self {
            server,
            port,
            closing,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server; gracefully, in-flight requests finish first.
    pub fn handle(&self) -> AdminHandle {
        AdminHandle {
            server: self.server.handle(),
            closing: self.closing.clone(),
        }
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// How long a login waits for its turn to have its password checked before it answers 503.
const PASSWORD_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Browsers that reached the admin over https keep using https for a year. Only then: the
/// header means nothing over plain http, and a client cannot claim https unless it connected
/// through a trusted proxy (`admin_trusted_proxies`) that says so.
async fn strict_transport_security(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let https = request
        .app_data::<web::Data<State>>()
        .is_some_and(|state| state.proxies.origin(request.request()).https);
    let mut response = next.call(request).await?;
    if https {
        response.headers_mut().insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    Ok(response)
}

/// Swagger UI for the read api, its files built in. Its page loads every script and style from
/// files, so the admin's Content-Security-Policy holds; no validator badge is fetched from
/// elsewhere.
fn swagger_ui(openapi: utoipa::openapi::OpenApi) -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/swagger-ui/{_:.*}")
        .url("/openapi.json", openapi)
        .config(utoipa_swagger_ui::Config::from("/openapi.json").validator_url("none"))
}

/// No framing, no inline scripts, no sniffing: the pages show data that strangers sent.
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "same-origin"))
}
