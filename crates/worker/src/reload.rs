//! The validators in force, shared by the workers of a process and swapped whole when the
//! schema directory is reloaded (on SIGHUP, or when `eye schemas reload` adds a row to
//! `schema_reloads`; docs/ARCHITECTURE.md, decision 42).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use eye_core::Settings;
use eye_entity::schema_reloads;
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::validation::Registry;
use crate::validation::schema::SchemaErrors;

/// A handle on the registry in force. Cloning it shares it; a batch takes the current
/// registry once ([`Validators::current`]) and keeps it to its end, so a reload never waits
/// for a batch nor a batch for a reload.
#[derive(Clone)]
pub struct Validators {
    current: Arc<ArcSwap<Registry>>,
    settings: Arc<Settings>,
}

impl Validators {
    /// The built-in types and those of `schema_dir`; a broken file fails, naming it.
    pub fn load(settings: &Settings) -> Result<Self, SchemaErrors> {
        Ok(Self::of(Registry::load(settings)?, settings))
    }

    /// Only the built-in types, whatever `schema_dir` says.
    pub fn builtin(settings: &Settings) -> Self {
        Self::of(Registry::builtin(settings), settings)
    }

    fn of(registry: Registry, settings: &Settings) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(registry)),
            settings: Arc::new(settings.clone()),
        }
    }

    pub fn current(&self) -> Arc<Registry> {
        self.current.load_full()
    }

    /// Reads and compiles the directory again and puts it in force; on any error the set in
    /// force stays and the error names each file at fault. Blocking file work: call it from
    /// a blocking thread ([`Validators::reload_logged`] does).
    pub fn reload(&self) -> Result<usize, SchemaErrors> {
        let registry = Registry::load(&self.settings)?;
        let types = registry.types().len();
        self.current.store(Arc::new(registry));
        Ok(types)
    }

    /// [`Validators::reload`] on a blocking thread, with a log line for the outcome (one per
    /// broken file).
    pub async fn reload_logged(&self, cause: &'static str) -> Result<usize, SchemaErrors> {
        let validators = self.clone();
        let result = tokio::task::spawn_blocking(move || validators.reload())
            .await
            .unwrap_or_else(|e| {
                Err(SchemaErrors(vec![crate::validation::schema::SchemaError {
                    file: Default::default(),
                    message: format!("the reload did not finish: {e}"),
                }]))
            });
        match &result {
            Ok(types) => tracing::info!(cause, types, "event types reloaded"),
            Err(errors) => {
                for error in &errors.0 {
                    tracing::error!(cause, file = %error.file.display(), error = %error.message,
                        "schema file refused on reload; the event types in force stay");
                }
            }
        }
        result
    }

    /// The latest reload request, to read BEFORE the directory is loaded and hand to
    /// [`Validators::watch`]: a request recorded while the directory loads is then newer than
    /// it, and reloaded. `None` when it cannot be read (the watch then reloads once at its
    /// first successful read, since a request may have been missed).
    pub async fn latest_reload(db: &DatabaseConnection) -> Option<i64> {
        schema_reloads::latest(db)
            .await
            .inspect_err(|e| {
                tracing::warn!(error = %e, "schema reloads could not be read at start;                     the event types are reloaded once they can be")
            })
            .ok()
    }

    /// Reloads on SIGHUP and whenever `schema_reloads` has a newer row than `seen` (read by
    /// [`Validators::latest_reload`] before the directory was loaded), checked every `every`,
    /// until `stop`. A database that cannot answer is retried at the next tick, with a warning
    /// once it has failed [`FAILURES_BEFORE_WARNING`] times in a row. Without `schema_dir`
    /// there is nothing to reload: no watch is started and SIGHUP keeps its usual effect
    /// (closing the terminal of `eye dev` ends it).
    pub fn watch(
        &self,
        db: DatabaseConnection,
        every: Duration,
        stop: CancellationToken,
        seen: Option<i64>,
    ) -> Option<JoinHandle<()>> {
        self.settings.schema_dir.as_ref()?;
        let validators = self.clone();
        // Caught from now on, not from when the task first runs: an early SIGHUP would end
        // the process.
        let mut hangup = hangups();
        Some(tokio::spawn(async move {
            let mut polls = Polls::new(seen);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    Some(()) = next_hangup(&mut hangup) => {
                        let _ = validators.reload_logged("SIGHUP").await;
                    }
                    _ = tick.tick() => {
                        let read = schema_reloads::latest(&db).await;
                        if let Some(cause) = polls.read(read) {
                            let _ = validators.reload_logged(cause).await;
                        }
                    }
                }
            }
        }))
    }
}

