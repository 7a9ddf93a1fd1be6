//! A run in progress: fresh ids for its bookings, each delivery sent, timed and judged
//! against what the contract expects, and the bookings a delivery may have started, kept
//! until an END for them is answered 2xx, so that the run ends them all whatever the
//! webhook answered.

use std::time::Instant;

use anyhow::Context as _;
use chrono::{Duration, Utc};
use secrecy::ExposeSecret as _;
use serde_json::Value;

use super::Target;
use super::bodies::{self, Booking, Flat, Numbered};
use super::delivery::Delivery;
use super::report::{CaseResult, Expect, Report, Verdict};
use crate::contract::signature::{Keys, Preset, standard_webhooks_key};

/// Where the back end's numbering of test bookings and resources starts: far above any real
/// id, and below 2^53, so a JavaScript webhook reads it exactly.
const NUMBERED_BASE: i64 = 8_000_000_000_000_000;

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
        let url = reqwest::Url::parse(&target.url)
            .map_err(|e| anyhow::anyhow!("{:?} is not a URL: {e}", target.url))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "{} is not an http:// or https:// URL",
            target.url
        );
        let random = crate::engine::ledger::random();
        let run_id = format!("{:08x}", random as u32);
        let client = reqwest::Client::builder()
            // A redirect would carry the signed body elsewhere; the senders follow none.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(target.timeout)
            .build()?;
        let secret = target.secret.expose_secret();
        let key = match target.preset {
            Preset::StandardWebhooks => standard_webhooks_key(secret)
                .context("the secret starts with whsec_ but the rest is not Base64")?,
            _ => secret.as_bytes().to_vec(),
        };
        let wrong = format!("conformance-{run_id}-not-the-webhooks-secret").into_bytes();
        Ok(Self {
            target,
            client,
            keys: Keys::new(vec![key]).with_preset(target.preset),
            wrong: Keys::new(vec![wrong]).with_preset(target.preset),
            run_id,
            run_number: ((random >> 32) % 1_000_000_000) as i64,
            count: 0,
            open: Vec::new(),
            results: Vec::new(),
        })
    }

    /// How this run signs its deliveries.
    pub fn preset(&self) -> Preset {
        self.target.preset
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
        let request = delivery.request(&self.client, &self.target.url, &self.keys, &self.wrong);
        let response = request.send().await.map_err(|e| self.describe(&e))?;
        let code = response.status().as_u16();
        let text = response.bytes().await.map_err(|e| self.describe(&e))?;
        let word = serde_json::from_slice::<Value>(&text)
            .ok()
            .and_then(|v| v.get("status")?.as_str().map(str::to_owned));
        Ok((code, word))
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
