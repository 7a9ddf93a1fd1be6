//! Delivers the reports stored in the ledger's outbox: signed like inbound events, retried
//! with exponential backoff and jitter while the back end is down or failing, and marked
//! delivered on its first 2xx so none is sent twice.
//!
//! Each report is signed with the key that verified its booking's event: the back end knows
//! one key per `webhookId`, so during a move to a new secret (a new webhook), reports about
//! bookings that came under the old one are signed with the old one. The reply of
//! `WEBHOOK_LOG_ENDPOINT` holds the webhook's secret: its body is never logged or stored.
//!
//! An entry is leased while it is being sent, so replicas sharing a ledger never send the
//! same one. A 4xx other than 408 and 429 will not change by trying again: the entry is
//! marked failed at once; other failures are retried up to [`MAX_ATTEMPTS`] times, then
//! marked failed too. `outbox list` shows every entry's attempts and last status, and
//! `outbox retry <id>` makes a failed one pending again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Endpoint};
use crate::contract::signature::{Keys, SIGNATURE_HEADER};
use crate::engine::ledger::backoff;
use crate::engine::ledger::{self, Attempt, Entry, Kind, Store};
use crate::engine::metrics::Metrics;
use crate::engine::report::truncate;

/// Attempts before an entry is marked failed: with backoff capped at ten minutes, a back
/// end may be down for about four hours without losing a report.
pub const MAX_ATTEMPTS: u32 = 30;
/// How long a replica may take to send a batch before another may take it over.
const LEASE: Duration = Duration::from_secs(60);
/// Entries sent at once.
const BATCH: usize = 16;

/// The outbox's sender; one per process.
pub struct Outbox {
    store: Arc<dyn Store>,
    /// Built for the first report: reading the system's CA certificates takes time and
    /// memory that a service reporting nothing need not spend.
    client: std::sync::OnceLock<reqwest::Client>,
    notification: Option<Endpoint>,
    webhook_log: Option<Endpoint>,
    keys: Option<Keys>,
    metrics: Metrics,
    owner: String,
    backoff: Duration,
    /// `name/version` of the service.
    user_agent: String,
    wake: Notify,
    stop: CancellationToken,
}

