//! Metrics wiring: which registry each service counts into, and `eye worker`'s own
//! `/metrics` listener (the api and the admin serve theirs on their own port).

use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, web};
use eye_core::Settings;
use eye_core::metrics::Registry;
use eye_worker::metrics::WorkerMetrics;

/// The registries of the services one process runs.
#[derive(Clone)]
pub struct Registries {
    pub api: Registry,
    pub admin: Registry,
    pub worker: WorkerMetrics,
    worker_registry: Registry,
    /// Whether the workers serve their registry on `worker_metrics_addr`.
    serve_worker: bool,
}

impl Registries {
    /// One registry per service, the workers' served on `worker_metrics_addr`: each scrape
    /// shows one service, as when they run as separate processes.
    pub fn separate(settings: &Settings) -> Self {
        let worker_registry = registry(settings);
        Self {
            api: registry(settings),
            admin: registry(settings),
            worker: WorkerMetrics::new(worker_registry.clone()),
            worker_registry,
            serve_worker: true,
        }
    }

    /// One registry for the whole process (`eye dev`): the api's and the admin's `/metrics`
    /// show every service.
    pub fn shared(settings: &Settings) -> Self {
        let shared = registry(settings);
        Self {
            api: shared.clone(),
            admin: shared.clone(),
            worker: WorkerMetrics::new(shared.clone()),
            worker_registry: shared,
            serve_worker: false,
        }
    }

    /// Starts the workers' listener if they have one; returns it and its port.
    pub fn serve_worker(&self, settings: &Settings) -> anyhow::Result<Option<WorkerListener>> {
        if !self.serve_worker || !self.worker_registry.is_enabled() {
            return Ok(None);
        }
        WorkerListener::start(&settings.worker_metrics_addr, self.worker_registry.clone()).map(Some)
    }
}

/// A registry, or a disabled one when `metrics_enabled` is false.
pub fn registry(settings: &Settings) -> Registry {
    if settings.metrics_enabled {
        Registry::enabled()
    } else {
        Registry::disabled()
    }
}

/// `eye worker`'s `/metrics` (and `/healthz`) on a port of its own.
pub struct WorkerListener {
    pub port: u16,
    handle: ServerHandle,
}

impl WorkerListener {
    pub fn start(addr: &str, registry: Registry) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            anyhow::anyhow!(
                "failed to bind the worker's metrics to {addr} (worker_metrics_addr): {e}"
            )
        })?;
        let port = listener.local_addr()?.port();
        let server: Server = actix_web::HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(registry.clone()))
                .route("/metrics", web::get().to(render))
                .route("/healthz", web::get().to(HttpResponse::Ok))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self { port, handle })
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

async fn render(registry: web::Data<Registry>) -> HttpResponse {
    eye_api::metrics::exposition(registry.render())
}
