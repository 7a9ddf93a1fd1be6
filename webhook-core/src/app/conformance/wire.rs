//! Sending: each body signed as the sender signs it (or deliberately not), posted with a
//! length or in chunks without one, its reply timed and judged; and the bookings a delivery
//! may have started, kept until an END for them is answered 2xx, so that the run ends them
//! all whatever the webhook answered.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{Duration, Utc};
use secrecy::ExposeSecret as _;
use serde_json::Value;

use super::Target;
use super::bodies::{self, Booking, Flat, Numbered};
use super::report::{CaseResult, Expect, Report, Verdict};
use crate::contract::signature::Keys;

/// The header the reservation system signs with (Base64, or hex).
const SIGNATURE: &str = "X-Webhook-Signature";
/// The GitHub / agent-registry header, `sha256=<hex>`.
const HUB_SIGNATURE: &str = "X-Hub-Signature-256";
/// Where the back end's numbering of test bookings and resources starts: far above any real
/// id, and below 2^53, so a JavaScript webhook reads it exactly.
const NUMBERED_BASE: i64 = 8_000_000_000_000_000;
/// The pieces a large body is sent in, and the pause after each.
const PIECE: usize = 32 * 1024;
const PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// How a delivery is signed.
#[derive(Debug, Clone)]
pub(super) enum Signing {
    /// As the sender does: Base64 of HMAC-SHA256 in `X-Webhook-Signature`.
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
    timed: bool,
    starts: Vec<Booking>,
    ends: Vec<String>,
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

/// A run in progress: the client, the keys, the next fresh id, the bookings still open and
/// the results so far.
pub(super) struct Session<'a> {
    target: &'a Target,
    client: reqwest::Client,
    keys: Keys,
    wrong: Keys,
    run_id: String,
    run_number: i64,
    count: i64,
    open: Vec<Booking>,
    results: Vec<CaseResult>,
}

impl<'a> Session<'a> {
    pub fn new(target: &'a Target) -> anyhow::Result<Self> {
        let random = crate::engine::ledger::random();
        let run_id = format!("{:08x}", random as u32);
        let client = reqwest::Client::builder()
            // A redirect would carry the signed body elsewhere; the senders follow none.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(target.timeout)
            .build()?;
        let key = target.secret.expose_secret().as_bytes().to_vec();
        let wrong = format!("conformance-{run_id}-not-the-webhooks-secret").into_bytes();
        Ok(Self {
            target,
            client,
            keys: Keys::new(vec![key]),
            wrong: Keys::new(vec![wrong]),
            run_id,
            run_number: ((random >> 32) % 1_000_000_000) as i64,
            count: 0,
            open: Vec::new(),
            results: Vec::new(),
        })
    }

    fn next(&mut self) -> i64 {
        self.count += 1;
        self.count
    }

    /// A fresh booking of the webhook's resource type, starting now for half an hour.
    pub fn booking(&mut self, flat: Flat) -> Booking {
        let n = self.next();
        let now = Utc::now();
        Booking {
            id: format!("conformance-{}-{n}", self.run_id),
            resource_id: NUMBERED_BASE + self.run_number * 1000 + n,
            resource_name: format!("conformance-test-{}-{n}", self.run_id),
            resource_type: match flat {
                Flat::OtherType => "conformance-test-other-type".to_owned(),
                _ => self.target.resource_type.clone(),
            },
            start: now,
            end: now + Duration::minutes(30),
            flat,
        }
    }

    /// A fresh booking and resource in the back end's numbering, of the webhook's type.
    pub fn numbered(&mut self) -> Numbered {
        let n = self.next();
        let id = NUMBERED_BASE + self.run_number * 1000 + n;
        Numbered {
            id,
            resource_id: id,
            resource_name: format!("conformance-test-{}-{n}", self.run_id),
            resource_type: self.target.resource_type.clone(),
        }
    }

