//! HMAC-SHA256 signatures on raw bodies: checking inbound events, signing reports.
//!
//! The reservation system sends `X-Webhook-Signature: <Base64 of HMAC-SHA256(secret, body)>`
//! with the secret's UTF-8 bytes as the key. Lower-case hex, a `sha256=` prefix and the
//! GitHub-style `X-Hub-Signature-256` header are accepted too. A [`Preset`] names the other
//! senders' conventions (`SIGNATURE_PRESET`), among them Standard Webhooks
//! (<https://www.standardwebhooks.com>), whose signature covers a message id and a timestamp
//! as well as the body, and whose timestamp is checked here, as part of the signature. Every
//! configured key is tried, so a secret can be rotated without dropping events.

use std::time::Duration;

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
/// Standard Webhooks: the message's id, the same on every retry of the message.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// Standard Webhooks: when this attempt was sent, in whole seconds since the Unix epoch.
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks: the signatures, space-separated, each `v1,<Base64>` (or another
/// version's, which is skipped).
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";
/// How Standard Webhooks writes a secret: `whsec_` and the key in Base64.
pub const WHSEC_PREFIX: &str = "whsec_";

/// Length of an HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;

/// How far `webhook-timestamp` may be from the clock when [`Keys::with_tolerance`] was not
/// called: the reference libraries' five minutes, which is `REPLAY_TOLERANCE`'s default too.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The signature entries of one `webhook-signature` that are looked at: a sender signs with
/// one key, or two during a rotation; more than this are ignored, so that a header full of
/// entries costs no more than a few comparisons.
const MAX_ENTRIES: usize = 8;

/// A sender's signing convention: which headers carry the signature, what it covers, and how
/// the secret becomes the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The reservation system: `X-Webhook-Signature` (Base64), the secret's UTF-8 bytes as
    /// the key. `X-Hub-Signature-256` is accepted too.
    ReservationSystem,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`, the secret's UTF-8 bytes as the key.
    Github,
    /// Agent registries: `X-Hub-Signature-256: sha256=<hex>`, the secret Base64-decoded first.
    AgentRegistry,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<Base64
    /// of HMAC-SHA256 over "{id}.{timestamp}.{body}">`; the key is a `whsec_<Base64>` secret
    /// decoded, any other secret's UTF-8 bytes ([`standard_webhooks_key`]).
    StandardWebhooks,
}

impl Preset {
    /// Every preset, as `SIGNATURE_PRESET` names them.
    pub const ALL: [Preset; 4] = [
        Self::ReservationSystem,
        Self::Github,
        Self::AgentRegistry,
        Self::StandardWebhooks,
    ];

    /// The name `SIGNATURE_PRESET` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservationSystem => "reservation-system",
            Self::Github => "github",
            Self::AgentRegistry => "agent-registry",
            Self::StandardWebhooks => "standard-webhooks",
        }
    }

    /// Reads a `SIGNATURE_PRESET` value, ignoring case and surrounding spaces.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text))
    }

    /// Whether every configured secret is Base64 text to decode into the key. Standard
    /// Webhooks decides per secret, by its `whsec_` prefix, so it says `false` here.
    pub fn decodes_secret(self) -> bool {
        self == Self::AgentRegistry
    }

    /// The headers a one-header signature is looked for in, in order.
    fn headers(self) -> &'static [&'static str] {
        match self {
            Self::ReservationSystem => &[SIGNATURE_HEADER, HUB_SIGNATURE_HEADER],
            Self::Github | Self::AgentRegistry => &[HUB_SIGNATURE_HEADER],
            Self::StandardWebhooks => &[WEBHOOK_SIGNATURE_HEADER],
        }
    }

    /// What a request without a signature is told to send.
    fn expected(self) -> &'static str {
        match self {
            Self::ReservationSystem => "X-Webhook-Signature (or X-Hub-Signature-256)",
            Self::Github | Self::AgentRegistry => "X-Hub-Signature-256: sha256=<hex>",
            Self::StandardWebhooks => "webhook-id, webhook-timestamp and webhook-signature",
        }
    }
}

