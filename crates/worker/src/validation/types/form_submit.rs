use serde::Deserialize;
use serde_json::{Map, Value};
use validator::Validate;

use crate::validation::{Registration, Typed};

pub const REGISTRATION: Registration = Registration {
    category: "form interaction",
    name: "submit",
    factory: |_| Typed::<FormSubmit>::boxed(),
};

#[derive(Deserialize, Validate)]
struct FormSubmit {
    #[validate(
        required(message = "host is required"),
        length(min = 1, max = 253, message = "host must have 1 to 253 characters")
    )]
    host: Option<String>,
    #[validate(
        required(message = "path is required"),
        length(min = 1, max = 2048, message = "path must have 1 to 2048 characters")
    )]
    path: Option<String>,
    /// The submitted fields, as an object.
    #[validate(required(message = "form is required"))]
    form: Option<Map<String, Value>>,
}