/// Failed reads of `schema_reloads` in a row after which a warning is logged (once).
pub const FAILURES_BEFORE_WARNING: u32 = 3;

/// What the polls of `schema_reloads` have seen.
struct Polls {
    /// The latest request seen; `None` until one read succeeded.
    seen: Option<i64>,
    /// Failed reads in a row.
    failures: u32,
}

impl Polls {
    fn new(seen: Option<i64>) -> Self {
        Self { seen, failures: 0 }
    }

    /// Counts a failed read; whether it is the one to warn about.
    fn failed(&mut self) -> bool {
        self.failures = self.failures.saturating_add(1);
        self.failures == FAILURES_BEFORE_WARNING
    }

    /// Takes one read; the cause of a reload when one is due.
    fn read(&mut self, read: Result<i64, sea_orm::DbErr>) -> Option<&'static str> {
        match read {
            Ok(latest) => {
                if self.failures >= FAILURES_BEFORE_WARNING {
                    tracing::info!(failures = self.failures, "schema reloads can be read again");
                }
                self.failures = 0;
                match self.seen.replace(latest) {
                    Some(seen) if latest > seen => Some("eye schemas reload"),
                    Some(_) => None,
                    // The first read at start failed: a request may have come meanwhile.
                    None => Some("schema reloads readable again after a failed start"),
                }
            }
            Err(e) => {
                if self.failed() {
                    tracing::warn!(error = %e, failures = self.failures,
                        "schema reloads cannot be read; `eye schemas reload` is not seen until \
                         they can (SIGHUP still reloads)");
                } else {
                    tracing::debug!(error = %e, "schema reloads could not be read; trying again");
                }
                None
            }
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(
            |e| tracing::warn!(error = %e, "SIGHUP cannot be caught; use `eye schemas reload`"),
        )
        .ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

/// The next SIGHUP; never, where none can be caught.
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        return signal.recv().await;
    }
    let _ = hangups;
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_swaps_the_registry_and_a_broken_directory_leaves_it_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            schema_dir: Some(dir.path().to_owned()),
            ..Settings::default()
        };
        let validators = Validators::load(&settings).unwrap();
        let held = validators.current();
        let builtin = held.types().len();
        std::fs::write(
            dir.path().join("play.json"),
            r#"{"x-eye-category": "video", "x-eye-name": "play"}"#,
        )
        .unwrap();
        assert_eq!(validators.reload().unwrap(), builtin + 1);
        assert_eq!(validators.current().types().len(), builtin + 1);
        // A batch that took the registry before keeps it to its end.
        assert_eq!(held.types().len(), builtin);

        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        let errors = validators.reload().unwrap_err();
        assert_eq!(errors.0[0].file, dir.path().join("broken.json"));
        assert_eq!(validators.current().types().len(), builtin + 1);
    }

    fn failed() -> Result<i64, sea_orm::DbErr> {
        Err(sea_orm::DbErr::Custom("down".into()))
    }

    #[test]
    fn a_request_newer_than_the_one_read_before_loading_reloads() {
        let mut polls = Polls::new(Some(4));
        assert_eq!(polls.read(Ok(4)), None);
        assert_eq!(polls.read(Ok(5)), Some("eye schemas reload"));
        assert_eq!(polls.read(Ok(5)), None);
        // A failed read changes nothing; the request is seen once the reads succeed.
        assert_eq!(polls.read(failed()), None);
        assert_eq!(polls.read(Ok(6)), Some("eye schemas reload"));
    }

    #[test]
    fn a_failed_first_read_reloads_once_at_the_first_that_succeeds() {
        let mut polls = Polls::new(None);
        assert_eq!(polls.read(failed()), None);
        assert!(polls.read(Ok(9)).is_some());
        // Old rows are not each taken for new.
        assert_eq!(polls.read(Ok(9)), None);
    }

    #[test]
    fn reads_that_keep_failing_warn_once() {
        let mut polls = Polls::new(Some(1));
        let warnings = (0..10).filter(|_| polls.failed()).count();
        assert_eq!(warnings, 1);
        assert_eq!(polls.read(Ok(1)), None);
        let warnings = (0..10).filter(|_| polls.failed()).count();
        assert_eq!(warnings, 1, "warned again after the reads came back");
    }

    #[test]
    fn without_a_schema_directory_nothing_is_watched() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let db = sea_orm::DatabaseConnection::default();
            let validators = Validators::builtin(&Settings::default());
            let stop = CancellationToken::new();
            assert!(
                validators
                    .watch(db, Duration::from_secs(1), stop, Some(0))
                    .is_none()
            );
        });
    }
}
