//! Event bodies, built as strings: cheap enough that the generator is not what is measured.

use std::sync::OnceLock;

use rand::Rng;
use uuid::Uuid;

const PATHS: [&str; 5] = ["/", "/reviews", "/pricing", "/contact", "/blog/how-to"];

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

fn event(session: Uuid, rng: &mut impl Rng, at: &str) -> String {
    let path = PATHS[rng.random_range(0..PATHS.len())];
    match rng.random_range(0..3) {
        0 => format!(
            r#"{{"session_id":"{session}","category":"page interaction","name":"pageview","data":{{"host":"www.example.com","path":"{path}"}},"timestamp":"{at}"}}"#
        ),
        1 => format!(
            r#"{{"session_id":"{session}","category":"page interaction","name":"cta click","data":{{"host":"www.example.com","path":"{path}","element":"chat bubble"}},"timestamp":"{at}"}}"#
        ),
        _ => format!(
            r#"{{"session_id":"{session}","category":"form interaction","name":"submit","data":{{"host":"www.example.com","path":"{path}","form":{{"first_name":"Ada","last_name":"Lovelace"}}}},"timestamp":"{at}"}}"#
        ),
    }
}

pub fn valid() -> String {
    event(Uuid::new_v4(), &mut rand::rng(), &now())
}

/// `n` events of one session, as an array.
pub fn batch(n: usize) -> String {
    let (session, at, mut rng) = (Uuid::new_v4(), now(), rand::rng());
    let events: Vec<String> = (0..n).map(|_| event(session, &mut rng, &at)).collect();
    format!("[{}]", events.join(","))
}

pub fn invalid_payload() -> String {
    format!(
        r#"{{"session_id":"{}","category":"page interaction","name":"pageview","data":{{"host":"www.example.com"}},"timestamp":"{}"}}"#,
        Uuid::new_v4(),
        now()
    )
}

pub fn duplicate() -> String {
    static ID: OnceLock<Uuid> = OnceLock::new();
    let id = ID.get_or_init(Uuid::new_v4);
    format!(
        r#"{{"id":"{id}","session_id":"{id}","category":"page interaction","name":"pageview","data":{{"host":"www.example.com","path":"/"}},"timestamp":"2021-01-01 00:00:00"}}"#
    )
}

pub fn malformed() -> String {
    r#"{"session_id":"not-a-uuid","category":"page interaction","name":"pageview","data":{},"timestamp":"yesterday"}"#.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bodies_are_json_of_the_right_size() {
        let batch: Vec<serde_json::Value> = serde_json::from_str(&batch(100)).unwrap();
        assert_eq!(batch.len(), 100);
        assert!(
            batch
                .iter()
                .all(|e| e["session_id"] == batch[0]["session_id"])
        );
        for body in [valid(), invalid_payload(), duplicate(), malformed()] {
            let _: serde_json::Value = serde_json::from_str(&body).unwrap();
        }
        assert_eq!(duplicate(), duplicate());
    }
}
