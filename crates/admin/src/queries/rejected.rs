//! Rejected events, by application and by the code of any of their reasons.

use chrono::{DateTime, Utc};
use eye_entity::rejected_events;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};

use super::keyset::{self, Page, PageRequest};
use crate::filter::{Cursor, FilterError, parse_time};

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct RejectedQuery {
    /// An application's name.
    pub application: String,
    /// A reason code, e.g. `timestamp_in_future`.
    pub reason: String,
    /// Rejected at or after this time (UTC unless it says otherwise).
    pub from: String,
    /// Rejected before this time.
    pub to: String,
    /// `next_cursor` of the previous page, for the next one (also accepted as `cursor`).
    #[serde(alias = "cursor")]
    pub after: String,
    /// `prev_cursor` of a page, for the page before it.
    pub before: String,
    /// Rows per page, from 1 to `admin_page_size`.
    pub limit: String,
}

/// What to match; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct RejectedFilter {
    pub application: Option<String>,
    pub reason: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

fn text(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl RejectedQuery {
    pub fn filter(&self) -> Result<RejectedFilter, FilterError> {
        Ok(RejectedFilter {
            application: text(&self.application),
            reason: text(&self.reason),
            from: parse_time("from", &self.from)?,
            to: parse_time("to", &self.to)?,
        })
    }

    pub fn first_page(&self) -> Self {
        Self {
            after: String::new(),
            before: String::new(),
            ..self.clone()
        }
    }
}

/// One reason, as the worker stores it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Reason {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

pub fn reasons(row: &rejected_events::Model) -> Vec<Reason> {
    serde_json::from_value(row.reasons.clone()).unwrap_or_default()
}

pub fn cursor(row: &rejected_events::Model) -> Cursor {
    Cursor {
        time: row.rejected_at,
        id: row.id,
    }
}

#[tracing::instrument(skip_all)]
pub async fn page(
    db: &impl ConnectionTrait,
    filter: &RejectedFilter,
    request: &PageRequest,
) -> Result<Page<rejected_events::Model>, DbErr> {
    use rejected_events::Column;
    let mut select = rejected_events::Entity::find();
    if let Some(from) = filter.from {
        select = select.filter(Column::RejectedAt.gte(from));
    }
    if let Some(to) = filter.to {
        select = select.filter(Column::RejectedAt.lt(to));
    }
    if let Some(name) = &filter.application {
        select = select.filter(Column::ApplicationId.eq(super::application_id(db, name).await?));
    }
    if let Some(code) = filter.reason.as_deref() {
        let has_code = match db.get_database_backend() {
            DbBackend::Postgres => Expr::cust_with_values(
                "reasons @> jsonb_build_array(jsonb_build_object('code', CAST($1 AS TEXT)))",
                [code],
            ),
            _ => Expr::cust_with_values(
                "EXISTS (SELECT 1 FROM json_each(rejected_events.reasons) AS r \
                 WHERE json_extract(r.value, '$.code') = ?)",
                [code],
            ),
        };
        select = select.filter(has_code);
    }
    let columns = (Column::RejectedAt, Column::Id);
    keyset::page(db, select, columns, request, cursor).await
}
