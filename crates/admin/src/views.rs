//! Small helpers shared by the pages: rendering, times, links.

use actix_web::HttpResponse;
use askama::Template;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::PageError;

pub fn html(page: &impl Template) -> Result<HttpResponse, PageError> {
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(page.render()?))
}

/// A time shown in UTC; the browser adds the viewer's local time as a tooltip.
#[derive(Debug, Clone)]
pub struct Time {
    pub iso: String,
    pub shown: String,
}

impl From<DateTime<Utc>> for Time {
    fn from(t: DateTime<Utc>) -> Self {
        Self {
            iso: t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            shown: t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        }
    }
}

/// `?a=1&b=2` from a query struct, leaving out empty fields so shared links stay short.
pub fn query_string(query: &impl Serialize) -> String {
    let encoded = serde_urlencoded::to_string(query).unwrap_or_default();
    let kept: Vec<&str> = encoded
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.ends_with('='))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

pub fn url_encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// JSON text cut to `max` characters for a table cell.
pub fn summary(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

pub use eye_core::telemetry::ErrorChain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_only_the_filters_that_are_set() {
        #[derive(Serialize)]
        struct Q {
            category: &'static str,
            name: &'static str,
            q: &'static str,
        }
        let q = Q {
            category: "page interaction",
            name: "",
            q: "a&b=c",
        };
        assert_eq!(query_string(&q), "?category=page+interaction&q=a%26b%3Dc");
        assert_eq!(url_encode("/events?x=1"), "%2Fevents%3Fx%3D1");
    }

    #[test]
    fn long_data_is_cut_on_a_character_boundary() {
        let value = serde_json::json!({"text": "ééééé"});
        assert_eq!(summary(&value.to_string(), 10), "{\"text\":\"é…");
    }
}
