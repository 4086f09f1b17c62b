//! The broker policy for a prefix's queues. What an operator may change about a queue
//! (delivery limit, dead-lettering, length limits) is a RabbitMQ policy, set through the
//! management api by `eye migrate` and, idempotently, by every service at start: a policy
//! changes on a live queue, where a queue argument would need the queue deleted.

use anyhow::{Context, bail};
use eye_core::Settings;
use eye_core::queue::Topology;
use reqwest::Url;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// The management api's base URL, user and password.
struct Management {
    base: Url,
    user: String,
    password: String,
    vhost: String,
}

/// Sets (or updates) the ingest, dead-letter and report jobs queue policies. `Ok(false)` when the
/// operator turned this off (`amqp_management_url = "off"`).
pub async fn apply_policies(settings: &Settings) -> anyhow::Result<bool> {
    let Some(management) = management(settings)? else {
        return Ok(false);
    };
    let topology = Topology::new(&settings.queue_prefix);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    for (name, definition) in policies(settings, &topology) {
        let url = management.policy_url(&name)?;
        let response = client
            .put(url)
            .basic_auth(&management.user, Some(&management.password))
            .json(&definition)
            .send()
            .await
            .with_context(|| {
                format!(
                    "amqp_management_url: could not reach RabbitMQ's management api at {} to set policy `{name}`",
                    management.base
                )
            })?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            bail!("amqp_management_url: RabbitMQ refused policy `{name}` ({status}): {body}");
        }
    }
    Ok(true)
}

/// Removes the prefix's policies (tests that delete their queues).
pub async fn remove_policies(settings: &Settings) -> anyhow::Result<()> {
    let Some(management) = management(settings)? else {
        return Ok(());
    };
    let client = reqwest::Client::new();
    for (name, _) in policies(settings, &Topology::new(&settings.queue_prefix)) {
        client
            .delete(management.policy_url(&name)?)
            .basic_auth(&management.user, Some(&management.password))
            .send()
            .await?;
    }
    Ok(())
}

/// Deletes a prefix's queues and exchanges, and their policies even when that failed (tests
/// that made their own).
pub async fn remove_topology(amqp_url: &str, prefix: &str) -> anyhow::Result<()> {
    let deleted = eye_core::queue::delete(amqp_url, &Topology::new(prefix)).await;
    let reports = eye_core::queue::delete(amqp_url, &Topology::reports(prefix)).await;
    let settings = Settings {
        amqp_url: Some(secrecy::SecretString::from(amqp_url.to_owned())),
        queue_prefix: prefix.to_owned(),
        ..Settings::default()
    };
    let removed = remove_policies(&settings).await;
    deleted?;
    reports?;
    removed
}

