//! The admin panel's pages over a seeded database: login, filters, paging, export, timelines,
//! rejections and tokens (the dashboard has `dashboard.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use eye_core::token::Scope;
use eye_testkit::{
    ADMIN_PASSWORD, ADMIN_USER, AdminClient, Backend, Options, Seed, TestApp, on_both_backends,
};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

on_both_backends!(
    pages_ask_for_a_login_and_come_back_after_it,
    a_login_sets_a_protected_cookie_and_logout_ends_the_session,
    forms_without_the_sessions_csrf_token_are_refused,
    repeated_failed_logins_are_throttled,
    events_filter_by_category_time_session_and_text_and_escape_what_they_show,
    events_page_forward_and_back_without_gaps_or_repeats,
    csv_export_holds_exactly_the_filtered_events,
    csv_export_streams_sets_larger_than_one_database_page,
    a_session_timeline_lists_its_events_in_time_order,
    rejected_events_filter_by_reason_and_show_payload_and_reasons,
    tokens_issued_in_the_panel_work_until_revoked_there,
);

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2021, 1, day, hour, minute, 0).unwrap()
}

/// One session of four events on Jan 1st (one carrying markup), and twenty clicks on Jan 2nd
/// from 00:00 to 19:00, each in its own session.
async fn seed_story(app: &TestApp) -> Uuid {
    let session = Uuid::new_v4();
    let mut seeds = vec![
        Seed::new(
            session,
            "page interaction",
            "pageview",
            json!({"host": "shop.example", "path": "/"}),
            at(1, 9, 0),
        ),
        Seed::new(
            session,
            "page interaction",
            "pageview",
            json!({"host": "shop.example", "path": "/pricing"}),
            at(1, 9, 1),
        ),
        Seed::new(
            session,
            "page interaction",
            "cta click",
            json!({"host": "shop.example", "path": "/pricing", "element": "buy"}),
            at(1, 9, 2),
        ),
        Seed::new(
            session,
            "form interaction",
            "submit",
            json!({"host": "shop.example", "path": "/buy", "form": {"note": "<script>alert(1)</script>"}}),
            at(1, 9, 3),
        ),
    ];
    for hour in 0..20 {
        seeds.push(Seed::new(
            Uuid::new_v4(),
            "page interaction",
            "cta click",
            json!({"host": "blog.example", "path": format!("/p{hour}"), "element": "subscribe"}),
            at(2, hour, 30),
        ));
    }
    app.seed(&seeds).await;
    session
}

fn small_pages(options: Options) -> Options {
    Options {
        settings: |s| {
            s.admin_page_size = 5;
            s.admin_login_attempts = 3;
        },
        ..options
    }
}

/// Text as askama escapes it into HTML.
fn escaped(text: &str) -> String {
    text.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
}

/// The `href`s of links with this id on a page.
fn link(page: &str, id: &str) -> Option<String> {
    let marker = "href=\"";
    let at = page.find(&format!("id=\"{id}\""))?;
    let start = page[..at].rfind(marker)? + marker.len();
    let end = start + page[start..].find('"')?;
    Some(page[start..end].replace("&amp;", "&"))
}

/// Event ids in the order a page lists them.
fn event_ids(page: &str) -> Vec<String> {
    page.split("href=\"/events/")
        .skip(1)
        .map(|rest| rest[37..73].to_owned())
        .collect()
}

