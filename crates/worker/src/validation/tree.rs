//! The tree validators look at. `data` itself is stored as the text received; this tree is
//! only for checking it, so it may differ from the text where serde_json cannot hold a value:
//! a number beyond `f64` reads as the largest `f64` of its sign, and a lone UTF-16 surrogate
//! escape is reported (no database stores it) and reads as U+FFFD.

use eye_core::FieldError;
use serde_json::Value;

/// The tree of `raw`, and what is wrong with the text itself.
pub fn of(raw: &str) -> (Value, Vec<FieldError>) {
    let mut reasons = Vec::new();
    let repaired = repair(raw, &mut reasons);
    let text = repaired.as_deref().unwrap_or(raw);
    match serde_json::from_str(text) {
        Ok(tree) => (tree, reasons),
        Err(e) => {
            reasons.push(FieldError::new(
                "data",
                "invalid_json",
                format!("data cannot be read: {e}"),
            ));
            (Value::Null, reasons)
        }
    }
}

/// A copy of `raw` with out-of-range numbers and lone surrogates replaced, or `None` when
/// nothing needed replacing (the usual case, which costs one scan and no copy).
fn repair(raw: &str, reasons: &mut Vec<FieldError>) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    let replace = |out: &mut Option<String>, copied: &mut usize, from, to, with: &str| {
        let s = out.get_or_insert_with(|| String::with_capacity(raw.len()));
        s.push_str(&raw[*copied..from]);
        s.push_str(with);
        *copied = to;
    };
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'u') {
                        let (unit, next) = (hex4(bytes, i + 2), i + 6);
                        match unit {
                            Some(0xD800..=0xDBFF)
                                if bytes.get(next) == Some(&b'\\')
                                    && bytes.get(next + 1) == Some(&b'u')
                                    && matches!(hex4(bytes, next + 2), Some(0xDC00..=0xDFFF)) =>
                            {
                                i = next + 6;
                            }
                            Some(0xD800..=0xDFFF) => {
                                if !reasons.iter().any(|r| r.code == "lone_surrogate") {
                                    reasons.push(FieldError::new(
                                        "data",
                                        "lone_surrogate",
                                        "a string holds a lone UTF-16 surrogate escape, which no database stores",
                                    ));
                                }
                                replace(&mut out, &mut copied, i, next, "\\ufffd");
                                i = next;
                            }
                            _ => i = next,
                        }
                    } else if bytes[i] == b'\\' {
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let number = &raw[start..i];
                if number.parse::<f64>().is_ok_and(f64::is_infinite) {
                    let max = if number.starts_with('-') {
                        "-1.7976931348623157e308"
                    } else {
                        "1.7976931348623157e308"
                    };
                    replace(&mut out, &mut copied, start, i, max);
                }
            }
            _ => i += 1,
        }
    }
    let mut out = out?;
    out.push_str(&raw[copied..]);
    Some(out)
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordinary_text_is_read_as_is() {
        let (tree, reasons) = of(r#"{"a":[1,-2.5e3,"x\"y\\"],"b":"\ud83d\ude00"}"#);
        assert!(reasons.is_empty());
        assert_eq!(tree, json!({"a": [1, -2500.0, "x\"y\\"], "b": "😀"}));
    }

    #[test]
    fn numbers_beyond_f64_read_as_its_largest() {
        let (tree, reasons) = of(r#"{"big":1e400,"small":-1E+999,"tiny":1e-400,"s":"1e400"}"#);
        assert!(reasons.is_empty());
        assert_eq!(tree["big"], json!(f64::MAX));
        assert_eq!(tree["small"], json!(-f64::MAX));
        assert_eq!(tree["tiny"], json!(0.0));
        assert_eq!(tree["s"], json!("1e400"));
    }

    #[test]
    fn lone_surrogates_are_reported_once() {
        let (tree, reasons) = of(r#"{"a":"x\ud800","b":"\udc00y"}"#);
        assert_eq!(tree, json!({"a": "x\u{fffd}", "b": "\u{fffd}y"}));
        assert_eq!(reasons.len(), 1);
        assert_eq!(reasons[0].code, "lone_surrogate");
    }
}
