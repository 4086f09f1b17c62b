//! The test binary's one tracing subscriber: warnings (everything with `EYE_TEST_LOG`) go to
//! the test's output, shown only when it fails; a test that checks what is logged turns on
//! [`capture`] and reads every line from then on with [`captured`].

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

use tracing::subscriber::Interest;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, dynamic_filter_fn};
use tracing_subscriber::prelude::*;

static CAPTURING: AtomicBool = AtomicBool::new(false);
static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Installs the subscriber once per test binary.
pub(crate) fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let shown = match std::env::var("EYE_TEST_LOG") {
            Ok(_) => "info,eye=debug",
            Err(_) => "warn",
        };
        let shown = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_test_writer()
            .with_filter(EnvFilter::new(shown));
        let captured = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(|| Captured)
            .with_filter(LevelFilter::DEBUG)
            // Asked at every event, never cached per call site: capturing starts mid-run.
            .with_filter(
                dynamic_filter_fn(|_, _| CAPTURING.load(Ordering::Relaxed))
                    .with_callsite_filter(|_| Interest::sometimes()),
            );
        let _ = tracing_subscriber::registry()
            .with(shown)
            .with(captured)
            .try_init();
    });
}

/// Starts keeping every line this test binary logs at debug level or above.
pub fn capture() {
    init();
    CAPTURING.store(true, Ordering::Relaxed);
}

/// Every line kept since [`capture`] was first called.
pub fn captured() -> String {
    String::from_utf8_lossy(&CAPTURED.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

struct Captured;

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
