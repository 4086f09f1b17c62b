//! The read api's OpenAPI 3.1 description, served on `/openapi.json` with Swagger UI on
//! `/swagger-ui/`. The HTML pages are for people and are not part of it. Paths come from the
//! handlers' `#[utoipa::path]`; the problems each answers with are listed here, and a test
//! checks every `ReadError` is among them.

use eye_http::openapi::{Problems, TOKEN_REFUSED, finish, problems};
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;
use uuid::Uuid;

use crate::read_api::{EventJson, RejectedJson};

/// A page of events with the cursors around it; a cursor is `null` at either end.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct EventsPage<'a> {
    events: Vec<EventJson<'a>>,
    /// Pass as `after` for the next page.
    next_cursor: Option<String>,
    /// Pass as `before` for the previous page.
    prev_cursor: Option<String>,
}

/// A page of rejected events with the cursors around it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RejectedPage<'a> {
    rejected_events: Vec<RejectedJson<'a>>,
    next_cursor: Option<String>,
    prev_cursor: Option<String>,
}

/// One session and a page of its events, oldest first.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SessionPage<'a> {
    session: Session,
    events: Vec<EventJson<'a>>,
    next_cursor: Option<String>,
    prev_cursor: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Session {
    id: Uuid,
    application_id: Uuid,
    application: Option<String>,
    #[schema(format = DateTime)]
    first_seen: String,
    #[schema(format = DateTime)]
    last_seen: String,
    event_count: i64,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "The Eye read api",
        description = "Programs read stored and rejected events with an `events:read` token: \
                       their own application's, or every application's with `events:read:all`. \
                       Errors are `application/problem+json` with a stable `code`."
    ),
    paths(
        crate::read_api::list_events,
        crate::read_api::stream_events,
        crate::trends::stream,
        crate::read_api::session,
        crate::read_api::list_rejected,
        crate::stats::counts,
        crate::stats::sessions,
        crate::reports::create,
        crate::reports::show,
        crate::reports::csv,
        crate::metrics::render
    ),
    tags(
        (name = "read", description = "Reading events."),
        (name = "stats", description = "Counts and session statistics over a window."),
        (name = "reports", description = "Report jobs: ask, poll, download the CSV."),
        (name = "operations", description = "Metrics.")
    )
)]
struct ReadApiDoc;

const AUTH: [Problems; 3] = [
    TOKEN_REFUSED,
    Problems {
        status: 403,
        description: "The token lacks the `events:read` scope (a publishable key never has \
                      it), or it is a publishable key and the request's `Origin` is missing or \
                      not one of the key's.",
        codes: &["missing_scope", "origin_required", "origin_not_allowed"],
    },
    Problems {
        status: 503,
        description: "Tokens cannot be checked or the database cannot answer now, or a text \
                      search ran out of time: retry later or narrow the search.",
        codes: &["auth_unavailable", "database_unavailable", "search_timeout"],
    },
];

const INVALID_FILTER: Problems = Problems {
    status: 400,
    description: "A filter, cursor or limit is not valid.",
    codes: &["invalid_filter"],
};

/// What the stats answer when they cannot count.
const STATS: [Problems; 4] = [
    Problems {
        status: 400,
        description: "A filter, the grouping or the bucket is not valid, the window spans more \
                      buckets than may be counted, or the answer would hold too many rows.",
        codes: &["invalid_filter"],
    },
    AUTH[0],
    AUTH[1],
    Problems {
        status: 503,
        description: "Tokens cannot be checked or the database cannot answer now, or the \
                      statistics ran out of time: retry later or narrow the window.",
        codes: &["auth_unavailable", "database_unavailable", "stats_timeout"],
    },
];

