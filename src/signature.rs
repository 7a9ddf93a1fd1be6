//! HMAC-SHA256 signatures on raw bodies: checking inbound events, signing reports.
//!
//! The reservation system sends `X-Webhook-Signature: <Base64 of HMAC-SHA256(secret, body)>`
//! with the secret's UTF-8 bytes as the key. Lower-case hex, a `sha256=` prefix and the
//! GitHub-style `X-Hub-Signature-256` header are accepted too. Every configured key is
//! tried, so a secret can be rotated without dropping events.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use poem::http::{HeaderMap, StatusCode};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header the reservation system signs with.
pub const SIGNATURE_HEADER: &str = "x-webhook-signature";
/// The GitHub / agent-registry header, `sha256=<hex>`.
pub const HUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Length of an HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;

/// Why a request's signature was refused. Every variant is a 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing signature: send X-Webhook-Signature (or X-Hub-Signature-256)")]
    Missing,
    #[error("malformed signature: expected Base64 or hex of a 32-byte HMAC-SHA256")]
    Malformed,
    #[error("signature does not match the body")]
    Mismatch,
}

impl poem::error::ResponseError for SignatureError {
    fn status(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }
}

/// The keys a webhook accepts signatures from. The first one signs outgoing reports.
#[derive(Clone)]
pub struct Keys(Vec<SecretSlice<u8>>);

impl Keys {
    /// `keys` must hold at least one key; [`Config`](crate::config::Config) ensures it.
    pub fn new(keys: Vec<Vec<u8>>) -> Self {
        Self(keys.into_iter().map(SecretSlice::from).collect())
    }

    /// Checks the signature header of a request against its raw body.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        let header = headers
            .get(SIGNATURE_HEADER)
            .or_else(|| headers.get(HUB_SIGNATURE_HEADER))
            .ok_or(SignatureError::Missing)?;
        let tag = decode_tag(header.as_bytes())?;
        let matches = self.0.iter().any(|key| {
            mac(key.expose_secret(), body)
                .verify_slice(&tag[..])
                .is_ok()
        });
        if matches {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    /// The `X-Webhook-Signature` value for `body`, signed with the first key.
    pub fn sign(&self, body: &[u8]) -> String {
        let tag = mac(self.0[0].expose_secret(), body).finalize().into_bytes();
        STANDARD.encode(tag)
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys([{} redacted])", self.0.len())
    }
}

fn mac(key: &[u8], body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    mac
}

/// Decodes a signature header value: `[sha256=]<Base64 or hex>`.
fn decode_tag(value: &[u8]) -> Result<[u8; TAG_LEN], SignatureError> {
    let value = value.trim_ascii();
    let value = value.strip_prefix(b"sha256=").unwrap_or(value);
    let mut tag = [0u8; TAG_LEN];
    if value.len() == 2 * TAG_LEN {
        hex::decode_to_slice(value, &mut tag).map_err(|_| SignatureError::Malformed)?;
    } else {
        // Room for what 44 Base64 characters can hold; longer input fails as too big.
        let mut buf = [0u8; 48];
        let n = STANDARD
            .decode_slice(value, &mut buf)
            .map_err(|_| SignatureError::Malformed)?;
        if n != TAG_LEN {
            return Err(SignatureError::Malformed);
        }
        tag.copy_from_slice(&buf[..TAG_LEN]);
    }
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::HeaderValue;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    fn keys(secret: &str) -> Keys {
        Keys::new(vec![secret.as_bytes().to_vec()])
    }

    #[test]
    fn the_public_github_vector_verifies_as_hex_with_and_without_prefix() {
        let k = keys("It's a Secret to Everybody");
        let hex = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        for value in [hex.to_owned(), format!("sha256={hex}")] {
            assert_eq!(
                k.verify(&headers(HUB_SIGNATURE_HEADER, &value), b"Hello, World!"),
                Ok(())
            );
        }
    }

    #[test]
    fn signing_and_verifying_agree() {
        let k = keys("s3cret");
        let sig = k.sign(b"{}");
        assert_eq!(sig.len(), 44);
        assert_eq!(k.verify(&headers(SIGNATURE_HEADER, &sig), b"{}"), Ok(()));
        assert_eq!(
            k.verify(&headers(SIGNATURE_HEADER, &sig), b"{ }"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_of_several_keys_verifies() {
        let old = keys("old");
        let both = Keys::new(vec![b"new".to_vec(), b"old".to_vec()]);
        let sig = old.sign(b"body");
        assert_eq!(
            both.verify(&headers(SIGNATURE_HEADER, &sig), b"body"),
            Ok(())
        );
    }

    #[test]
    fn malformed_values_are_refused_before_any_mac_is_computed() {
        let k = keys("s");
        for bad in ["", "not base64!", "AAAA", &"zz".repeat(32), "sha256="] {
            assert_eq!(
                k.verify(&headers(SIGNATURE_HEADER, bad), b""),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            k.verify(&HeaderMap::new(), b""),
            Err(SignatureError::Missing)
        );
    }
}
