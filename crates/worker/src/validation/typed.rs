//! A validator for a payload that deserializes into a struct checked by the `validator` crate.

use std::marker::PhantomData;

use eye_core::FieldError;
use serde::de::DeserializeOwned;
use serde_json::Value;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use super::EventValidator;

/// Payload fields are `Option`s marked `required`, so a missing field is reported by name
/// (`required`) and a wrong type by path (`invalid_type`).
pub struct Typed<T>(PhantomData<fn() -> T>);

impl<T> Typed<T> {
    pub fn boxed() -> Box<Self> {
        Box::new(Self(PhantomData))
    }
}

impl<T: DeserializeOwned + Validate> EventValidator for Typed<T> {
    fn validate(&self, data: &Value) -> Vec<FieldError> {
        match serde_path_to_error::deserialize::<_, T>(data) {
            Ok(payload) => match payload.validate() {
                Ok(()) => Vec::new(),
                Err(errors) => {
                    let mut reasons = Vec::new();
                    flatten("data", &errors, &mut reasons);
                    reasons
                }
            },
            Err(error) => {
                let message = error.inner().to_string();
                let code = if message.starts_with("invalid type") {
                    "invalid_type"
                } else {
                    "invalid_value"
                };
                vec![FieldError::new(
                    format!("data.{}", error.path()),
                    code,
                    message,
                )]
            }
        }
    }
}

fn flatten(prefix: &str, errors: &ValidationErrors, reasons: &mut Vec<FieldError>) {
    let mut fields: Vec<_> = errors.errors().iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    for (field, kind) in fields {
        let path = format!("{prefix}.{field}");
        match kind {
            ValidationErrorsKind::Field(list) => reasons.extend(list.iter().map(|e| {
                let message = e.message.as_deref().map_or_else(
                    || format!("{path} is not valid ({})", e.code),
                    str::to_owned,
                );
                FieldError::new(path.clone(), &e.code, message)
            })),
            ValidationErrorsKind::Struct(inner) => flatten(&path, inner, reasons),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    flatten(&format!("{path}[{i}]"), inner, reasons);
                }
            }
        }
    }
}