/// The policy of each queue, by name. Dead-lettering is `at-least-once`, which RabbitMQ
/// honours only with `overflow: reject-publish`: a full queue refuses publishes (the api
/// answers 503) instead of dropping the oldest message.
fn policies(settings: &Settings, topology: &Topology) -> Vec<(String, Value)> {
    let exact = |queue: &str| format!("^{}$", regex_escape(queue));
    let reports = Topology::reports(&settings.queue_prefix);
    vec![
        (
            topology.queue.clone(),
            json!({
                "pattern": exact(&topology.queue),
                "apply-to": "queues",
                "priority": 10,
                "definition": {
                    "delivery-limit": settings.delivery_limit,
                    "dead-letter-exchange": topology.dead_exchange,
                    "dead-letter-strategy": "at-least-once",
                    "overflow": "reject-publish",
                    "max-length": settings.queue_max_messages,
                    "max-length-bytes": settings.queue_max_bytes,
                },
            }),
        ),
        (
            topology.dead_queue.clone(),
            json!({
                "pattern": exact(&topology.dead_queue),
                "apply-to": "queues",
                "priority": 10,
                "definition": {
                    "overflow": "reject-publish",
                    "max-length": settings.queue_max_messages,
                    "max-length-bytes": settings.queue_max_bytes,
                },
            }),
        ),
        // A job handed back `delivery_limit` times (its worker died, or the database stayed
        // away) is dropped: the sweep then fails its report, saying so.
        (
            reports.queue.clone(),
            json!({
                "pattern": exact(&reports.queue),
                "apply-to": "queues",
                "priority": 10,
                "definition": {
                    "delivery-limit": settings.delivery_limit,
                    "overflow": "reject-publish",
                    "max-length": crate::stack::REPORT_JOBS_HELD,
                },
            }),
        ),
    ]
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

fn management(settings: &Settings) -> anyhow::Result<Option<Management>> {
    // The management api of the first node: policies are the cluster's, whichever sets them.
    let first = eye_core::queue::nodes(settings.amqp_url()?)
        .first()
        .copied()
        .unwrap_or_default();
    let amqp = Url::parse(first).context("amqp_url is not a URL")?;
    let vhost = match amqp.path().trim_start_matches('/') {
        "" => "/".to_owned(),
        path => percent_decode(path),
    };
    let (base, user, password) = match &settings.amqp_management_url {
        Some(url) if url.expose_secret().eq_ignore_ascii_case("off") => return Ok(None),
        Some(url) => {
            let url = Url::parse(url.expose_secret())
                .context("amqp_management_url is not a URL (or `off`)")?;
            // The AMQP credentials stand in only as a pair, and guest when there are none.
            let (user, password) = match (url.username(), amqp.username()) {
                ("", "") => ("guest", url.password().unwrap_or("guest")),
                ("", user) => (user, amqp.password().unwrap_or("guest")),
                (user, _) => (user, url.password().unwrap_or("guest")),
            };
            (url.clone(), percent_decode(user), percent_decode(password))
        }
        None => {
            let host = amqp.host_str().unwrap_or("localhost");
            let base =
                Url::parse(&format!("http://{host}:15672/")).context("amqp_url has no host")?;
            let user = if amqp.username().is_empty() {
                "guest"
            } else {
                amqp.username()
            };
            let password = amqp.password().unwrap_or("guest");
            (base, percent_decode(user), percent_decode(password))
        }
    };
    Ok(Some(Management {
        base,
        user,
        password,
        vhost,
    }))
}

impl Management {
    fn policy_url(&self, name: &str) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        url.set_username("").ok();
        url.set_password(None).ok();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("amqp_management_url cannot be a base URL"))?
            .pop_if_empty()
            .extend(["api", "policies", &self.vhost, name]);
        Ok(url)
    }
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(amqp: &str, management: Option<&str>) -> Settings {
        Settings {
            amqp_url: Some(amqp.into()),
            amqp_management_url: management.map(Into::into),
            ..Settings::default()
        }
    }

    #[test]
    fn the_management_api_is_found_beside_the_broker_with_its_credentials() {
        let m = management(&settings("amqp://eye:p%40ss@mq:5672/%2f", None))
            .unwrap()
            .unwrap();
        assert_eq!(m.base.as_str(), "http://mq:15672/");
        assert_eq!((m.user.as_str(), m.password.as_str()), ("eye", "p@ss"));
        assert_eq!(
            m.policy_url("eye.events.ingest").unwrap().as_str(),
            "http://mq:15672/api/policies/%2F/eye.events.ingest"
        );
        let off = management(&settings("amqp://mq/%2f", Some("off"))).unwrap();
        assert!(off.is_none());
    }

    #[test]
    fn a_policy_matches_its_queue_only() {
        let topology = Topology::new("t.1");
        let all = policies(&Settings::default(), &topology);
        assert_eq!(all[0].1["pattern"], r"^t\.1\.events\.ingest$");
        assert_eq!(
            all[0].1["definition"]["dead-letter-strategy"],
            "at-least-once"
        );
        let settings = Settings {
            queue_prefix: "t.1".into(),
            ..Settings::default()
        };
        let reports = &policies(&settings, &Topology::new("t.1"))[2].1;
        assert_eq!(reports["pattern"], r"^t\.1\.reports$");
        assert_eq!(reports["definition"]["delivery-limit"], 10);
        assert_eq!(reports["definition"]["max-length"], 1000);
    }
}
