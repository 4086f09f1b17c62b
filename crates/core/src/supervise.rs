//! Background tasks that never go missing silently. A task spawned here that panics is
//! logged at error with its name and either restarted (counted in [`panics`]) or ends the
//! process with a non-zero status, as its [`OnPanic`] says.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinHandle;

/// Exit status of a process ended by a panicked background task (`EX_SOFTWARE`).
pub const PANIC_EXIT_CODE: i32 = 70;
/// Pause before a restart, doubling up to the most, so a task that panics at once does not spin.
const RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

static PANICS: AtomicU64 = AtomicU64::new(0);
/// Panics asked for by tests: how many times each task name was told to panic.
static INJECTED: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

/// What a panic of the task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPanic {
    /// Log, count, and start the task again: for tasks that hold nothing a restart would lose.
    Restart,
    /// Log and end the process with [`PANIC_EXIT_CODE`]: for tasks that own state a restart
    /// cannot rebuild (a queue of waiting requests, messages taken from a queue).
    Exit,
}

/// Spawns `task()` and watches it: a normal end ends the supervision, a panic is handled as
/// `on_panic` says. `task` builds the future again for each restart.
pub fn spawn_supervised<F, Fut>(
    name: &'static str,
    on_panic: OnPanic,
    mut task: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut delay = RESTART_DELAY;
        loop {
            let Err(panic) = AssertUnwindSafe(task()).catch_unwind().await else {
                return;
            };
            let total = PANICS.fetch_add(1, Ordering::Relaxed) + 1;
            let message = panic_message(panic.as_ref());
            match on_panic {
                OnPanic::Restart => {
                    tracing::error!(task = name, panic = %message, panics = total, "background task panicked; restarting it");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RESTART_DELAY);
                }
                OnPanic::Exit => {
                    tracing::error!(task = name, panic = %message, "background task panicked; stopping the process");
                    eprintln!("error: the {name} task panicked ({message}); stopping");
                    std::process::exit(PANIC_EXIT_CODE);
                }
            }
        }
    })
}

/// Spawns a task that runs once and owns what a restart could not rebuild: a panic ends the
/// process ([`OnPanic::Exit`]).
pub fn spawn_critical<Fut>(name: &'static str, task: Fut) -> JoinHandle<()>
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut task = Some(task);
    spawn_supervised(name, OnPanic::Exit, move || {
        let task = task.take();
        async move {
            if let Some(task) = task {
                task.await;
            }
        }
    })
}

/// How many supervised tasks have panicked in this process.
pub fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// A point in a task's loop where a panic would leave nothing half done. Create it when the
/// task starts and [`Checkpoint::pass`] it on each round: it panics there once after a test
/// asked for it with [`inject_panic`], and otherwise does nothing.
pub struct Checkpoint {
    name: &'static str,
    seen: u64,
}

impl Checkpoint {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            seen: injected(name),
        }
    }

    pub fn pass(&mut self) {
        let now = injected(self.name);
        if now != self.seen {
            self.seen = now;
            panic!("panic injected into the {} task", self.name);
        }
    }
}

/// Test hook: every running task named `name` panics once at its next [`Checkpoint`].
#[doc(hidden)]
pub fn inject_panic(name: &'static str) {
    let mut injected = INJECTED.lock().unwrap_or_else(|p| p.into_inner());
    match injected.iter_mut().find(|(n, _)| *n == name) {
        Some((_, generation)) => *generation += 1,
        None => injected.push((name, 1)),
    }
}

fn injected(name: &str) -> u64 {
    INJECTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, generation)| *generation)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_task_that_panics_is_restarted_and_counted() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let before = panics();
        let handle = spawn_supervised("flaky test task", OnPanic::Restart, move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run fails");
                }
            }
        });
        handle.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(panics() > before);
    }

    #[test]
    fn an_injected_panic_fires_once_at_the_named_checkpoint() {
        let mut named = Checkpoint::new("checkpoint test task");
        let mut other = Checkpoint::new("another task");
        named.pass();
        inject_panic("checkpoint test task");
        other.pass();
        let fired = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| named.pass()));
        assert!(fired.is_err());
        named.pass();
        let mut restarted = Checkpoint::new("checkpoint test task");
        restarted.pass();
    }
}