impl Outbox {
    pub fn new(config: &Config, store: Arc<dyn Store>, metrics: Metrics, owner: String) -> Self {
        Self {
            store,
            client: std::sync::OnceLock::new(),
            notification: config.notification.clone(),
            webhook_log: config.webhook_log.clone(),
            keys: config.keys.clone(),
            metrics,
            owner,
            backoff: config.retry_backoff,
            user_agent: format!("{}/{}", config.service.name, config.service.version),
            wake: Notify::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Something was stored: look now instead of at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops taking entries; the batch being sent is finished by [`Outbox::run`].
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Sends due entries until stopped.
    pub async fn run(self: Arc<Self>) {
        let poll = self.backoff.min(Duration::from_secs(1));
        // The timed poll is the leading replica's (`Store::leads`); a replica that stored
        // reports is woken and sends them itself.
        let mut woken = true;
        while !self.stop.is_cancelled() {
            if !woken && !self.store.leads() {
                woken = self.pause(poll).await;
                continue;
            }
            let now = ledger::now();
            let lease_until = now + LEASE.as_millis() as i64;
            match self
                .store
                .outbox_claim(&self.owner, now, lease_until, BATCH)
                .await
            {
                Ok(entries) if !entries.is_empty() => {
                    let mut batch = tokio::task::JoinSet::new();
                    for entry in entries {
                        let this = self.clone();
                        batch.spawn(async move { this.send(entry).await });
                    }
                    while batch.join_next().await.is_some() {}
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the outbox"),
            }
            woken = self.pause(poll).await;
        }
    }

    /// Waits for a wake-up, the next poll or the stop; `true` if woken.
    async fn pause(&self, poll: Duration) -> bool {
        tokio::select! {
            _ = self.wake.notified() => true,
            _ = tokio::time::sleep(poll) => false,
            _ = self.stop.cancelled() => false,
        }
    }

    async fn send(&self, entry: Entry) {
        let (name, endpoint, variable) = match entry.kind {
            Kind::Notification => ("notification", &self.notification, "NOTIFICATION_ENDPOINT"),
            Kind::WebhookLog => ("webhook_log", &self.webhook_log, "WEBHOOK_LOG_ENDPOINT"),
        };
        let attempt = match endpoint {
            None => Attempt::Failed {
                status: format!("{variable} is not set"),
            },
            Some(_) if entry.body.is_empty() => Attempt::Failed {
                status: "its text was cleared: it was not delivered within the days a \
                         notification's text is kept"
                    .to_owned(),
            },
            Some(endpoint) => match self.signature(&entry).await {
                Err(attempt) => attempt,
                Ok(signature) => {
                    // The audit log answers with the webhook's secret: keep no word of it.
                    let keep_body = entry.kind != Kind::WebhookLog;
                    let result = self
                        .post(endpoint, entry.body.as_bytes(), signature, keep_body)
                        .await;
                    self.metrics.report(name, result.is_ok());
                    self.judge(&entry, result)
                }
            },
        };
        if let Attempt::Failed { status } | Attempt::Retry { status, .. } = &attempt {
            tracing::warn!(
                outbox.id = entry.id,
                endpoint = name,
                attempt = entry.attempts + 1,
                error = %status,
                "report back failed"
            );
        }
        if let Err(e) = self
            .store
            .outbox_finish(entry.id, &self.owner, &attempt, ledger::now())
            .await
        {
            tracing::error!(outbox.id = entry.id, error = %e, "cannot record a report's delivery");
        }
    }

    /// Decides what a delivery attempt's result means for the entry.
    fn judge(&self, entry: &Entry, result: Result<String, (bool, String)>) -> Attempt {
        match result {
            Ok(status) => Attempt::Delivered { status },
            Err((false, status)) => Attempt::Failed { status },
            Err((true, status)) if entry.attempts + 1 >= MAX_ATTEMPTS => Attempt::Failed {
                status: format!("{status} (gave up after {MAX_ATTEMPTS} attempts)"),
            },
            Err((true, status)) => Attempt::Retry {
                status,
                at: ledger::now() + backoff(self.backoff, entry.attempts + 1).as_millis() as i64,
            },
        }
    }

    /// The signature of an entry, with the key that verified its booking's event; an attempt
    /// that failed when that key is no longer configured (or the ledger cannot say which).
    async fn signature(&self, entry: &Entry) -> Result<Option<String>, Attempt> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        let key_id = match &entry.booking_id {
            None => None,
            Some(id) => match self.store.booking(id).await {
                Ok(b) => b.and_then(|b| b.key_id),
                Err(e) => {
                    return Err(Attempt::Retry {
                        status: format!("cannot read which key signs it: {e}"),
                        at: ledger::now()
                            + backoff(self.backoff, entry.attempts + 1).as_millis() as i64,
                    });
                }
            },
        };
        keys.sign_with(key_id.as_deref(), entry.body.as_bytes())
            .map(Some)
            .ok_or_else(|| Attempt::Failed {
                status: "the secret its booking's event was signed with is no longer configured \
                         (WEBHOOK_SECRET, WEBHOOK_PREVIOUS_SECRETS): the back end would refuse \
                         any other"
                    .to_owned(),
            })
    }

    /// Posts a body; `Err((retryable, status))` unless the answer was 2xx. The status holds
    /// the start of the answer's body only with `keep_body`.
    async fn post(
        &self,
        endpoint: &Endpoint,
        body: &[u8],
        signature: Option<String>,
        keep_body: bool,
    ) -> Result<String, (bool, String)> {
        let client = self.client.get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(&self.user_agent)
                // A redirect would re-post the signed report wherever it points.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("the HTTP client's TLS set-up is static")
        });
        let mut request = client
            .post(endpoint.url.clone())
            .timeout(endpoint.timeout)
            .header("content-type", "application/json");
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        match request.body(body.to_vec()).send().await {
            Ok(response) if response.status().is_success() => Ok(response.status().to_string()),
            Ok(response) if response.status().is_redirection() => {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("nowhere");
                Err((
                    false,
                    format!(
                        "{}: redirects are not followed (to {}): configure the URL it points to",
                        response.status(),
                        truncate(location, 200)
                    ),
                ))
            }
            Ok(response) => {
                let status = response.status();
                let retryable = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
                if !keep_body {
                    return Err((retryable, status.to_string()));
                }
                let text = response.text().await.unwrap_or_default();
                Err((retryable, format!("{status}: {}", truncate(&text, 200))))
            }
            Err(e) => Err((true, error_chain(&e))),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
