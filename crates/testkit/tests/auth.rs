//! Every way a request can fail authentication or authorization.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chrono::Utc;
use eye_core::token::{Claims, Scope, TokenKeys};
use eye_entity::{api_tokens, tokens};
use eye_testkit::{Backend, Options, TestApp, on_both_backends, pageview};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde_json::Value;
use uuid::Uuid;

on_both_backends!(
    requests_without_a_valid_token_answer_401_with_a_reason,
    a_token_without_the_write_scope_answers_403,
    a_revoked_token_is_refused_within_seconds,
    a_disabled_application_is_refused_within_seconds_and_can_be_enabled_again,
    each_token_records_when_it_was_last_used,
    a_narrowed_token_loses_the_scope_within_the_refresh_period,
    a_token_whose_claims_disagree_with_its_row_is_refused,
    a_token_expired_in_its_row_is_refused_within_the_refresh_period,
    a_token_accepted_before_its_expiry_is_refused_after_it,
);

fn body() -> Value {
    pageview("/", "2021-01-01 00:00:00")
}

async fn code_for(app: &TestApp, token: Option<&str>, header: Option<&str>) -> (u16, String) {
    let mut request = app
        .client
        .post(format!("{}/v1/events", app.address))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&body()).unwrap());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(header) = header {
        request = request.header("Authorization", header);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let problem: Value = response.json().await.unwrap();
    (
        status,
        problem["code"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn requests_without_a_valid_token_answer_401_with_a_reason(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let claims = app.keys.verify(&app.token).unwrap();
    let now = Utc::now();
    let sign = |keys: &TokenKeys, claims: &Claims| keys.sign(claims).unwrap();

    let foreign = sign(
        &TokenKeys::new(b"someone-elses-secret-someone-else"),
        &claims,
    );
    let expired = sign(
        &app.keys,
        &Claims {
            exp: (now - chrono::Duration::minutes(1)).timestamp(),
            ..claims.clone()
        },
    );
    let unknown = sign(
        &app.keys,
        &Claims {
            jti: Uuid::new_v4(),
            ..claims.clone()
        },
    );
    let other_app = sign(
        &app.keys,
        &Claims {
            sub: Uuid::new_v4(),
            ..claims.clone()
        },
    );
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims,
        &EncodingKey::from_secret(b"test-secret-test-secret-test-secret"),
    )
    .unwrap();
    let unsigned = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&serde_json::to_string(&claims).unwrap())
    );

    let cases: [(&str, Option<&str>, Option<&str>, &str); 9] = [
        ("no header", None, None, "missing_token"),
        (
            "wrong scheme",
            None,
            Some("Basic dXNlcjpwYXNz"),
            "missing_token",
        ),
        ("garbage", Some("not-a-jwt"), None, "invalid_token"),
        (
            "signed with another key",
            Some(&foreign),
            None,
            "invalid_token",
        ),
        (
            "HS512 instead of the pinned HS256",
            Some(&hs512),
            None,
            "invalid_token",
        ),
        ("alg none", Some(&unsigned), None, "invalid_token"),
        ("expired", Some(&expired), None, "token_expired"),
        ("never issued", Some(&unknown), None, "unknown_token"),
        (
            "claims another application",
            Some(&other_app),
            None,
            "invalid_token",
        ),
    ];
    for (case, token, header, code) in cases {
        assert_eq!(
            code_for(&app, token, header).await,
            (401, code.to_owned()),
            "{case}"
        );
    }
    assert_eq!(
        app.post(&body()).await.status(),
        202,
        "the real token still works"
    );
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

async fn a_token_without_the_write_scope_answers_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let reader = app
        .token_with(&[Scope::EventsRead], chrono::Duration::hours(1))
        .await;
    assert_eq!(
        code_for(&app, Some(&reader.jwt), None).await,
        (403, "missing_scope".to_owned())
    );
}

