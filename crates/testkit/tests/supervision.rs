//! Background tasks never go missing silently: a panicked token refresh is restarted, so a
//! revocation still takes effect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use eye_core::token::Scope;
use eye_entity::tokens;
use eye_testkit::{Backend, TestApp, on_both_backends, pageview};
use serde_json::Value;

on_both_backends!(a_token_refresh_that_panicked_is_restarted_and_still_sees_revocations);

async fn a_token_refresh_that_panicked_is_restarted_and_still_sees_revocations(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let issued = app
        .token_with(&[Scope::EventsWrite], chrono::Duration::hours(1))
        .await;
    let body: Value = pageview("/", "2021-01-01 00:00:00");
    assert_eq!(app.post_as(&issued.jwt, &body).await.status(), 202);

    let panics = eye_core::supervise::panics();
    eye_core::supervise::inject_panic(eye_auth::REFRESH_TASK);
    let start = Instant::now();
    while eye_core::supervise::panics() == panics {
        assert!(start.elapsed() < Duration::from_secs(5), "no refresh ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert!(tokens::revoke(&app.db, issued.id).await.unwrap());
    let start = Instant::now();
    loop {
        let response = app.post_as(&issued.jwt, &body).await;
        let status = response.status().as_u16();
        if status == 401 {
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["code"], "token_revoked");
            break;
        }
        assert_eq!(status, 202);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a revoked token is still accepted 5 s later: the refresh task is gone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
