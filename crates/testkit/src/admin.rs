//! Helpers for the admin panel: a logged-in browser-like client, and data seeded straight
//! into the database so tests choose every timestamp.

use chrono::{DateTime, DurationRound, Utc};
use eye_entity::{rejected_events, tokens};
use eye_worker::store::{self, EventRow, Row};
use reqwest::StatusCode;
use sea_orm::{EntityTrait, Set};
use serde_json::Value;
use uuid::Uuid;

use crate::{APPLICATION, TestApp};

pub const ADMIN_USER: &str = "ops";
pub const ADMIN_PASSWORD: &str = "correct horse battery";

/// An event to store as if a worker had stored it. It counts as received at its own time when
/// that is within the last two days (so the dashboard has a history), otherwise now.
#[derive(Debug, Clone)]
pub struct Seed {
    pub session_id: Uuid,
    pub category: String,
    pub name: String,
    pub data: Value,
    pub timestamp: DateTime<Utc>,
}

impl Seed {
    /// The timestamp is kept to the microsecond, as the worker keeps it.
    pub fn new(
        session_id: Uuid,
        category: &str,
        name: &str,
        data: Value,
        timestamp: DateTime<Utc>,
    ) -> Self {
        let timestamp = timestamp
            .duration_trunc(chrono::Duration::microseconds(1))
            .unwrap_or(timestamp);
        Self {
            session_id,
            category: category.into(),
            name: name.into(),
            data,
            timestamp,
        }
    }
}

/// A client with a cookie jar, like a browser, logged in or not.
pub struct AdminClient {
    pub client: reqwest::Client,
    pub base: String,
    /// The CSRF token of the last page read.
    pub csrf: String,
}

/// The CSRF token a page's forms carry.
pub fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    page.find(marker)
        .map(|at| {
            page[at + marker.len()..]
                .chars()
                .take_while(|c| *c != '"')
                .collect()
        })
        .unwrap_or_default()
}

impl AdminClient {
    pub fn new(base: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            csrf: String::new(),
        }
    }

    /// GET, returning the status and body, and remembering the page's CSRF token.
    pub async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        let csrf = csrf_of(&body);
        if !csrf.is_empty() {
            self.csrf = csrf;
        }
        (status, body)
    }

    /// POSTs a form with the current CSRF token added.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let csrf = self.csrf.clone();
        fields.push(("csrf", &csrf));
        self.client
            .post(format!("{}{path}", self.base))
            .form(&fields)
            .send()
            .await
            .unwrap()
    }

    /// Logs in through the form; returns the response to the form's POST.
    pub async fn login(&mut self, username: &str, password: &str) -> reqwest::Response {
        self.get("/login").await;
        self.post(
            "/login",
            &[
                ("username", username),
                ("password", password),
                ("next", "/"),
            ],
        )
        .await
    }
}