/// What each read-api operation answers when it cannot read.
pub fn read_problems() -> [(&'static str, Vec<Problems>); 7] {
    let with_auth = |mut own: Vec<Problems>| {
        own.extend(AUTH);
        own
    };
    [
        ("/api/v1/events", with_auth(vec![INVALID_FILTER])),
        (
            "/api/v1/sessions/{id}",
            with_auth(vec![
                Problems {
                    status: 400,
                    description: "The session id, `application_id`, a cursor or the limit is \
                                  not valid, or an `events:read:all` token named no \
                                  application.",
                    codes: &["invalid_filter", "application_required"],
                },
                Problems {
                    status: 404,
                    description: "The token's application (or the one named) has no such \
                                  session.",
                    codes: &["not_found"],
                },
            ]),
        ),
        ("/api/v1/rejected-events", with_auth(vec![INVALID_FILTER])),
        ("/api/v1/stats/counts", STATS.to_vec()),
        ("/api/v1/stats/sessions", STATS.to_vec()),
        (
            "/api/v1/events/stream",
            stream_problems(Some(INVALID_FILTER)),
        ),
        ("/api/v1/trends/stream", stream_problems(None)),
    ]
}

/// What a stream answers when it cannot start.
fn stream_problems(filter: Option<Problems>) -> Vec<Problems> {
    let mut listed: Vec<Problems> = filter.into_iter().collect();
    listed.extend([
        AUTH[0],
        AUTH[1],
        Problems {
            status: 503,
            description: "Tokens or application names cannot be read now, the admin serves as \
                          many streams as it may, or it has no queue to watch: retry later.",
            codes: &[
                "auth_unavailable",
                "database_unavailable",
                "too_many_streams",
                "live_unavailable",
            ],
        },
    ]);
    listed
}

const REPORT_NOT_FOUND: Problems = Problems {
    status: 404,
    description: "No report has this id, it expired, or it covers an application this token \
                  does not read.",
    codes: &["not_found"],
};

/// What each reports operation answers when it cannot, by path and method.
pub fn report_problems() -> [(&'static str, &'static str, Vec<Problems>); 3] {
    [
        (
            "/api/v1/reports",
            "post",
            vec![
                Problems {
                    status: 400,
                    description: "The body is not a report request, or its kind, window, \
                                  times, filters or application are not valid.",
                    codes: &["invalid_report"],
                },
                AUTH[0],
                Problems {
                    status: 403,
                    description: "The token lacks the `events:read` scope, or it names an \
                                  application it does not read.",
                    codes: &["missing_scope", "application_forbidden"],
                },
                Problems {
                    status: 503,
                    description: "The job could not be queued (nothing was started: try \
                                  again), this admin has no queue, or tokens or the database \
                                  cannot answer now.",
                    codes: &[
                        "broker_unavailable",
                        "broker_timeout",
                        "broker_rejected",
                        "broker_unroutable",
                        "queue_full",
                        "broker_blocked",
                        "broker_unconfirmed",
                        "reports_unavailable",
                        "auth_unavailable",
                        "database_unavailable",
                    ],
                },
            ],
        ),
        (
            "/api/v1/reports/{id}",
            "get",
            vec![REPORT_NOT_FOUND, AUTH[0], AUTH[1], AUTH[2]],
        ),
        (
            "/api/v1/reports/{id}/csv",
            "get",
            vec![
                REPORT_NOT_FOUND,
                Problems {
                    status: 409,
                    description: "The report is still running, or it failed (the detail says \
                                  why).",
                    codes: &["report_running", "report_failed"],
                },
                AUTH[0],
                AUTH[1],
                AUTH[2],
            ],
        ),
    ]
}

/// The read api's description (with the admin's `/metrics`).
pub fn document() -> Document {
    let mut openapi = ReadApiDoc::openapi();
    for (path, listed) in read_problems() {
        problems(&mut openapi, path, "get", &listed);
    }
    for (path, method, listed) in report_problems() {
        problems(&mut openapi, path, method, &listed);
    }
    finish(&mut openapi);
    openapi
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FilterError;
    use crate::read_api::ReadError;
    use actix_web::ResponseError;
    use eye_auth::AuthError;

    #[test]
    fn every_problem_of_the_reports_is_described_with_its_status_and_code() {
        use crate::reports::{ReportError, ReportProblem};
        use eye_core::queue::PublishError;
        let described: Vec<Problems> = report_problems()
            .into_iter()
            .flat_map(|(_, _, listed)| listed)
            .collect();
        let mut errors = vec![
            ReportError::Problem(ReportProblem::Kind),
            ReportError::Problem(ReportProblem::OtherApplication),
            ReportError::NotFound,
            ReportError::Running,
            ReportError::Failed("x".into()),
            ReportError::NoQueue,
            ReportError::Db(sea_orm::DbErr::Custom("x".into())),
        ];
        errors.extend(
            [
                PublishError::Unavailable("x".into()),
                PublishError::Timeout,
                PublishError::Nacked,
                PublishError::Unroutable,
                PublishError::Full,
                PublishError::Blocked,
                PublishError::Unconfirmed("x".into()),
            ]
            .map(ReportError::Publish),
        );
        for error in errors {
            let status = error.status().as_u16();
            assert!(
                described
                    .iter()
                    .any(|p| p.status == status && p.codes.contains(&error.code())),
                "{status} {} is missing from the description of the reports",
                error.code()
            );
        }
    }

    #[test]
    fn every_problem_of_the_read_api_is_described_with_its_status_and_code() {
        let db = || sea_orm::DbErr::Custom("x".into());
        let mut errors = vec![
            ReadError::Filter(FilterError::Session),
            ReadError::Query("duplicate field".into()),
            ReadError::ApplicationId,
            ReadError::ApplicationRequired,
            ReadError::NotFound,
            ReadError::SearchTimeout(crate::queries::events::SearchError::Timeout(
                std::time::Duration::from_secs(1),
            )),
            ReadError::Db(db()),
        ];
        errors.extend(
            [
                AuthError::MissingToken,
                AuthError::InvalidToken,
                AuthError::TokenExpired,
                AuthError::TokenRevoked,
                AuthError::UnknownToken,
                AuthError::ApplicationDisabled,
                AuthError::MissingScope("events:read"),
                AuthError::OriginRequired,
                AuthError::OriginNotAllowed("https://x.example".into()),
                AuthError::Unavailable(db()),
            ]
            .map(ReadError::Auth),
        );
        let session = read_problems()
            .into_iter()
            .find(|(path, _)| *path == "/api/v1/sessions/{id}")
            .unwrap()
            .1;
        for error in errors {
            let status = error.status_code().as_u16();
            assert!(
                session
                    .iter()
                    .any(|p| p.status == status && p.codes.contains(&error.code())),
                "{status} {} is missing from the description of the read api",
                error.code()
            );
        }
    }
}
