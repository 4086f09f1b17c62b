use serde::Deserialize;
use validator::Validate;

use crate::validation::{Registration, Typed};

pub const REGISTRATION: Registration = Registration {
    category: "page interaction",
    name: "pageview",
    factory: |_| Typed::<PageView>::boxed(),
};

#[derive(Deserialize, Validate)]
struct PageView {
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
}
