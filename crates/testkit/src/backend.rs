use std::io::Write;
use std::sync::Once;

/// Which database and queue a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file in a temporary directory and the in-process queue.
    Embedded,
    /// PostgreSQL and RabbitMQ; each test gets a database and a queue prefix of its own.
    Services {
        database_url: String,
        amqp_url: String,
    },
}

impl Backend {
    /// The services from the environment, or `None` (saying why) when they are not set.
    /// Panics instead when `EYE_REQUIRE_SERVICES=1`.
    pub fn services(test: &str) -> Option<Self> {
        let database_url = std::env::var("EYE_TEST_DATABASE_URL")
            .ok()
            .filter(|v| !v.is_empty());
        let amqp_url = std::env::var("EYE_TEST_AMQP_URL")
            .ok()
            .filter(|v| !v.is_empty());
        match (database_url, amqp_url) {
            (Some(database_url), Some(amqp_url)) => Some(Backend::Services {
                database_url,
                amqp_url,
            }),
            _ if std::env::var("EYE_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => panic!(
                "{test}: EYE_REQUIRE_SERVICES=1 but EYE_TEST_DATABASE_URL and EYE_TEST_AMQP_URL are not both set"
            ),
            _ => {
                static SAID: Once = Once::new();
                SAID.call_once(|| {
                    // Written past the test harness's capture so that the skip is seen.
                    let _ = writeln!(
                        std::io::stderr(),
                        "note: skipping the PostgreSQL + RabbitMQ variants of these tests (e.g. {test}): \
                         set EYE_TEST_DATABASE_URL and EYE_TEST_AMQP_URL to run them"
                    );
                });
                None
            }
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Backend::Embedded)
    }
}
