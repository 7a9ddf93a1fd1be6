//! One request to the webhook: its body, how it is signed (as the sender signs, or
//! deliberately not), how the body goes on the wire (whole, or in paced pieces with or
//! without a length), and the bookings it may start or end.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::Value;

use super::bodies::Booking;
use crate::contract::signature::{Keys, Preset};

/// The header the reservation system signs with (Base64, or hex).
const SIGNATURE: &str = "X-Webhook-Signature";
/// The GitHub / agent-registry header, `sha256=<hex>`.
const HUB_SIGNATURE: &str = "X-Hub-Signature-256";
/// The Standard Webhooks headers a case changes, as [`Keys::standard_headers`] names them.
const STANDARD_ID: &str = "webhook-id";
const STANDARD_SIGNATURE: &str = "webhook-signature";
/// The pieces a large body is sent in, and the pause after each.
const PIECE: usize = 32 * 1024;
const PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// How a delivery is signed. With Standard Webhooks, the message id and time are fresh for
/// each delivery, and only the forms that preset has apply.
#[derive(Debug, Clone)]
pub(super) enum Signing {
    /// As the sender does: Base64 of HMAC-SHA256 in `X-Webhook-Signature`, or the three
    /// Standard Webhooks headers.
    Base64,
    /// Lower-case hex in `X-Webhook-Signature`.
    Hex,
    /// `sha256=<hex>` in `X-Hub-Signature-256`.
    Hub,
    /// With a secret that is not the webhook's.
    WrongSecret,
    /// Not at all.
    Missing,
    /// Over these bytes instead of the body (a body changed after signing).
    Over(Vec<u8>),
    /// With a header value that is no signature.
    Garbage,
    /// Standard Webhooks: two `v1` signatures, one with another secret (a key rotation).
    Rotation,
    /// Standard Webhooks: without `webhook-id`.
    MissingId,
    /// Standard Webhooks: signed a day ago, a `webhook-timestamp` outside any tolerance.
    Stale,
}

/// How a body goes on the wire.
#[derive(Debug, Clone, Copy)]
enum Sending {
    /// In one piece, with its length.
    Whole,
    /// In pieces, with its length.
    Paced,
    /// In pieces, without a length (`Transfer-Encoding: chunked`).
    Chunked,
}

/// One request to the webhook, and what it means for the bookings it names.
pub(super) struct Delivery {
    body: Vec<u8>,
    signing: Signing,
    sending: Sending,
    /// Its reply must come within the latency budget.
    pub timed: bool,
    /// Bookings it may start, if not refused.
    pub starts: Vec<Booking>,
    /// Bookings it ends, if answered 2xx.
    pub ends: Vec<String>,
}

