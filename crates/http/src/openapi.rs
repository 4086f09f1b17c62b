//! What every OpenAPI description of The Eye shares: problem answers listing their `code`s,
//! the bearer token, and `X-Request-Id` on every request and answer. Each service derives its
//! paths with `utoipa` and finishes the document with [`finish`] and [`problems`].

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr, Required, ResponseBuilder};

pub use utoipa;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The name of the bearer token's security scheme.
pub const BEARER: &str = "bearer";

/// The problems one status of an operation answers with.
#[derive(Debug, Clone, Copy)]
pub struct Problems {
    pub status: u16,
    pub description: &'static str,
    /// Every `code` a problem with this status may carry.
    pub codes: &'static [&'static str],
}

/// What a bearer token that cannot be used answers with, on every authenticated route.
pub const TOKEN_REFUSED: Problems = Problems {
    status: 401,
    description: "No token, or one that is not valid, expired, revoked or of a disabled \
                  application.",
    codes: &[
        "missing_token",
        "invalid_token",
        "token_expired",
        "token_revoked",
        "unknown_token",
        "application_disabled",
    ],
};

/// Adds `problems` to the answers of the operation `method` (lower case) on `path`; a
/// missing operation is a mistake in the description, so it panics in the test that renders it.
pub fn problems(openapi: &mut OpenApi, path: &str, method: &str, problems: &[Problems]) {
    let Some(operation) = operation(openapi, path, method) else {
        panic!("the OpenAPI description has no operation {method} {path}");
    };
    for p in problems {
        let code = ObjectBuilder::new()
            .property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(p.codes.iter().copied())),
            )
            .required("code");
        let schema = AllOfBuilder::new()
            .item(Ref::from_schema_name("Problem"))
            .item(code);
        let mut response = ResponseBuilder::new()
            .description(format!(
                "{} `code`: {}.",
                p.description,
                p.codes
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .content(
                PROBLEM_JSON,
                ContentBuilder::new().schema(Some(schema)).build(),
            );
        if matches!(p.status, 429 | 503 | 504) {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(0)),
                    ))
                    .description(Some("Seconds to wait before retrying."))
                    .build(),
            );
        }
        operation
            .responses
            .responses
            .insert(p.status.to_string(), RefOr::T(response.build()));
    }
}

fn operation<'a>(openapi: &'a mut OpenApi, path: &str, method: &str) -> Option<&'a mut Operation> {
    let item = openapi.paths.paths.get_mut(path)?;
    match method {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        _ => None,
    }
}

/// Registers the bearer token and the `Problem` schema, and gives every operation the optional
/// `X-Request-Id` request header and every answer the `X-Request-Id` header.
pub fn finish(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A token made with `eye token create`, sent as `Authorization: Bearer <token>`.",
                ))
                .build(),
        ),
    );
    let mut schemas = Vec::new();
    <crate::Problem as utoipa::ToSchema>::schemas(&mut schemas);
    components.schemas.extend(schemas);
    components.schemas.insert(
        "Problem".into(),
        <crate::Problem as utoipa::PartialSchema>::schema(),
    );
    let parameter = ParameterBuilder::new()
        .name("X-Request-Id")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "An id of the client's own for this request, 1–64 characters of `[A-Za-z0-9._:-]`; \
             another value is replaced by a new id.",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    let header = HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(
            "The request's id: the client's own when sane, otherwise a new one. It is in every \
             log line of the request; quote it when asking about an answer.",
        ))
        .build();
    for item in openapi.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            operation
                .parameters
                .get_or_insert_with(Vec::new)
                .push(RefOr::T(parameter.clone()));
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response
                        .headers
                        .insert("X-Request-Id".into(), RefOr::T(header.clone()));
                }
            }
        }
    }
}
