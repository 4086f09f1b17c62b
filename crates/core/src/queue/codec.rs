//! How a message's bytes travel through RabbitMQ. An envelope of many events is mostly the
//! same keys and values again, so one worth compressing goes LZ4-compressed (block format,
//! its decoded length first as a little-endian u32), marked by its `content-encoding`. The
//! broker's cost and the queue's bytes follow the bytes published; LZ4 costs the api a few
//! microseconds per kilobyte. Small messages (single events) go as they are.

use std::borrow::Cow;

/// The `content-encoding` of a compressed message.
pub const LZ4: &str = "x-eye-lz4-block";

/// Messages shorter than this go uncompressed: too little repeats inside them to pay back.
const LEAST: usize = 1024;

/// No message decodes to more than this, whatever its length prefix claims. The api's largest
/// request (64 MiB at most) makes an envelope of a few times that.
pub const MOST_DECODED: usize = 512 * 1024 * 1024;

/// The bytes to publish for `payload`, and their `content-encoding` when compressed.
pub fn encode(payload: &[u8]) -> (Cow<'_, [u8]>, Option<&'static str>) {
    if payload.len() < LEAST {
        return (Cow::Borrowed(payload), None);
    }
    let compressed = lz4_flex::block::compress_prepend_size(payload);
    if compressed.len() >= payload.len() {
        return (Cow::Borrowed(payload), None);
    }
    (Cow::Owned(compressed), Some(LZ4))
}

/// The message as it was published, or why it cannot be read (with its bytes as they came).
pub fn decode(body: Vec<u8>, encoding: Option<&str>) -> Result<Vec<u8>, (Vec<u8>, String)> {
    match encoding {
        None | Some("" | "identity") => Ok(body),
        Some(LZ4) => {
            let decoded = match body.first_chunk::<4>() {
                None => Err("shorter than its length prefix".to_owned()),
                Some(prefix) => {
                    let size = u32::from_le_bytes(*prefix) as usize;
                    if size > MOST_DECODED {
                        Err(format!(
                            "claims {size} bytes decoded, more than the {MOST_DECODED} allowed"
                        ))
                    } else {
                        lz4_flex::block::decompress(&body[4..], size).map_err(|e| e.to_string())
                    }
                }
            };
            decoded.map_err(|why| (body, format!("cannot decompress ({LZ4}): {why}")))
        }
        Some(other) => Err((body, format!("unknown content-encoding {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(events: usize) -> Vec<u8> {
        let event = r#"{"id":"0190a8f4-6c2e-7b3a-9d1e-2f3a4b5c6d7e","category":"page interaction","name":"pageview","data":{"host":"www.example.com","path":"/"}}"#;
        format!("{{\"v\":1,\"events\":[{}]}}", vec![event; events].join(",")).into_bytes()
    }

    #[test]
    fn a_batch_travels_compressed_and_comes_back_byte_for_byte() {
        let payload = envelope(100);
        let (sent, encoding) = encode(&payload);
        assert_eq!(encoding, Some(LZ4));
        assert!(
            sent.len() * 5 < payload.len(),
            "{} of {} bytes",
            sent.len(),
            payload.len()
        );
        assert_eq!(decode(sent.into_owned(), encoding).unwrap(), payload);
    }

    #[test]
    fn a_single_event_travels_as_it_is() {
        let payload = envelope(1);
        let (sent, encoding) = encode(&payload);
        assert_eq!((sent.as_ref(), encoding), (payload.as_slice(), None));
        assert_eq!(decode(payload.clone(), None).unwrap(), payload);
    }

    #[test]
    fn what_cannot_be_decoded_says_why_and_keeps_its_bytes() {
        let payload = envelope(50);
        let mut cut = encode(&payload).0.into_owned();
        cut.truncate(cut.len() / 2);
        let (kept, why) = decode(cut.clone(), Some(LZ4)).unwrap_err();
        assert_eq!(kept, cut);
        assert!(why.starts_with("cannot decompress"), "{why}");

        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"xx");
        let (_, why) = decode(huge, Some(LZ4)).unwrap_err();
        assert!(why.contains("more than"), "{why}");

        let (_, why) = decode(b"{}".to_vec(), Some("br")).unwrap_err();
        assert_eq!(why, r#"unknown content-encoding "br""#);
    }
}