impl Delivery {
    /// `body` as it is, signed as the sender signs.
    pub fn raw(body: Vec<u8>) -> Self {
        Self {
            body,
            signing: Signing::Base64,
            sending: Sending::Whole,
            timed: false,
            starts: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// `body` as compact JSON, as the senders write it.
    pub fn json(body: &Value) -> Self {
        Self::raw(serde_json::to_vec(body).expect("a JSON value serializes"))
    }

    /// The body's bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn signed(mut self, signing: Signing) -> Self {
        self.signing = signing;
        self
    }

    /// Sent in pieces, with its `Content-Length`.
    pub fn paced(mut self) -> Self {
        self.sending = Sending::Paced;
        self
    }

    /// Sent in pieces, chunked, without `Content-Length`.
    pub fn chunked(mut self) -> Self {
        self.sending = Sending::Chunked;
        self
    }

    /// A START or END as the event processor sends it: the reply must come within the
    /// latency budget.
    pub fn timed(mut self) -> Self {
        self.timed = true;
        self
    }

    /// Accepted, it may start `b`: `b` is ended before the run ends.
    pub fn starting(mut self, b: &Booking) -> Self {
        self.starts.push(b.clone());
        self
    }

    /// Answered 2xx, it ends `b`.
    pub fn ending(mut self, b: &Booking) -> Self {
        self.ends.push(b.id.clone());
        self
    }

    /// The request for `url`, signed with `keys` (or `wrong`, the keys of another secret).
    pub fn request(
        &self,
        client: &reqwest::Client,
        url: &str,
        keys: &Keys,
        wrong: &Keys,
    ) -> reqwest::RequestBuilder {
        let mut request = client.post(url).header("Content-Type", "application/json");
        let headers = match keys.preset() {
            Preset::StandardWebhooks => self.standard_signature(keys, wrong),
            _ => self.signature(keys, wrong).into_iter().collect(),
        };
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let body = match self.sending {
            Sending::Whole => reqwest::Body::from(self.body.clone()),
            Sending::Paced => reqwest::Body::wrap(Paced::new(&self.body, true)),
            Sending::Chunked => reqwest::Body::wrap(Paced::new(&self.body, false)),
        };
        request.body(body)
    }

    fn signature(&self, keys: &Keys, wrong: &Keys) -> Option<(&'static str, String)> {
        let body = &self.body;
        let hex = || {
            let tag = STANDARD
                .decode(keys.sign(body))
                .expect("a signature is Base64");
            hex::encode(tag)
        };
        Some(match &self.signing {
            Signing::Base64 => (SIGNATURE, keys.sign(body)),
            Signing::Hex => (SIGNATURE, hex()),
            Signing::Hub => (HUB_SIGNATURE, format!("sha256={}", hex())),
            Signing::WrongSecret => (SIGNATURE, wrong.sign(body)),
            Signing::Missing => return None,
            Signing::Over(other) => (SIGNATURE, keys.sign(other)),
            Signing::Garbage => (SIGNATURE, "not-a-signature".to_owned()),
            Signing::Rotation | Signing::MissingId | Signing::Stale => {
                unreachable!("only Standard Webhooks deliveries are signed so")
            }
        })
    }

    /// The Standard Webhooks headers of this delivery: a fresh message id and the current
    /// time, unless the case says otherwise.
    fn standard_signature(&self, keys: &Keys, wrong: &Keys) -> Vec<(&'static str, String)> {
        let id = format!("msg_conformance_{:016x}", crate::engine::ledger::random());
        let now = chrono::Utc::now().timestamp();
        let body = &self.body;
        let mut headers = keys.standard_headers(&id, now, body);
        let set = |headers: &mut Vec<(&'static str, String)>, name: &str, value: String| {
            if let Some(h) = headers.iter_mut().find(|(n, _)| *n == name) {
                h.1 = value;
            }
        };
        let signature = |keys: &Keys, at: i64, body: &[u8]| {
            let headers = keys.standard_headers(&id, at, body);
            let (_, value) = headers
                .into_iter()
                .find(|(n, _)| *n == STANDARD_SIGNATURE)
                .expect("a Standard Webhooks signature");
            value
        };
        match &self.signing {
            Signing::Base64 => {}
            Signing::Rotation => {
                let both = format!(
                    "{} {}",
                    signature(wrong, now, body),
                    signature(keys, now, body)
                );
                set(&mut headers, STANDARD_SIGNATURE, both);
            }
            Signing::WrongSecret => headers = wrong.standard_headers(&id, now, body),
            Signing::Missing => headers.clear(),
            Signing::MissingId => headers.retain(|(n, _)| *n != STANDARD_ID),
            Signing::Stale => headers = keys.standard_headers(&id, now - 86_400, body),
            Signing::Over(other) => {
                set(
                    &mut headers,
                    STANDARD_SIGNATURE,
                    signature(keys, now, other),
                );
            }
            Signing::Garbage => {
                set(
                    &mut headers,
                    STANDARD_SIGNATURE,
                    "v1,not-a-signature".to_owned(),
                );
            }
            Signing::Hex | Signing::Hub => {
                unreachable!("Standard Webhooks deliveries are signed only in v1 entries")
            }
        }
        headers
    }
}

/// A large body sent in pieces with a pause after each, with its length announced or not
/// (then HTTP/1.1 sends it chunked). A webhook that refuses it part way answers and closes
/// the connection; the pauses let the client read that answer before its next write fails.
struct Paced {
    pieces: VecDeque<Bytes>,
    length: Option<u64>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Paced {
    fn new(body: &[u8], announce_length: bool) -> Self {
        Self {
            pieces: body.chunks(PIECE).map(Bytes::copy_from_slice).collect(),
            length: announce_length.then_some(body.len() as u64),
            pause: None,
        }
    }
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if let Some(pause) = self.pause.as_mut() {
            std::task::ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        let piece = self.pieces.pop_front();
        if piece.is_some() {
            self.pause = Some(Box::pin(tokio::time::sleep(PAUSE)));
        }
        Poll::Ready(piece.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.length {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}
