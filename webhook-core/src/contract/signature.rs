//! HMAC-SHA256 signatures on raw bodies: checking inbound events, signing reports.
//!
//! The reservation system sends `X-Webhook-Signature: <Base64 of HMAC-SHA256(secret, body)>`
//! with the secret's UTF-8 bytes as the key. Lower-case hex, a `sha256=` prefix and the
//! GitHub-style `X-Hub-Signature-256` header are accepted too. A [`Preset`] names the other
//! senders' conventions (`SIGNATURE_PRESET`). Every configured key is tried, so a secret can
//! be rotated without dropping events.

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

/// A sender's signing convention: which header carries the signature, and whether the
/// secret is Base64-decoded before it is used as the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The reservation system: `X-Webhook-Signature` (Base64), the secret's UTF-8 bytes as
    /// the key. `X-Hub-Signature-256` is accepted too.
    ReservationSystem,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`, the secret's UTF-8 bytes as the key.
    Github,
    /// Agent registries: `X-Hub-Signature-256: sha256=<hex>`, the secret Base64-decoded first.
    AgentRegistry,
}

impl Preset {
    /// Every preset, as `SIGNATURE_PRESET` names them.
    pub const ALL: [Preset; 3] = [Self::ReservationSystem, Self::Github, Self::AgentRegistry];

    /// The name `SIGNATURE_PRESET` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservationSystem => "reservation-system",
            Self::Github => "github",
            Self::AgentRegistry => "agent-registry",
        }
    }

    /// Reads a `SIGNATURE_PRESET` value, ignoring case and surrounding spaces.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text))
    }

    /// Whether the configured secret is Base64 text to decode into the key.
    pub fn decodes_secret(self) -> bool {
        self == Self::AgentRegistry
    }

    /// The headers a signature is looked for in, in order.
    fn headers(self) -> &'static [&'static str] {
        match self {
            Self::ReservationSystem => &[SIGNATURE_HEADER, HUB_SIGNATURE_HEADER],
            Self::Github | Self::AgentRegistry => &[HUB_SIGNATURE_HEADER],
        }
    }

    /// What a request without a signature is told to send.
    fn expected(self) -> &'static str {
        match self {
            Self::ReservationSystem => "X-Webhook-Signature (or X-Hub-Signature-256)",
            Self::Github | Self::AgentRegistry => "X-Hub-Signature-256: sha256=<hex>",
        }
    }
}

/// Why a request's signature was refused. Every variant is a 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// No signature header; names the header the configured preset expects.
    #[error("missing signature: send {0}")]
    Missing(&'static str),
    /// The signature header is there but is not Base64 or hex.
    #[error("malformed signature: expected Base64 or hex of a 32-byte HMAC-SHA256")]
    Malformed,
    /// No key signs the body as the header says.
    #[error("signature does not match the body")]
    Mismatch,
}

impl poem::error::ResponseError for SignatureError {
    fn status(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }
}

/// Names one configured key without revealing it: the first 8 bytes of SHA-256 over a fixed
/// label and the key, in hex. The ledger keeps it with a booking, so that reports about the
/// booking are signed with the key its event came with; the same key has the same id in
/// every replica and after a restart.
pub type KeyId = String;

fn key_id(key: &[u8]) -> KeyId {
    use sha2::Digest;
    let digest = Sha256::new()
        .chain_update(b"reservation-webhook key id\0")
        .chain_update(key)
        .finalize();
    hex::encode(&digest[..8])
}

/// The keys a webhook accepts signatures from, and the preset saying where to find them.
/// Reports are signed with the key that verified the event they report on, or the first
/// key.
#[derive(Clone)]
pub struct Keys {
    keys: Vec<SecretSlice<u8>>,
    preset: Preset,
}

impl Keys {
    /// Keys for the reservation system's convention. `keys` must hold at least one key;
    /// [`Config`](crate::config::Config) ensures it.
    pub fn new(keys: Vec<Vec<u8>>) -> Self {
        Self {
            keys: keys.into_iter().map(SecretSlice::from).collect(),
            preset: Preset::ReservationSystem,
        }
    }

    /// The same keys, checked in the headers `preset` names. The keys are used as given:
    /// decoding a Base64 secret is the configuration's job.
    pub fn with_preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    /// How these keys' signatures are sent.
    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// Checks the signature header of a request against its raw body.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        self.verify_key(headers, body).map(|_| ())
    }

    /// Checks the signature header of a request against its raw body, and says which key
    /// matched.
    pub fn verify_key(&self, headers: &HeaderMap, body: &[u8]) -> Result<KeyId, SignatureError> {
        let header = self
            .preset
            .headers()
            .iter()
            .find_map(|name| headers.get(*name))
            .ok_or(SignatureError::Missing(self.preset.expected()))?;
        let tag = decode_tag(header.as_bytes())?;
        self.keys
            .iter()
            .find(|key| {
                mac(key.expose_secret(), body)
                    .verify_slice(&tag[..])
                    .is_ok()
            })
            .map(|key| key_id(key.expose_secret()))
            .ok_or(SignatureError::Mismatch)
    }

    /// The `X-Webhook-Signature` value for `body` signed with the key `id` names (the first
    /// key when `None`); `None` when no configured key has that id any more.
    pub fn sign_with(&self, id: Option<&str>, body: &[u8]) -> Option<String> {
        let key = match id {
            None => &self.keys[0],
            Some(id) => self.keys.iter().find(|k| key_id(k.expose_secret()) == id)?,
        };
        Some(STANDARD.encode(mac(key.expose_secret(), body).finalize().into_bytes()))
    }

    /// The `X-Webhook-Signature` value for `body`, signed with the first key: what the
    /// reservation system's back end checks on reports, whatever the preset.
    pub fn sign(&self, body: &[u8]) -> String {
        STANDARD.encode(self.tag(body))
    }

    /// The header and value a sender of this preset would put on `body`, for `send`.
    pub fn signature_header(&self, body: &[u8]) -> (&'static str, String) {
        match self.preset {
            Preset::ReservationSystem => (SIGNATURE_HEADER, self.sign(body)),
            Preset::Github | Preset::AgentRegistry => (
                HUB_SIGNATURE_HEADER,
                format!("sha256={}", hex::encode(self.tag(body))),
            ),
        }
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        mac(self.keys[0].expose_secret(), body)
            .finalize()
            .into_bytes()
            .into()
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keys([{} redacted], {})",
            self.keys.len(),
            self.preset.as_str()
        )
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
    fn the_key_that_verified_an_event_signs_its_reports() {
        let both = Keys::new(vec![b"new".to_vec(), b"old".to_vec()]);
        let by_old = keys("old").sign(b"body");
        let id = both
            .verify_key(&headers(SIGNATURE_HEADER, &by_old), b"body")
            .unwrap();
        assert_eq!(both.sign_with(Some(&id), b"body"), Some(by_old));
        assert_eq!(both.sign_with(None, b"body"), Some(both.sign(b"body")));
        let new_id = both
            .verify_key(&headers(SIGNATURE_HEADER, &both.sign(b"body")), b"body")
            .unwrap();
        assert_ne!(id, new_id);
        assert_eq!(keys("new").sign_with(Some(&id), b"body"), None);
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
        assert!(matches!(
            k.verify(&HeaderMap::new(), b""),
            Err(SignatureError::Missing(_))
        ));
    }

    #[test]
    fn a_hub_preset_looks_only_at_x_hub_signature_256_and_signs_there() {
        let k = keys("s").with_preset(Preset::Github);
        let (name, value) = k.signature_header(b"{}");
        assert_eq!(name, HUB_SIGNATURE_HEADER);
        assert!(value.starts_with("sha256=") && value.len() == 71, "{value}");
        assert_eq!(
            k.verify(&headers(HUB_SIGNATURE_HEADER, &value), b"{}"),
            Ok(())
        );
        let err = k
            .verify(&headers(SIGNATURE_HEADER, &k.sign(b"{}")), b"{}")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing signature: send X-Hub-Signature-256: sha256=<hex>"
        );
    }

    #[test]
    fn presets_are_read_by_name_ignoring_case() {
        for p in Preset::ALL {
            assert_eq!(
                Preset::parse(&format!(" {} ", p.as_str().to_uppercase())),
                Some(p)
            );
        }
        assert_eq!(Preset::parse("gitlab"), None);
    }
}
