//! CSV export of a filtered view, streamed page by page: memory stays flat whatever the size.

use std::collections::HashMap;

use actix_web::web::Bytes;
use eye_entity::events;
use futures_util::Stream;
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::filter::EventFilter;
use crate::queries::events::{Order, PageRequest, SearchError, search};

/// Rows read from the database per step of the stream.
const CHUNK: u64 = 1_000;
pub const HEADER: &str = "id,timestamp,received_at,application,session_id,category,name,data\r\n";

pub fn row(event: &events::Model, applications: &HashMap<Uuid, String>) -> String {
    let application = applications
        .get(&event.application_id)
        .cloned()
        .unwrap_or_else(|| event.application_id.to_string());
    let fields = [
        event.id.to_string(),
        event
            .timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        event
            .received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        application,
        event.session_id.to_string(),
        event.category.clone(),
        event.name.clone(),
        event.data.clone(),
    ];
    eye_core::csv::line(&fields)
}

/// The header, then every matching event oldest first, one database page at a time.
pub fn stream(
    db: DatabaseConnection,
    filter: EventFilter,
    applications: HashMap<Uuid, String>,
    timeout: std::time::Duration,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let start = PageRequest {
        after: None,
        before: None,
        limit: CHUNK,
        order: Order::OldestFirst,
    };
    let header = futures_util::stream::once(async { Ok(Bytes::from_static(HEADER.as_bytes())) });
    let rows = futures_util::stream::try_unfold(Some(start), move |request| {
        let (db, filter, applications) = (db.clone(), filter.clone(), applications.clone());
        async move {
            let Some(request) = request else {
                return Ok(None);
            };
            // Each chunk is a search of its own, under the same timeout as a page.
            let found = search(&db, &filter, &request, timeout)
                .await
                .map_err(|e| match e {
                    SearchError::Timeout(_) => {
                        tracing::warn!(error = %e, "csv export stopped part way");
                        actix_web::error::ErrorServiceUnavailable(e.to_string())
                    }
                    SearchError::Db(_) => {
                        tracing::error!(error = %e, "csv export failed part way");
                        actix_web::error::ErrorServiceUnavailable("the database stopped answering")
                    }
                })?;
            let chunk: String = found.rows.iter().map(|e| row(e, &applications)).collect();
            let next = found.next.map(|cursor| PageRequest {
                after: Some(cursor),
                ..request
            });
            Ok(Some((Bytes::from(chunk), next)))
        }
    });
    futures_util::StreamExt::chain(header, rows)
}