    /// Sends `delivery` as case `case`, judges the reply against `expect` (and the latency
    /// budget, if timed), and records the result.
    pub async fn send(&mut self, case: impl Into<String>, expect: Expect, delivery: Delivery) {
        let started = Instant::now();
        let answer = self.post(&delivery).await;
        let latency = started.elapsed();
        let budget = self.target.latency_budget;
        let mut expected = expect.to_string();
        if delivery.timed {
            expected.push_str(&format!(" within {}", humantime::format_duration(budget)));
        }
        let (got, reason) = match &answer {
            Ok((code, word)) => {
                let got = match word {
                    Some(word) => format!("{code} {word:?}"),
                    None => code.to_string(),
                };
                let mut wrong = Vec::new();
                if !expect.met_by(*code, word.as_deref()) {
                    wrong.push(format!("expected {expect}"));
                }
                if delivery.timed && latency > budget {
                    wrong.push(format!(
                        "slower than the {} budget",
                        humantime::format_duration(budget)
                    ));
                }
                (got, (!wrong.is_empty()).then(|| wrong.join("; ")))
            }
            Err(why) => (
                why.clone(),
                Some(format!("expected {expect}, got no reply")),
            ),
        };
        self.keep_track(&delivery, answer.as_ref().ok().map(|(code, _)| *code));
        self.results.push(CaseResult {
            case: case.into(),
            expected,
            got,
            latency,
            verdict: if reason.is_none() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            reason,
        });
    }

    /// A refused delivery (4xx) started nothing; any other may have. A 2xx END ended its
    /// bookings.
    fn keep_track(&mut self, delivery: &Delivery, code: Option<u16>) {
        if !code.is_some_and(|c| (400..500).contains(&c)) {
            for b in &delivery.starts {
                if !self.open.iter().any(|o| o.id == b.id) {
                    self.open.push(b.clone());
                }
            }
        }
        if code.is_some_and(|c| (200..300).contains(&c)) {
            self.open.retain(|b| !delivery.ends.contains(&b.id));
        }
    }

    /// Posts `delivery`: the status and the reply's `status` field, or why no reply came.
    async fn post(&self, delivery: &Delivery) -> Result<(u16, Option<String>), String> {
        let mut request = self
            .client
            .post(&self.target.url)
            .header("Content-Type", "application/json");
        if let Some((name, value)) = self.signature(delivery) {
            request = request.header(name, value);
        }
        let body = match delivery.sending {
            Sending::Whole => reqwest::Body::from(delivery.body.clone()),
            Sending::Paced => reqwest::Body::wrap(Paced::new(&delivery.body, true)),
            Sending::Chunked => reqwest::Body::wrap(Paced::new(&delivery.body, false)),
        };
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| self.describe(&e))?;
        let code = response.status().as_u16();
        let text = response.bytes().await.map_err(|e| self.describe(&e))?;
        let word = serde_json::from_slice::<Value>(&text)
            .ok()
            .and_then(|v| v.get("status")?.as_str().map(str::to_owned));
        Ok((code, word))
    }

    fn signature(&self, delivery: &Delivery) -> Option<(&'static str, String)> {
        let body = &delivery.body;
        let hex = || {
            let tag = STANDARD
                .decode(self.keys.sign(body))
                .expect("a signature is Base64");
            hex::encode(tag)
        };
        Some(match &delivery.signing {
            Signing::Base64 => (SIGNATURE, self.keys.sign(body)),
            Signing::Hex => (SIGNATURE, hex()),
            Signing::Hub => (HUB_SIGNATURE, format!("sha256={}", hex())),
            Signing::WrongSecret => (SIGNATURE, self.wrong.sign(body)),
            Signing::Missing => return None,
            Signing::Over(other) => (SIGNATURE, self.keys.sign(other)),
            Signing::Garbage => (SIGNATURE, "not-a-signature".to_owned()),
        })
    }

    /// Why no reply came, in a few words and the causes.
    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!(
                "no reply within {}",
                humantime::format_duration(self.target.timeout)
            );
        }
        let mut text = if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            "no reply".to_owned()
        };
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    /// Ends every booking still open (each an `EVENT_END`, reported as a case of its own),
    /// and returns the report.
    pub async fn finish(mut self) -> Report {
        for b in std::mem::take(&mut self.open) {
            let end = Delivery::json(&bodies::end(&b, Utc::now()))
                .timed()
                .ending(&b);
            self.send(
                format!("cleanup: EVENT_END of {}", b.id),
                Expect::Success,
                end,
            )
            .await;
        }
        Report {
            run_id: self.run_id,
            results: self.results,
        }
    }
}
