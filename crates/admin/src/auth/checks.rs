//! Password checks at once. Each argon2 check takes a core for tens of milliseconds and 19 MiB
//! of memory, so a burst of logins could starve the pages and the process's memory: at most one
//! check per core runs, the rest wait their turn, and a login that would wait longer than
//! `wait` is answered 503 without its password being checked.

use std::time::Duration;

use eye_entity::admin_users;
use tokio::sync::Semaphore;

use super::users;

#[derive(Debug, thiserror::Error)]
#[error("too many logins are being checked at once; try again in a moment")]
pub struct Busy;

pub struct PasswordChecks {
    permits: Semaphore,
    wait: Duration,
}

impl PasswordChecks {
    /// One check per available core.
    pub fn per_core(wait: Duration) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(cores, wait)
    }

    pub fn new(at_once: usize, wait: Duration) -> Self {
        Self {
            permits: Semaphore::new(at_once.max(1)),
            wait,
        }
    }

    /// Runs `work` off the async executor once a check may start.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let _permit = tokio::time::timeout(self.wait, self.permits.acquire())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        tokio::task::spawn_blocking(work).await.map_err(|_| Busy)
    }

    /// Whether `password` is `user`'s (always false without a user, at the same cost).
    pub async fn verify(
        &self,
        user: Option<admin_users::Model>,
        password: String,
    ) -> Result<bool, Busy> {
        self.run(move || users::verify(user.as_ref(), &password))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn no_more_checks_run_at_once_than_allowed() {
        let checks = Arc::new(PasswordChecks::new(2, Duration::from_secs(10)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (checks, running, most) = (checks.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    checks
                        .run(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_ok(), "each waited its turn");
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_check_that_would_wait_too_long_is_refused() {
        let checks = Arc::new(PasswordChecks::new(1, Duration::from_millis(50)));
        let slow = {
            let checks = checks.clone();
            tokio::spawn(async move {
                checks
                    .run(|| std::thread::sleep(Duration::from_millis(500)))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(checks.run(|| ()).await.is_err());
        assert!(slow.await.unwrap().is_ok());
        assert!(checks.run(|| ()).await.is_ok(), "free again");
    }
}
