//! Built-in event types. Adding one: a new module here and one line in [`ALL`].

mod cta_click;
mod form_submit;
mod pageview;

use super::Registration;

pub const ALL: &[Registration] = &[
    pageview::REGISTRATION,
    cta_click::REGISTRATION,
    form_submit::REGISTRATION,
];
