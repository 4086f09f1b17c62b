//! A scrape of a `/metrics` endpoint, parsed from the Prometheus text format (strictly:
//! a line that is not a comment or a well-formed sample fails the test).

use std::collections::{BTreeMap, HashMap};

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// Family name → `counter`, `gauge`, `histogram`, … from the `# TYPE` lines.
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// GETs `{base}/metrics` and parses it; panics on anything but a 200 in the text format.
    pub async fn of(client: &reqwest::Client, base: &str) -> Self {
        let response = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("no answer from /metrics");
        assert_eq!(response.status(), 200, "GET {base}/metrics");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        Self::parse(&response.text().await.unwrap())
    }

    pub fn parse(text: &str) -> Self {
        let mut scrape = Scrape::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("a TYPE line names its type");
                scrape.types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') {
                let sample = sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}"));
                scrape.samples.push(sample);
            }
        }
        for sample in &scrape.samples {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| sample.name.strip_suffix(suffix))
                .filter(|base| scrape.types.contains_key(*base))
                .unwrap_or(&sample.name);
            assert!(
                scrape.types.contains_key(family),
                "{} has no # TYPE line",
                sample.name
            );
        }
        scrape
    }

    /// The value of the one sample named `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<_> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == wanted)
            .collect();
        assert!(found.len() <= 1, "{name}{labels:?} appears twice");
        found.first().map(|s| s.value)
    }

    /// Every sample named `name`.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// The values a label takes across the samples named `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .all(name)
            .iter()
            .filter_map(|s| s.labels.get(label).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

fn sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if !valid_name {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = body.split_once("=\"")?;
            let valid_key =
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_key {
                return None;
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return None,
                    },
                    (i, '"') => break i + 1,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.to_owned(), value);
            body = &after[end..];
            body = body.strip_prefix(',').unwrap_or(body);
        }
    }
    let mut fields = rest.strip_prefix(' ')?.split(' ');
    let value = match fields.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_escaped_labels_are_read() {
        let scrape = Scrape::parse(
            "# TYPE a_total counter\na_total{x=\"q\\\"uo,te\",y=\"b\\\\s\"} 3\n\
             # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n",
        );
        assert_eq!(
            scrape.value("a_total", &[("x", "q\"uo,te"), ("y", "b\\s")]),
            Some(3.0)
        );
        assert_eq!(scrape.value("h_count", &[]), Some(2.0));
        assert_eq!(scrape.value("h_bucket", &[("le", "+Inf")]), Some(2.0));
    }

    #[test]
    #[should_panic(expected = "not a sample")]
    fn a_malformed_line_fails() {
        Scrape::parse("# TYPE a gauge\na{x=unquoted} 1\n");
    }
}
