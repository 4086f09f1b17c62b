//! What the command tests share: a database of their own, and the admin's login form.
// Each test binary uses a part of it.
#![allow(dead_code)]

use sea_orm::ConnectionTrait;

/// A database for one test: a SQLite file, or a fresh PostgreSQL database when
/// `EYE_TEST_DATABASE_URL` is set (dropped at the end).
pub struct TestDb {
    pub url: String,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("eye.db").display());
        Self {
            url,
            _dir: dir,
            postgres: None,
        }
    }

    pub async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("EYE_TEST_DATABASE_URL") else {
            assert!(
                std::env::var("EYE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "EYE_REQUIRE_SERVICES=1 but EYE_TEST_DATABASE_URL is not set"
            );
            eprintln!("skipping the PostgreSQL variant: EYE_TEST_DATABASE_URL is not set");
            return None;
        };
        let name = format!("eye_test_{}", uuid::Uuid::new_v4().simple());
        let admin = eye_cli::stack::connect(&admin_url).await.unwrap();
        admin
            .execute_unprepared(&format!(r#"CREATE DATABASE "{name}""#))
            .await
            .unwrap();
        let mut url = reqwest::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Some(Self {
            url: url.to_string(),
            _dir: tempfile::tempdir().unwrap(),
            postgres: Some((admin_url, name)),
        })
    }

    pub async fn drop(self) {
        if let Some((admin_url, name)) = &self.postgres {
            let admin = eye_cli::stack::connect(admin_url).await.unwrap();
            admin
                .execute_unprepared(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                .await
                .unwrap();
        }
    }
}

/// Fills and posts the admin's login form at `admin` with `fields` and its CSRF token; the
/// client keeps the session cookie.
pub async fn admin_login(
    client: &reqwest::Client,
    admin: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let form = client
        .get(format!("{admin}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = form.find(marker).unwrap() + marker.len();
    let mut fields = fields.to_vec();
    fields.push(("csrf", &form[start..start + 64]));
    client
        .post(format!("{admin}/login"))
        .form(&fields)
        .send()
        .await
        .unwrap()
}
