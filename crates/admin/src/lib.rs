//! The read side: server-rendered pages for people and a JSON read api for programs, over the
//! database the workers fill. Everything shown is escaped by askama; queries bind every value.

mod auth;
mod chart;
mod csv;
mod error;
mod filter;
mod pages;
mod queries;
mod queue;
mod read_api;
mod views;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, web};
use eye_api::TokenGate;
use eye_core::Settings;
use eye_core::queue::Publisher;
use eye_core::token::TokenKeys;
use sea_orm::DatabaseConnection;

pub use auth::throttle::Throttle;
pub use auth::users::{UserError, create_user};
pub use filter::{Cursor, EventFilter};
pub use queries::events::{Order, Page, PageRequest};
pub use queue::{QueueProbe, QueueStats};

/// What every handler shares.
pub struct State {
    db: DatabaseConnection,
    gate: Arc<TokenGate>,
    keys: TokenKeys,
    throttle: Throttle,
    queue: QueueProbe,
    /// Where replayed dead letters are published; none when this process has no queue.
    publisher: Option<Publisher>,
    session_hours: i64,
    page_size: u64,
    token_refresh_ms: u64,
}

/// A bound, not yet running admin server.
pub struct Admin {
    server: Server,
    port: u16,
}

impl Admin {
    /// Binds `settings.admin_addr` (port 0 picks a free port) and prepares the server.
    /// `publisher` replays dead letters; without one the Dead letters page only lists and
    /// discards.
    pub async fn build(
        settings: &Settings,
        db: DatabaseConnection,
        queue: QueueProbe,
        publisher: Option<Publisher>,
    ) -> anyhow::Result<Self> {
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
        let state = web::Data::new(State {
            db,
            gate,
            keys,
            throttle: Throttle::new(
                settings.admin_login_attempts,
                std::time::Duration::from_secs(settings.admin_login_window_secs),
            ),
            queue,
            publisher,
            session_hours: settings.admin_session_hours,
            page_size: settings.admin_page_size.clamp(1, 1000),
            token_refresh_ms: settings.token_refresh_ms,
        });
        let server = actix_web::HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::FormConfig::default().limit(64 * 1024))
                .wrap(security_headers())
                .configure(pages::routes)
                .configure(read_api::routes)
        })
        .listen(listener)?
        .disable_signals()
        .run();
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
