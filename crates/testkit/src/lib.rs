//! The test harness: starts the real The Eye on a backend of the test's choosing, with a
//! database and queue names of its own that are removed when the test ends.
//!
//! Every integration test runs on SQLite + the in-process queue. With `EYE_TEST_DATABASE_URL`
//! and `EYE_TEST_AMQP_URL` set it runs on PostgreSQL + RabbitMQ too; `EYE_REQUIRE_SERVICES=1`
//! turns their absence into a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod app;
mod backend;
pub mod browser;
mod front;
pub mod logs;
mod proxy;
mod rabbit_node;
pub mod scale;
pub mod scrape;
pub mod sdk;
mod sse;

pub use admin::{ADMIN_PASSWORD, ADMIN_USER, AdminClient, Seed, csrf_of};
pub use app::{APPLICATION, Options, TestApp, canonical_events, data_of, event, pageview};
pub use backend::Backend;
pub use front::{Front, Passed};
pub use proxy::Proxy;
pub use rabbit_node::RabbitNode;
pub use scrape::Scrape;
pub use sse::Sse;

/// Declares one test per backend for each `async fn name(backend: Backend)` listed.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_in_process() {
                super::$test($crate::Backend::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_rabbitmq() {
                if let Some(backend) = $crate::Backend::services(concat!(module_path!(), "::postgres_rabbitmq")) {
                    super::$test(backend).await
                }
            }
        }
    )*};
}

/// Declares the PostgreSQL + RabbitMQ test for each `async fn name(backend: Backend)` listed:
/// behaviour that only exists there (a broker to lose, a database server to cut off).
#[macro_export]
macro_rules! on_services {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_rabbitmq() {
                if let Some(backend) = $crate::Backend::services(concat!(module_path!(), "::postgres_rabbitmq")) {
                    super::$test(backend).await
                }
            }
        }
    )*};
}
