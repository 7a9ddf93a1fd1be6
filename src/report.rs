//! Reporting results back to the reservation system: a notification for the user and an
//! audit-log entry per processed event.
//!
//! Both requests are signed like inbound events and sent in the background after the reply,
//! so a slow or failing report never delays or fails the event itself; failures are logged
//! and counted. Fields, enum values and length limits follow the back end's validation
//! (unknown fields are refused there, so none are sent).

use std::time::Duration;

use poem::http::StatusCode;
use serde::Serialize;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Endpoint};
use crate::metrics::Metrics;
use crate::signature::{Keys, SIGNATURE_HEADER};

/// The back end's limit on a notification's message.
pub const MESSAGE_MAX: usize = 500;
/// The back end's limit on an audit entry's payload and response.
pub const LOG_TEXT_MAX: usize = 4000;

/// How a notification is shown to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum NoticeKind {
    Info,
    Success,
    Warning,
    Error,
}

/// The body of `NOTIFICATION_ENDPOINT`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Notification<'a> {
    webhook_id: &'a str,
    user_id: &'a str,
    message: &'a str,
    #[serde(rename = "type")]
    kind: NoticeKind,
    event_id: &'a str,
    resource_id: String,
    event_type: &'a str,
}

/// The body of `WEBHOOK_LOG_ENDPOINT`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LogEntry<'a> {
    webhook_id: &'a str,
    event_type: &'a str,
    payload: &'a str,
    status_code: u16,
    response: &'a str,
    success: bool,
    retry_count: u32,
    resource_id: i64,
}

/// The result of one processed event, to be reported.
#[derive(Debug, Clone)]
pub struct Report {
    pub webhook_id: String,
    pub event_type: &'static str,
    pub event_id: String,
    pub user_id: String,
    pub resource_id: i64,
    /// What the user is told, if anything happened worth telling.
    pub notice: Option<(NoticeKind, String)>,
    /// The inbound body, as text.
    pub payload: String,
    /// The reply the sender got.
    pub status: StatusCode,
    pub response: String,
}

/// Sends reports in the background; [`Reporter::close`] waits for those still in flight.
#[derive(Clone)]
pub struct Reporter {
    client: reqwest::Client,
    notification: Option<Endpoint>,
    webhook_log: Option<Endpoint>,
    keys: Option<Keys>,
    tasks: TaskTracker,
    metrics: Metrics,
}

impl Reporter {
    pub fn new(config: &Config, metrics: Metrics) -> Self {
        Self {
            client: reqwest::Client::builder()
                .user_agent(concat!(
                    env!("CARGO_PKG_NAME"),
                    "/",
                    env!("CARGO_PKG_VERSION")
                ))
                .build()
                .expect("the HTTP client's TLS set-up is static"),
            notification: config.notification.clone(),
            webhook_log: config.webhook_log.clone(),
            keys: config.keys.clone(),
            tasks: TaskTracker::new(),
            metrics,
        }
    }

    /// Whether any report endpoint is configured.
    pub fn enabled(&self) -> bool {
        self.notification.is_some() || self.webhook_log.is_some()
    }

    /// Sends the report's notification and audit entry in the background.
    pub fn send(&self, report: Report) {
        if !self.enabled() {
            return;
        }
        let this = self.clone();
        self.tasks.spawn(async move { this.deliver(&report).await });
    }

    /// Stops taking reports and waits up to `timeout` for those in flight.
    pub async fn close(&self, timeout: Duration) {
        self.tasks.close();
        if tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = self.tasks.len(),
                "reports still in flight at shutdown were dropped"
            );
        }
    }

    async fn deliver(&self, report: &Report) {
        if let (Some(endpoint), Some((kind, message))) = (&self.notification, &report.notice) {
            let body = Notification {
                webhook_id: &report.webhook_id,
                user_id: &report.user_id,
                message: truncate(message, MESSAGE_MAX),
                kind: *kind,
                event_id: &report.event_id,
                resource_id: report.resource_id.to_string(),
                event_type: report.event_type,
            };
            self.post("notification", endpoint, &body).await;
        }
        if let Some(endpoint) = &self.webhook_log {
            let body = LogEntry {
                webhook_id: &report.webhook_id,
                event_type: report.event_type,
                payload: truncate(&report.payload, LOG_TEXT_MAX),
                status_code: report.status.as_u16(),
                response: truncate(&report.response, LOG_TEXT_MAX),
                success: report.status.is_success(),
                retry_count: 0,
                resource_id: report.resource_id,
            };
            self.post("webhook_log", endpoint, &body).await;
        }
    }

    async fn post(&self, name: &'static str, endpoint: &Endpoint, body: &impl Serialize) {
        let body = serde_json::to_vec(body).expect("report bodies serialize");
        let mut request = self
            .client
            .post(endpoint.url.clone())
            .timeout(endpoint.timeout)
            .header("content-type", "application/json");
        if let Some(keys) = &self.keys {
            request = request.header(SIGNATURE_HEADER, keys.sign(&body));
        }
        let result = match request.body(body).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                Err(format!("{status}: {}", truncate(&text, 200)))
            }
            Err(e) => Err(error_chain(&e)),
        };
        self.metrics.report(name, result.is_ok());
        if let Err(error) = result {
            tracing::warn!(endpoint = name, url = %endpoint.url, %error, "report back failed");
        }
    }
}

/// The longest prefix of `text` within `max` UTF-16 code units, cut at a character boundary.
///
/// The back end counts length as Java does (UTF-16 units), which is never less than the
/// number of characters, so a text within the limit here is within it there.
pub fn truncate(text: &str, max: usize) -> &str {
    let mut units = 0;
    for (i, c) in text.char_indices() {
        units += c.len_utf16();
        if units > max {
            return &text[..i];
        }
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_utf16_units_and_never_splits_a_character() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "abc");
        assert_eq!(truncate("ééé", 2), "éé");
        // An emoji is two UTF-16 units: it does not fit in the last one.
        assert_eq!(truncate("a😀", 2), "a");
        assert_eq!(truncate("", 0), "");
    }
}