/// The HMAC key a Standard Webhooks secret stands for: a `whsec_<Base64>` secret decoded
/// (its padding optional, as the reference libraries take it), any other secret's UTF-8
/// bytes; `None` for a `whsec_` secret whose rest is not Base64.
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    match secret.strip_prefix(WHSEC_PREFIX) {
        Some(encoded) => LENIENT.decode(encoded).ok(),
        None => Some(secret.as_bytes().to_vec()),
    }
}

/// Why a request's signature was refused. Every variant is a 401: a Standard Webhooks
/// timestamp outside the tolerance too, as the spec's receivers refuse it.
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
    /// Standard Webhooks: one of its three headers is missing or empty.
    #[error(
        "missing {0} header: Standard Webhooks senders send webhook-id, webhook-timestamp and webhook-signature"
    )]
    MissingHeader(&'static str),
    /// Standard Webhooks: `webhook-timestamp` is not a whole number of seconds.
    #[error("webhook-timestamp is not a whole number of seconds since the Unix epoch")]
    NotATimestamp,
    /// Standard Webhooks: `webhook-timestamp` is older than the tolerance: a replay, or a
    /// sender whose clock is behind.
    #[error(
        "webhook-timestamp is {} old, more than REPLAY_TOLERANCE ({}) allows",
        humantime::format_duration(*.age),
        humantime::format_duration(*.tolerance)
    )]
    TooOld {
        /// How far behind the clock it is.
        age: Duration,
        /// The tolerance it is outside of.
        tolerance: Duration,
    },
    /// Standard Webhooks: `webhook-timestamp` is further ahead of the clock than the
    /// tolerance.
    #[error(
        "webhook-timestamp is {} in the future, more than REPLAY_TOLERANCE ({}) allows",
        humantime::format_duration(*.ahead),
        humantime::format_duration(*.tolerance)
    )]
    TooNew {
        /// How far ahead of the clock it is.
        ahead: Duration,
        /// The tolerance it is outside of.
        tolerance: Duration,
    },
    /// Standard Webhooks: `webhook-signature` has no `v1,` entry (only other versions').
    #[error(
        "webhook-signature has no v1,<Base64> entry: only HMAC-SHA256 (v1) signatures are accepted"
    )]
    NoV1,
    /// Standard Webhooks: no `v1,` entry is Base64 of 32 bytes.
    #[error("malformed webhook-signature: no v1 entry is Base64 of a 32-byte HMAC-SHA256")]
    MalformedV1,
    /// Standard Webhooks: no `v1,` entry is any key's signature of this id, timestamp and body.
    #[error(
        "webhook-signature does not match: no v1 entry signs this webhook-id, webhook-timestamp and body"
    )]
    NoMatch,
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

/// What a verified signature says besides that the body is genuine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The key that signed it: reports about it are signed with the same key.
    pub key_id: KeyId,
    /// The signed id and time of a Standard Webhooks message; `None` with the other presets,
    /// whose signature covers the body alone.
    pub message: Option<Message>,
}

/// A Standard Webhooks message's signed id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `webhook-id`: the same on every retry of the message, so it names the message.
    pub id: String,
    /// `webhook-timestamp`, in seconds since the Unix epoch: within the tolerance.
    pub timestamp: i64,
}

/// The keys a webhook accepts signatures from, and the preset saying where to find them.
/// Reports are signed with the key that verified the event they report on, or the first
/// key.
#[derive(Clone)]
pub struct Keys {
    keys: Vec<SecretSlice<u8>>,
    preset: Preset,
    /// How far a Standard Webhooks timestamp may be from the clock, either way.
    tolerance: Duration,
}