/// Polls until the api refuses `token` with `code`; returns how long that took.
async fn refused_after(app: &TestApp, token: &str, code: &str) -> Duration {
    let start = Instant::now();
    loop {
        let (status, found) = code_for(app, Some(token), None).await;
        if status == 401 && found == code {
            return start.elapsed();
        }
        assert_eq!(status, 202, "unexpected answer {found}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still accepted after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_revoked_token_is_refused_within_seconds(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let issued = app
        .token_with(&[Scope::EventsWrite], chrono::Duration::hours(1))
        .await;
    assert_eq!(
        app.post_as(&issued.jwt, &body()).await.status(),
        202,
        "a new token works at once"
    );
    assert!(tokens::revoke(&app.db, issued.id).await.unwrap());
    refused_after(&app, &issued.jwt, "token_revoked").await;
    assert_eq!(
        app.post(&body()).await.status(),
        202,
        "other tokens keep working"
    );
}

async fn a_disabled_application_is_refused_within_seconds_and_can_be_enabled_again(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    tokens::set_application_disabled(&app.db, eye_testkit::APPLICATION, true)
        .await
        .unwrap();
    refused_after(&app, &app.token, "application_disabled").await;
    tokens::set_application_disabled(&app.db, eye_testkit::APPLICATION, false)
        .await
        .unwrap();
    let start = Instant::now();
    while app.post(&body()).await.status() != 202 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still refused 5 s after enabling"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn each_token_records_when_it_was_last_used(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let used = app
        .token_with(&[Scope::EventsWrite], chrono::Duration::hours(1))
        .await;
    let unused = app
        .token_with(&[Scope::EventsWrite], chrono::Duration::hours(1))
        .await;
    let before = Utc::now() - chrono::Duration::seconds(1);
    assert_eq!(app.post_as(&used.jwt, &body()).await.status(), 202);

    let db = &app.db;
    let last_used = |id| async move {
        api_tokens::Entity::find_by_id(id)
            .one(db)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
    };
    let start = Instant::now();
    let at = loop {
        if let Some(at) = last_used(used.id).await {
            break at;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "last use not recorded after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(at >= before && at <= Utc::now(), "{at}");
    assert_eq!(last_used(unused.id).await, None);
}

/// The status and problem code of a read api request with `token`.
async fn read_with(app: &TestApp, token: &str) -> (u16, String) {
    let response = app
        .client
        .get(format!("{}/api/v1/events", app.admin_address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

/// Sets a token's row as if an operator had changed it in the database.
async fn change_row(app: &TestApp, id: Uuid, change: impl FnOnce(&mut api_tokens::ActiveModel)) {
    let row = api_tokens::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut row: api_tokens::ActiveModel = row.into();
    change(&mut row);
    row.update(&app.db).await.unwrap();
}

/// Polls `answer` until it gives `want`; returns how long that took.
async fn until<F, Fut>(want: (u16, &str), mut answer: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (u16, String)>,
{
    let start = Instant::now();
    loop {
        let (status, code) = answer().await;
        if (status, code.as_str()) == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still {status} {code} after 5 s, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const REFRESH_MS: u64 = 300;

async fn a_narrowed_token_loses_the_scope_within_the_refresh_period(backend: Backend) {
    let options = Options {
        settings: |s| s.token_refresh_ms = REFRESH_MS,
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let issued = app
        .token_with(
            &[Scope::EventsWrite, Scope::EventsRead],
            chrono::Duration::hours(1),
        )
        .await;
    assert_eq!(read_with(&app, &issued.jwt).await.0, 200);
    assert_eq!(app.post_as(&issued.jwt, &body()).await.status(), 202);

    change_row(&app, issued.id, |row| {
        row.scopes = Set("events:write".into())
    })
    .await;
    let took = until((403, "missing_scope"), || read_with(&app, &issued.jwt)).await;
    // One refresh period, plus the slack of a reload in flight and of polling.
    assert!(
        took < Duration::from_millis(3 * REFRESH_MS),
        "the read scope lasted {took:?}"
    );
    assert_eq!(
        app.post_as(&issued.jwt, &body()).await.status(),
        202,
        "the scope the row kept still works"
    );

    change_row(&app, issued.id, |row| row.scopes = Set(String::new())).await;
    let took = until((403, "missing_scope"), || {
        code_for(&app, Some(&issued.jwt), None)
    })
    .await;
    assert!(
        took < Duration::from_millis(3 * REFRESH_MS),
        "the write scope lasted {took:?}"
    );
}

async fn a_token_whose_claims_disagree_with_its_row_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other_app = app.application_named("other-app").await;
    let writer = app.keys.verify(&app.token).unwrap();
    let forge = |change: fn(&mut Claims, Uuid)| {
        let mut claims = writer.clone();
        change(&mut claims, other_app);
        app.keys.sign(&claims).unwrap()
    };
    let refused = [
        (
            "read instead of the row's write",
            forge(|c, _| c.scopes = [Scope::EventsRead].into()),
        ),
        (
            "another existing application",
            forge(|c, other| c.sub = other),
        ),
        ("an expiry before the row's", forge(|c, _| c.exp -= 60)),
    ];
    for (case, token) in &refused {
        assert_eq!(
            code_for(&app, Some(token), None).await,
            (401, "invalid_token".to_owned()),
            "write: {case}"
        );
        assert_eq!(
            read_with(&app, token).await,
            (401, "invalid_token".to_owned()),
            "read: {case}"
        );
    }

    // Claims that add scopes to the row's get only the row's.
    let broader = forge(|c, _| {
        c.scopes = [Scope::EventsWrite, Scope::EventsRead, Scope::EventsReadAll].into()
    });
    assert_eq!(
        read_with(&app, &broader).await,
        (403, "missing_scope".to_owned())
    );
    assert_eq!(app.post_as(&broader, &body()).await.status(), 202);
}

async fn a_token_expired_in_its_row_is_refused_within_the_refresh_period(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let issued = app
        .token_with(&[Scope::EventsWrite], chrono::Duration::hours(1))
        .await;
    assert_eq!(app.post_as(&issued.jwt, &body()).await.status(), 202);
    change_row(&app, issued.id, |row| {
        row.expires_at = Set(Utc::now() - chrono::Duration::seconds(1))
    })
    .await;
    refused_after(&app, &issued.jwt, "token_expired").await;
}

/// The api remembers a token it verified, but not past the token's own expiry.
async fn a_token_accepted_before_its_expiry_is_refused_after_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let issued = app
        .token_with(&[Scope::EventsWrite], chrono::Duration::seconds(2))
        .await;
    let exp = app.keys.verify(&issued.jwt).unwrap().exp;
    for _ in 0..3 {
        assert_eq!(app.post_as(&issued.jwt, &body()).await.status(), 202);
    }
    while Utc::now().timestamp() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        code_for(&app, Some(&issued.jwt), None).await,
        (401, "token_expired".to_owned())
    );
}