impl TestApp {
    /// A GET of the admin's read api with `token`: the status and the JSON body.
    pub async fn read_api(&self, token: &str, path: &str) -> (reqwest::StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.admin_address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// A client logged in as [`ADMIN_USER`] (created on first use).
    pub async fn admin(&self) -> AdminClient {
        if eye_admin::create_user(&self.db, ADMIN_USER, ADMIN_PASSWORD)
            .await
            .is_err()
        {
            // Created by an earlier call: fine.
        }
        let mut client = AdminClient::new(&self.admin_address);
        let response = client.login(ADMIN_USER, ADMIN_PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "login failed");
        client.get("/").await;
        client
    }

    pub async fn application_id(&self) -> Uuid {
        self.application_id_of(APPLICATION).await
    }

    /// The id of the application with this name, created if it does not exist yet.
    pub async fn application_named(&self, name: &str) -> Uuid {
        tokens::ensure_application(&self.db, name).await.unwrap().id
    }

    /// Stores events of [`APPLICATION`] and their sessions directly; returns their ids in order.
    pub async fn seed(&self, seeds: &[Seed]) -> Vec<Uuid> {
        self.seed_for(APPLICATION, seeds).await
    }

    /// Stores events of the named application (created if new) and their sessions directly;
    /// returns their ids in order.
    pub async fn seed_for(&self, application: &str, seeds: &[Seed]) -> Vec<Uuid> {
        self.seed_in(&self.db, application, seeds).await
    }

    /// Like [`TestApp::seed_for`], but into `db` (a replica standing in, say), which must
    /// already hold the application's row.
    pub async fn seed_in(
        &self,
        db: &sea_orm::DatabaseConnection,
        application: &str,
        seeds: &[Seed],
    ) -> Vec<Uuid> {
        let application_id = self.application_named(application).await;
        let now = Utc::now()
            .duration_trunc(chrono::Duration::microseconds(1))
            .unwrap_or_else(|_| Utc::now());
        let mut ids = Vec::with_capacity(seeds.len());
        let mut rows = Vec::with_capacity(seeds.len());
        for seed in seeds {
            let id = Uuid::now_v7();
            ids.push(id);
            let recent = seed.timestamp <= now && now - seed.timestamp < chrono::Duration::days(2);
            let received = if recent { seed.timestamp } else { now };
            rows.push(Row::Event(EventRow {
                id,
                application_id,
                session_id: seed.session_id,
                category: seed.category.clone(),
                name: seed.name.clone(),
                data: seed.data.to_string(),
                timestamp: seed.timestamp,
                source: None,
                received_at: received,
            }));
        }
        // Through the worker's own write, sessions included.
        for chunk in rows.chunks(500) {
            store::write(db, chunk).await.unwrap();
        }
        ids
    }

    /// Stores a rejected event of [`APPLICATION`] with these `(field, code)` reasons.
    pub async fn seed_rejected(
        &self,
        category: &str,
        payload: Value,
        reasons: &[(&str, &str)],
        at: DateTime<Utc>,
    ) -> Uuid {
        self.seed_rejected_for(APPLICATION, category, payload, reasons, at)
            .await
    }

    /// Stores a rejected event of the named application (created if new).
    pub async fn seed_rejected_for(
        &self,
        application: &str,
        category: &str,
        payload: Value,
        reasons: &[(&str, &str)],
        at: DateTime<Utc>,
    ) -> Uuid {
        let id = Uuid::now_v7();
        let at = at
            .duration_trunc(chrono::Duration::microseconds(1))
            .unwrap_or(at);
        let reasons: Vec<Value> = reasons
            .iter()
            .map(|(field, code)| serde_json::json!({"field": field, "code": code, "message": format!("{field} is {code}")}))
            .collect();
        rejected_events::Entity::insert(rejected_events::ActiveModel {
            id: Set(id),
            application_id: Set(self.application_named(application).await),
            category: Set(category.into()),
            name: Set("pageview".into()),
            payload: Set(payload.to_string()),
            reasons: Set(Value::Array(reasons)),
            received_at: Set(at),
            rejected_at: Set(at),
        })
        .exec(&self.db)
        .await
        .unwrap();
        id
    }
}

/// Report jobs through the read api.
impl TestApp {
    /// Asks for a report: the status and the JSON body.
    pub async fn ask_report(&self, token: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}/api/v1/reports", self.admin_address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// Polls report `id` until it is no longer running.
    pub async fn report_finished(&self, token: &str, id: &str) -> Value {
        for _ in 0..300 {
            let (status, report) = self.read_api(token, &format!("/api/v1/reports/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{report}");
            if report["status"] != "running" {
                return report;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("report {id} still running after 30 s");
    }

    /// Downloads report `id`'s CSV: the status and the text.
    pub async fn report_download(&self, token: &str, id: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(format!("{}/api/v1/reports/{id}/csv", self.admin_address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Asks for a report, waits for it to complete and returns its CSV, checking the row
    /// and byte counts the report states.
    pub async fn report_csv(&self, token: &str, body: Value) -> String {
        let (status, report) = self.ask_report(token, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{report}");
        assert_eq!(report["status"], "running");
        let id = report["id"].as_str().unwrap().to_owned();
        let report = self.report_finished(token, &id).await;
        assert_eq!(report["status"], "complete", "{report}");
        let (status, csv) = self.report_download(token, &id).await;
        assert_eq!(status, StatusCode::OK, "{csv}");
        assert_eq!(report["bytes"], csv.len() as i64);
        assert_eq!(report["rows"], csv.lines().count() as i64 - 1);
        csv
    }
}