impl Keys {
    /// Keys for the reservation system's convention. `keys` must hold at least one key;
    /// [`Config`](crate::config::Config) ensures it.
    pub fn new(keys: Vec<Vec<u8>>) -> Self {
        Self {
            keys: keys.into_iter().map(SecretSlice::from).collect(),
            preset: Preset::ReservationSystem,
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// The same keys, checked in the headers `preset` names. The keys are used as given:
    /// decoding a Base64 secret is the configuration's job.
    pub fn with_preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    /// How far a Standard Webhooks `webhook-timestamp` may be from the clock, either way
    /// (`REPLAY_TOLERANCE`; five minutes unless set).
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// How these keys' signatures are sent.
    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// Checks the signature of a request against its raw body.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        self.verify_key(headers, body).map(|_| ())
    }

    /// Checks the signature of a request against its raw body, and says which key matched.
    pub fn verify_key(&self, headers: &HeaderMap, body: &[u8]) -> Result<KeyId, SignatureError> {
        self.verify_delivery(headers, body).map(|v| v.key_id)
    }

    /// Checks the signature of a request against its raw body, now, and says which key
    /// matched and, with Standard Webhooks, the message's id and time.
    pub fn verify_delivery(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Verified, SignatureError> {
        self.verify_delivery_at(headers, body, chrono::Utc::now().timestamp())
    }

    /// [`verify_delivery`](Self::verify_delivery) with the clock at `now` (seconds since the
    /// Unix epoch).
    pub fn verify_delivery_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, SignatureError> {
        match self.preset {
            Preset::StandardWebhooks => self.verify_standard(headers, body, now),
            _ => self
                .verify_one_header(headers, body)
                .map(|key_id| Verified {
                    key_id,
                    message: None,
                }),
        }
    }

    fn verify_one_header(&self, headers: &HeaderMap, body: &[u8]) -> Result<KeyId, SignatureError> {
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

    /// Standard Webhooks: the three headers, the timestamp within the tolerance, then any
    /// `v1` entry signed by any key. The cheap refusals come before any MAC is computed.
    fn verify_standard(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, SignatureError> {
        let present = |name: &'static str| {
            headers
                .get(name)
                .map(|v| v.as_bytes().trim_ascii())
                .filter(|v| !v.is_empty())
                .ok_or(SignatureError::MissingHeader(name))
        };
        let id = present(WEBHOOK_ID_HEADER)?;
        let timestamp = parse_timestamp(present(WEBHOOK_TIMESTAMP_HEADER)?)?;
        let signatures = present(WEBHOOK_SIGNATURE_HEADER)?;
        self.check_timestamp(timestamp, now)?;
        let mut versioned = false;
        let tags: Vec<[u8; TAG_LEN]> = signatures
            .split(|b| *b == b' ')
            .filter_map(|entry| entry.strip_prefix(b"v1,"))
            .inspect(|_| versioned = true)
            .take(MAX_ENTRIES)
            .filter_map(decode_base64_tag)
            .collect();
        if !versioned {
            return Err(SignatureError::NoV1);
        }
        if tags.is_empty() {
            return Err(SignatureError::MalformedV1);
        }
        let timestamp_text = timestamp.to_string();
        self.keys
            .iter()
            .find(|key| {
                let mut signed = mac(key.expose_secret(), id);
                signed.update(b".");
                signed.update(timestamp_text.as_bytes());
                signed.update(b".");
                signed.update(body);
                tags.iter()
                    .any(|tag| signed.clone().verify_slice(&tag[..]).is_ok())
            })
            .map(|key| Verified {
                key_id: key_id(key.expose_secret()),
                message: Some(Message {
                    id: String::from_utf8_lossy(id).into_owned(),
                    timestamp,
                }),
            })
            .ok_or(SignatureError::NoMatch)
    }

    /// Refuses a timestamp further than the tolerance from `now`, either way.
    fn check_timestamp(&self, timestamp: i64, now: i64) -> Result<(), SignatureError> {
        let tolerance = self.tolerance;
        let off = Duration::from_secs(now.abs_diff(timestamp));
        match off > tolerance {
            false => Ok(()),
            true if timestamp < now => Err(SignatureError::TooOld {
                age: off,
                tolerance,
            }),
            true => Err(SignatureError::TooNew {
                ahead: off,
                tolerance,
            }),
        }
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

    /// The header and value a sender of a one-header preset would put on `body`.
    #[deprecated(note = "use `sender_headers`: standard-webhooks needs three headers")]
    pub fn signature_header(&self, body: &[u8]) -> (&'static str, String) {
        match self.preset {
            Preset::ReservationSystem => (SIGNATURE_HEADER, self.sign(body)),
            Preset::Github | Preset::AgentRegistry => (
                HUB_SIGNATURE_HEADER,
                format!("sha256={}", hex::encode(self.tag(body))),
            ),
            // Alone, a signature over an id and a time it does not give is of no use.
            Preset::StandardWebhooks => (WEBHOOK_SIGNATURE_HEADER, String::new()),
        }
    }

    /// Every header a sender of this preset puts on `body`, signed with the first key, for
    /// `send`: with Standard Webhooks a fresh `msg_<random>` id, the current time and the
    /// `v1,` signature; with the others their one signature header.
    pub fn sender_headers(&self, body: &[u8]) -> Vec<(&'static str, String)> {
        match self.preset {
            Preset::ReservationSystem => vec![(SIGNATURE_HEADER, self.sign(body))],
            Preset::Github | Preset::AgentRegistry => vec![(
                HUB_SIGNATURE_HEADER,
                format!("sha256={}", hex::encode(self.tag(body))),
            )],
            Preset::StandardWebhooks => {
                self.standard_headers(&new_message_id(), chrono::Utc::now().timestamp(), body)
            }
        }
    }

    /// The Standard Webhooks headers of message `id` sent at `timestamp` (seconds since the
    /// Unix epoch) with `body`, signed with the first key.
    pub fn standard_headers(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        let timestamp = timestamp.to_string();
        let mut signed = mac(self.keys[0].expose_secret(), id.as_bytes());
        signed.update(b".");
        signed.update(timestamp.as_bytes());
        signed.update(b".");
        signed.update(body);
        let signature = format!("v1,{}", STANDARD.encode(signed.finalize().into_bytes()));
        vec![
            (WEBHOOK_ID_HEADER, id.to_owned()),
            (WEBHOOK_TIMESTAMP_HEADER, timestamp),
            (WEBHOOK_SIGNATURE_HEADER, signature),
        ]
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

/// A Standard Webhooks message id for `send`: `msg_` and 16 random bytes in hex, unique
/// without coordination.
fn new_message_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system gives random bytes");
    format!("msg_{}", hex::encode(bytes))
}

/// Reads `webhook-timestamp`: ASCII digits, as the spec's integer (a sign or a fraction is
/// refused).
fn parse_timestamp(value: &[u8]) -> Result<i64, SignatureError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(SignatureError::NotATimestamp);
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(SignatureError::NotATimestamp)
}

/// Decodes a signature header value: `[sha256=]<Base64 or hex>`.
fn decode_tag(value: &[u8]) -> Result<[u8; TAG_LEN], SignatureError> {
    let value = value.trim_ascii();
    let value = value.strip_prefix(b"sha256=").unwrap_or(value);
    let mut tag = [0u8; TAG_LEN];
    if value.len() == 2 * TAG_LEN {
        hex::decode_to_slice(value, &mut tag).map_err(|_| SignatureError::Malformed)?;
    } else {
        tag = decode_base64_tag(value).ok_or(SignatureError::Malformed)?;
    }
    Ok(tag)
}

/// Decodes the Base64 of a 32-byte tag; `None` for anything else.
fn decode_base64_tag(value: &[u8]) -> Option<[u8; TAG_LEN]> {
    // Room for what 44 Base64 characters can hold; longer input fails as too big.
    let mut buf = [0u8; 48];
    let n = STANDARD.decode_slice(value, &mut buf).ok()?;
    (n == TAG_LEN).then(|| buf[..TAG_LEN].try_into().expect("32 bytes"))
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
        let [(name, value)] = &k.sender_headers(b"{}")[..] else {
            panic!("one header");
        };
        let (name, value) = (*name, value.clone());
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

    /// The reference libraries' own test vector: their secret (24 bytes once decoded), id,
    /// timestamp and body, and the signature they expect.
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1614265330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn standard(secrets: &[&str]) -> Keys {
        Keys::new(
            secrets
                .iter()
                .map(|s| standard_webhooks_key(s).expect("a valid secret"))
                .collect(),
        )
        .with_preset(Preset::StandardWebhooks)
    }

    fn standard_headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in [
            (WEBHOOK_ID_HEADER, id),
            (WEBHOOK_TIMESTAMP_HEADER, timestamp),
            (WEBHOOK_SIGNATURE_HEADER, signature),
        ] {
            h.insert(name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn vector_headers(signature: &str) -> HeaderMap {
        standard_headers(VECTOR_ID, &VECTOR_TIMESTAMP.to_string(), signature)
    }

    fn verify_vector(keys: &Keys, headers: &HeaderMap) -> Result<Verified, SignatureError> {
        keys.verify_delivery_at(headers, VECTOR_BODY, VECTOR_TIMESTAMP)
    }

    #[test]
    fn a_whsec_secret_is_base64_decoded_with_or_without_padding_and_others_are_raw_bytes() {
        assert_eq!(
            standard_webhooks_key(VECTOR_SECRET).map(|k| k.len()),
            Some(24)
        );
        let key = [7u8; 32];
        let padded = format!("whsec_{}", STANDARD.encode(key));
        assert!(padded.ends_with('='));
        assert_eq!(standard_webhooks_key(&padded).as_deref(), Some(&key[..]));
        assert_eq!(
            standard_webhooks_key(padded.trim_end_matches('=')).as_deref(),
            Some(&key[..])
        );
        assert_eq!(
            standard_webhooks_key("a-raw-secret").as_deref(),
            Some(&b"a-raw-secret"[..])
        );
        assert_eq!(standard_webhooks_key("whsec_not base64!"), None);
    }

    #[test]
    fn the_reference_vector_verifies_and_names_the_message() {
        let keys = standard(&[VECTOR_SECRET]);
        let verified = verify_vector(&keys, &vector_headers(VECTOR_SIGNATURE)).unwrap();
        assert_eq!(
            verified.message,
            Some(Message {
                id: VECTOR_ID.to_owned(),
                timestamp: VECTOR_TIMESTAMP
            })
        );
        assert_eq!(
            keys.standard_headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
            [
                (WEBHOOK_ID_HEADER, VECTOR_ID.to_owned()),
                (WEBHOOK_TIMESTAMP_HEADER, VECTOR_TIMESTAMP.to_string()),
                (WEBHOOK_SIGNATURE_HEADER, VECTOR_SIGNATURE.to_owned()),
            ]
        );
    }

    #[test]
    fn the_signature_covers_the_id_the_timestamp_and_the_body() {
        let keys = standard(&[VECTOR_SECRET]);
        let t = VECTOR_TIMESTAMP;
        let other_id = standard_headers("msg_other", &t.to_string(), VECTOR_SIGNATURE);
        let other_time = standard_headers(VECTOR_ID, &(t + 1).to_string(), VECTOR_SIGNATURE);
        for headers in [other_id, other_time] {
            assert_eq!(
                keys.verify_delivery_at(&headers, VECTOR_BODY, t),
                Err(SignatureError::NoMatch)
            );
        }
        assert_eq!(
            keys.verify_delivery_at(&vector_headers(VECTOR_SIGNATURE), b"{}", t),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn in_a_rotation_any_entry_may_match_any_key_and_other_versions_are_skipped() {
        let new = format!("whsec_{}", STANDARD.encode([1u8; 32]));
        let old = standard(&[VECTOR_SECRET]);
        let by_new = standard(&[&new]).standard_headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
            [2]
        .1
        .clone();
        let v1a = "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==";
        // The sender signs with its new and its old key; this receiver has only the old one.
        for header in [
            format!("{by_new} {VECTOR_SIGNATURE}"),
            format!("{v1a} {VECTOR_SIGNATURE}"),
            format!("v1,not-base64 {VECTOR_SIGNATURE}"),
        ] {
            assert!(
                verify_vector(&old, &vector_headers(&header)).is_ok(),
                "{header}"
            );
        }
        // This receiver has both keys, the sender only the old one.
        let both = standard(&[&new, VECTOR_SECRET]);
        let verified = verify_vector(&both, &vector_headers(VECTOR_SIGNATURE)).unwrap();
        assert_eq!(
            verified.key_id,
            key_id(&standard_webhooks_key(VECTOR_SECRET).unwrap())
        );
        assert_eq!(
            verify_vector(&old, &vector_headers(&by_new)),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn each_refusal_names_the_header_that_is_missing_or_wrong() {
        let keys = standard(&[VECTOR_SECRET]);
        let t = &VECTOR_TIMESTAMP.to_string();
        let without = |name: &str| {
            let mut h = vector_headers(VECTOR_SIGNATURE);
            h.remove(name);
            h
        };
        let cases = [
            (
                without(WEBHOOK_ID_HEADER),
                "missing webhook-id header: Standard Webhooks senders send webhook-id, webhook-timestamp and webhook-signature",
            ),
            (
                standard_headers(" ", t, VECTOR_SIGNATURE),
                "missing webhook-id header: Standard Webhooks senders send webhook-id, webhook-timestamp and webhook-signature",
            ),
            (
                without(WEBHOOK_TIMESTAMP_HEADER),
                "missing webhook-timestamp header: Standard Webhooks senders send webhook-id, webhook-timestamp and webhook-signature",
            ),
            (
                without(WEBHOOK_SIGNATURE_HEADER),
                "missing webhook-signature header: Standard Webhooks senders send webhook-id, webhook-timestamp and webhook-signature",
            ),
            (
                standard_headers(VECTOR_ID, "2021-02-25T15:02:10Z", VECTOR_SIGNATURE),
                "webhook-timestamp is not a whole number of seconds since the Unix epoch",
            ),
            (
                standard_headers(VECTOR_ID, "1614265330.5", VECTOR_SIGNATURE),
                "webhook-timestamp is not a whole number of seconds since the Unix epoch",
            ),
            (
                standard_headers(VECTOR_ID, "99999999999999999999", VECTOR_SIGNATURE),
                "webhook-timestamp is not a whole number of seconds since the Unix epoch",
            ),
            (
                vector_headers("v1a,abc v2,def"),
                "webhook-signature has no v1,<Base64> entry: only HMAC-SHA256 (v1) signatures are accepted",
            ),
            (
                vector_headers(&VECTOR_SIGNATURE[3..]),
                "webhook-signature has no v1,<Base64> entry: only HMAC-SHA256 (v1) signatures are accepted",
            ),
            (
                vector_headers("v1,AAAA v1,not!base64"),
                "malformed webhook-signature: no v1 entry is Base64 of a 32-byte HMAC-SHA256",
            ),
            (
                vector_headers(&format!("v1,{}", STANDARD.encode([0u8; 32]))),
                "webhook-signature does not match: no v1 entry signs this webhook-id, webhook-timestamp and body",
            ),
        ];
        for (headers, message) in cases {
            let err = verify_vector(&keys, &headers).unwrap_err();
            assert_eq!(err.to_string(), message, "{headers:?}");
            use poem::error::ResponseError as _;
            assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn a_timestamp_beyond_the_tolerance_either_way_is_refused_saying_by_how_much() {
        let keys = standard(&[VECTOR_SECRET]).with_tolerance(Duration::from_secs(300));
        let headers = vector_headers(VECTOR_SIGNATURE);
        let at =
            |offset: i64| keys.verify_delivery_at(&headers, VECTOR_BODY, VECTOR_TIMESTAMP + offset);

        assert!(at(300).is_ok());
        assert!(at(-300).is_ok());
        let old = at(301 + 600).unwrap_err();
        assert_eq!(
            old.to_string(),
            "webhook-timestamp is 15m 1s old, more than REPLAY_TOLERANCE (5m) allows"
        );
        let new = at(-3600).unwrap_err();
        assert_eq!(
            new.to_string(),
            "webhook-timestamp is 1h in the future, more than REPLAY_TOLERANCE (5m) allows"
        );
        // Refused before the signature is looked at.
        let forged = vector_headers("v1,AAAA");
        assert!(matches!(
            keys.verify_delivery_at(&forged, VECTOR_BODY, VECTOR_TIMESTAMP + 3600),
            Err(SignatureError::TooOld { .. })
        ));
    }

    #[test]
    fn standard_webhooks_senders_get_a_fresh_id_and_the_current_time() {
        let keys = standard(&[VECTOR_SECRET]);
        let first = keys.sender_headers(b"{}");
        let second = keys.sender_headers(b"{}");
        let names: Vec<&str> = first.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                WEBHOOK_ID_HEADER,
                WEBHOOK_TIMESTAMP_HEADER,
                WEBHOOK_SIGNATURE_HEADER
            ]
        );
        assert!(
            first[0].1.starts_with("msg_") && first[0].1.len() == 36,
            "{first:?}"
        );
        assert_ne!(first[0].1, second[0].1);
        let mut headers = HeaderMap::new();
        for (name, value) in &first {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        let verified = keys.verify_delivery(&headers, b"{}").unwrap();
        assert_eq!(verified.message.unwrap().id, first[0].1);
        // Reports stay signed the reservation system's way.
        assert_eq!(keys.sign(b"{}").len(), 44);
    }
}