async fn pages_ask_for_a_login_and_come_back_after_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    eye_admin::create_user(&app.db, ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    let mut client = AdminClient::new(&app.admin_address);
    let response = client
        .client
        .get(format!("{}/events?category=x", app.admin_address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        "/login?next=%2Fevents%3Fcategory%3Dx"
    );

    let (_, form) = client.get("/login?next=%2Fevents%3Fcategory%3Dx").await;
    assert!(form.contains("value=\"/events?category=x\""), "{form}");
    let response = client
        .post(
            "/login",
            &[
                ("username", ADMIN_USER),
                ("password", ADMIN_PASSWORD),
                ("next", "/events?category=x"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/events?category=x");
    let (status, _) = client.get("/events?category=x").await;
    assert_eq!(status, StatusCode::OK);

    // Somewhere else after login is never followed.
    let mut other = AdminClient::new(&app.admin_address);
    other.get("/login").await;
    let response = other
        .post(
            "/login",
            &[
                ("username", ADMIN_USER),
                ("password", ADMIN_PASSWORD),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(response.headers()["location"], "/");
}

async fn a_login_sets_a_protected_cookie_and_logout_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    eye_admin::create_user(&app.db, ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    let mut client = AdminClient::new(&app.admin_address);
    let wrong = client.login(ADMIN_USER, "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong username or password.")
    );

    let right = client.login(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    let cookie = right
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("eye_session="))
        .expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");

    // Behind a TLS-terminating proxy the cookie is Secure.
    let mut behind_tls = AdminClient::new(&app.admin_address);
    let (_, page) = behind_tls.get("/login").await;
    let response = behind_tls
        .client
        .post(format!("{}/login", app.admin_address))
        .header("X-Forwarded-Proto", "https")
        .form(&[
            ("username", ADMIN_USER),
            ("password", ADMIN_PASSWORD),
            ("csrf", &eye_testkit::csrf_of(&page)),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    let secure = response.headers().get_all("set-cookie").iter().any(|v| {
        let v = v.to_str().unwrap();
        v.starts_with("eye_session=") && v.contains("Secure")
    });
    assert!(secure);

    let (status, dashboard) = client.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(dashboard.contains(ADMIN_USER));
    let out = client.post("/logout", &[]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let (status, _) = client.get("/").await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the session is gone after logout"
    );
}

async fn forms_without_the_sessions_csrf_token_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app
        .token_with(&[Scope::EventsWrite], chrono::Duration::hours(1))
        .await;
    let mut client = app.admin().await;
    client.csrf = "0".repeat(64);
    let response = client
        .post(&format!("/tokens/{}/revoke", token.id), &[])
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (_, page) = client.get("/applications").await;
    assert!(page.contains(&format!("<tr id=\"t-{}\">", token.id)));
    let row = &page[page.find(&format!("t-{}", token.id)).unwrap()..];
    assert!(
        row[..row.find("</tr>").unwrap()].contains("active"),
        "still active"
    );

    // A login form posted from elsewhere has no matching cookie.
    let stranger = reqwest::Client::new();
    let response = stranger
        .post(format!("{}/login", app.admin_address))
        .form(&[
            ("username", ADMIN_USER),
            ("password", ADMIN_PASSWORD),
            ("csrf", "x"),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

async fn repeated_failed_logins_are_throttled(backend: Backend) {
    let app = TestApp::spawn_with(backend, small_pages(Options::default())).await;
    eye_admin::create_user(&app.db, ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    let mut client = AdminClient::new(&app.admin_address);
    for _ in 0..3 {
        assert_eq!(
            client.login(ADMIN_USER, "guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let blocked = client.login(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        blocked
            .text()
            .await
            .unwrap()
            .contains("Too many failed logins")
    );
    eye_admin::create_user(&app.db, "other", ADMIN_PASSWORD)
        .await
        .unwrap();
    let other = client.login("other", ADMIN_PASSWORD).await;
    assert_eq!(
        other.status(),
        StatusCode::SEE_OTHER,
        "another name from the same place still logs in"
    );
}

async fn events_filter_by_category_time_session_and_text_and_escape_what_they_show(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let session = seed_story(&app).await;
    let mut client = app.admin().await;

    let (_, page) = client.get("/events?category=form+interaction").await;
    assert_eq!(event_ids(&page).len(), 1);
    assert!(
        page.contains(&escaped("<script>alert(1)</script>")),
        "escaped: {page}"
    );
    assert!(!page.contains("<script>alert"), "never raw");

    let (_, page) = client
        .get("/events?category=page+interaction&from=2021-01-02T05:00&to=2021-01-02T08:00")
        .await;
    assert_eq!(event_ids(&page).len(), 3, "05:30, 06:30 and 07:30");
    assert!(page.contains("2021-01-02 07:30:00.000000") && !page.contains("2021-01-02 08:30:00"));

    let (_, page) = client.get(&format!("/events?session={session}")).await;
    assert_eq!(event_ids(&page).len(), 4);
    let (_, page) = client.get("/events?q=PRICING").await;
    assert_eq!(event_ids(&page).len(), 2, "text inside data, any case");
    let (_, page) = client.get("/events?q=100%25").await;
    assert!(page.contains("No events match"), "% is matched literally");
    let (_, page) = client.get("/events?application=test-app&name=submit").await;
    assert_eq!(event_ids(&page).len(), 1);
    let (_, page) = client.get("/events?application=nobody").await;
    assert!(page.contains("No events match"));

    let (status, page) = client.get("/events?from=last+tuesday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("`from` is not a time"));
}

async fn events_page_forward_and_back_without_gaps_or_repeats(backend: Backend) {
    let app = TestApp::spawn_with(backend, small_pages(Options::default())).await;
    seed_story(&app).await;
    let mut client = app.admin().await;
    let all: Vec<String> = app
        .stored_events()
        .await
        .iter()
        .rev()
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(all.len(), 24);

    let mut pages = Vec::new();
    let mut next = Some("/events".to_owned());
    while let Some(path) = next {
        let (_, page) = client.get(&path).await;
        pages.push(event_ids(&page));
        next = link(&page, "next-page");
        assert!(pages.len() <= 5, "too many pages");
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [5, 5, 5, 5, 4]
    );
    assert_eq!(pages.concat(), all, "newest first, each event once");

    // And back from the last page to the first.
    let last = last_page_path(&mut client).await;
    let (_, mut page) = client.get(&last).await;
    for expected in pages.iter().rev().skip(1) {
        let prev = link(&page, "prev-page").expect("a previous page");
        page = client.get(&prev).await.1;
        assert_eq!(&event_ids(&page), expected);
    }
    assert!(
        link(&page, "prev-page").is_none(),
        "the first page has no previous one"
    );
}

async fn last_page_path(client: &mut AdminClient) -> String {
    let mut path = "/events".to_owned();
    loop {
        let (_, page) = client.get(&path).await;
        match link(&page, "next-page") {
            Some(next) => path = next,
            None => return path,
        }
    }
}

async fn csv_export_holds_exactly_the_filtered_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    seed_story(&app).await;
    let client = app.admin().await;
    let response = client
        .client
        .get(format!(
            "{}/events.csv?category=page+interaction&name=cta+click",
            app.admin_address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let body = response.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[0],
        "id,timestamp,received_at,application,session_id,category,name,data"
    );
    assert_eq!(lines.len(), 1 + 21);
    assert!(
        lines[1].contains("2021-01-01T09:02:00.000000Z"),
        "oldest first: {}",
        lines[1]
    );
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains(",page interaction,cta click,"))
    );
    assert!(
        // As stored: PostgreSQL renders jsonb with spaces and its own key order.
        lines[1]
            .replace(' ', "")
            .contains("\"\"element\"\":\"\"buy\"\""),
        "data quoted: {}",
        lines[1]
    );
}

async fn csv_export_streams_sets_larger_than_one_database_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let start = at(3, 0, 0);
    let seeds: Vec<Seed> = (0..2_345)
        .map(|i| {
            let time = start + chrono::Duration::milliseconds(i * 250);
            Seed::new(
                Uuid::new_v4(),
                "page interaction",
                "pageview",
                json!({"i": i}),
                time,
            )
        })
        .collect();
    app.seed(&seeds).await;
    let client = app.admin().await;
    let body = client
        .client
        .get(format!("{}/events.csv", app.admin_address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows: Vec<&str> = body.lines().skip(1).collect();
    assert_eq!(rows.len(), 2_345, "every event, across database pages");
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| &r[..36]).collect();
    assert_eq!(ids.len(), 2_345, "none twice");
    assert!(
        rows[0].replace(' ', "").contains("\"{\"\"i\"\":0}\""),
        "{}",
        rows[0]
    );
    assert!(
        rows[2_344]
            .replace(' ', "")
            .contains("\"{\"\"i\"\":2344}\""),
        "{}",
        rows[2_344]
    );
}

async fn a_session_timeline_lists_its_events_in_time_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = seed_story(&app).await;
    let mut client = app.admin().await;
    let app_id = app.application_id().await;
    let (status, page) = client.get(&format!("/sessions/{app_id}/{session}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<dd id=\"session-count\">4</dd>"));
    assert!(
        page.contains("2021-01-01 09:00:00.000000") && page.contains("2021-01-01 09:03:00.000000")
    );
    let order: Vec<usize> = ["/ pageview", "/ cta click", "/ submit"]
        .iter()
        .map(|needle| {
            page.find(needle)
                .unwrap_or_else(|| panic!("{needle} missing"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "time order: {order:?}"
    );
    let (status, _) = client
        .get(&format!("/sessions/{app_id}/{}", Uuid::new_v4()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn rejected_events_filter_by_reason_and_show_payload_and_reasons(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let now = Utc::now();
    let future = app
        .seed_rejected(
            "page interaction",
            json!({"host": "<b>h</b>", "path": "/"}),
            &[("timestamp", "timestamp_in_future")],
            now,
        )
        .await;
    let missing = app
        .seed_rejected(
            "page interaction",
            json!({"host": "h"}),
            &[
                ("data.path", "required"),
                ("timestamp", "timestamp_in_future"),
            ],
            now,
        )
        .await;
    let other = app
        .seed_rejected(
            "form interaction",
            json!({}),
            &[("data.form", "required")],
            now,
        )
        .await;
    let mut client = app.admin().await;

    let (_, page) = client.get("/rejected?reason=timestamp_in_future").await;
    assert!(
        page.contains(&future.to_string()) && page.contains(&missing.to_string()),
        "{page}"
    );
    assert!(!page.contains(&other.to_string()));
    assert!(
        page.contains(&escaped("<b>h</b>")),
        "payload shown, escaped: {page}"
    );
    assert!(
        page.contains("data.path is required"),
        "every reason is listed"
    );
    let (_, page) = client
        .get("/rejected?reason=required&application=test-app")
        .await;
    assert!(page.contains(&missing.to_string()) && page.contains(&other.to_string()));
    assert!(!page.contains(&format!("r-{future}")));
    let old = app
        .seed_rejected(
            "page interaction",
            json!({}),
            &[("timestamp", "timestamp_in_future")],
            now - chrono::Duration::days(3),
        )
        .await;
    let (_, page) = client.get("/rejected?reason=timestamp_in_future").await;
    assert!(page.contains(&format!("r-{old}")));
    let today = now.format("%Y-%m-%d").to_string();
    let (_, page) = client
        .get(&format!(
            "/rejected?reason=timestamp_in_future&from={today}"
        ))
        .await;
    assert!(page.contains(&format!("r-{future}")) && !page.contains(&format!("r-{old}")));
    let (_, page) = client.get(&format!("/rejected?to={today}")).await;
    assert!(page.contains(&format!("r-{old}")) && !page.contains(&format!("r-{future}")));
    let (_, page) = client.get("/rejected?reason=no_such_code").await;
    assert!(page.contains("with these filters"));
}

async fn tokens_issued_in_the_panel_work_until_revoked_there(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.admin().await;
    let created = client
        .post("/applications", &[("name", "crm <team>")])
        .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let (_, page) = client.get("/applications").await;
    assert!(page.contains(&escaped("crm <team>")), "{page}");

    let issued = client
        .post(
            "/tokens",
            &[
                ("application", "crm <team>"),
                ("write", "1"),
                ("read", "1"),
                ("days", "7"),
            ],
        )
        .await;
    assert_eq!(issued.status(), StatusCode::OK);
    let page = issued.text().await.unwrap();
    let start = page.find("id=\"token-jwt\">").unwrap() + "id=\"token-jwt\">".len();
    let jwt = &page[start..start + page[start..].find('<').unwrap()];
    let claims = app.keys.verify(jwt).expect("a valid token");
    assert_eq!(
        claims.scopes,
        [Scope::EventsRead, Scope::EventsWrite].into()
    );
    assert_eq!((claims.exp - claims.iat) / 86_400, 7);

    let (_, list) = client.get("/applications").await;
    assert!(!list.contains(jwt), "the token is shown once, not listed");
    assert!(list.contains(&format!("t-{}", claims.jti)));

    let read = |token: String| {
        let url = format!("{}/api/v1/events", app.admin_address);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(read(jwt.to_owned()).await.status(), StatusCode::OK);
    let revoked = client
        .post(&format!("/tokens/{}/revoke", claims.jti), &[])
        .await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    let (_, list) = client
        .get(revoked.headers()["location"].to_str().unwrap())
        .await;
    assert!(list.contains("is revoked"));

    // Each service learns of the revocation at its next token refresh (200 ms here).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = read(jwt.to_owned()).await;
        if response.status() == StatusCode::UNAUTHORIZED {
            let problem: serde_json::Value = response.json().await.unwrap();
            assert_eq!(problem["code"], "token_revoked");
            break;
        }
        assert!(Instant::now() < deadline, "the revoked token still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let ingest = app
            .post_as(jwt, &eye_testkit::pageview("/", "2021-01-01 00:00:00"))
            .await;
        if ingest.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ingestion api still takes the revoked token: {}",
            ingest.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
