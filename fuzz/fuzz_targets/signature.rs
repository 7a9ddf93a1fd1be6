//! Signature checking on arbitrary header values and bodies: never panics, and what the
//! webhook signs always verifies, in every accepted encoding and with Standard Webhooks.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use webhook::contract::signature::{
    HUB_SIGNATURE_HEADER, Keys, Preset, SIGNATURE_HEADER, WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER,
};

fuzz_target!(|data: &[u8]| {
    let keys = Keys::new(vec![b"fuzz-secret".to_vec(), b"old-secret".to_vec()]);
    // First byte: how long the header value is; then the value; the rest is the body.
    let split = data.first().map_or(0, |n| *n as usize);
    let rest = data.get(1..).unwrap_or_default();
    let (value, body) = rest.split_at(split.min(rest.len()));
    for name in [SIGNATURE_HEADER, HUB_SIGNATURE_HEADER] {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
        let _ = keys.verify(&headers, body);
    }
    let signed = keys.sign(body);
    let mut headers = HeaderMap::new();
    headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&signed).unwrap());
    assert!(keys.verify(&headers, body).is_ok());

    // Standard Webhooks: the value as each of its three headers in turn, the others valid.
    let standard = keys.with_preset(Preset::StandardWebhooks);
    let now = 1_700_000_000;
    let signed = standard.standard_headers("msg_fuzz", now, body);
    let mut valid = HeaderMap::new();
    for (name, value) in &signed {
        valid.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    assert!(standard.verify_delivery_at(&valid, body, now).is_ok());
    for name in [
        WEBHOOK_ID_HEADER,
        WEBHOOK_TIMESTAMP_HEADER,
        WEBHOOK_SIGNATURE_HEADER,
    ] {
        let mut headers = valid.clone();
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
        let _ = standard.verify_delivery_at(&headers, body, now);
    }
});
