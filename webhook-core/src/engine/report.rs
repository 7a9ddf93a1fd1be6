//! What is reported back to the reservation system: a notification for the user when an
//! operation ends, and an audit-log entry per processed event.
//!
//! Reports are built here as JSON bodies and stored in the ledger's outbox (with the result
//! they report, in the same transaction), then delivered by [`outbox`](crate::engine::outbox) with
//! retries, so a slow or failing back end never delays or fails an event and nothing is
//! lost. Fields, enum values and length limits follow the back end's validation (unknown
//! fields are refused there, so none are sent).

use poem::http::StatusCode;
use serde::Serialize;

use crate::config::Config;
use crate::contract::reply::Reply;
use crate::engine::ledger::{Booking, Finish, Kind, NewEntry, Op};

/// The back end's limit on a notification's message.
pub const MESSAGE_MAX: usize = 500;
/// The back end's limit on an audit entry's payload and response.
pub const LOG_TEXT_MAX: usize = 4000;

/// The reply an operation's final result would have got, for a deferred audit entry.
pub fn final_reply(id: &str, op: Op, finish: &Finish) -> Reply {
    match (finish, op) {
        (Finish::Done { .. }, Op::Configure) => {
            Reply::ok("configured", format!("booking {id} configured"))
        }
        (Finish::Done { .. }, Op::Release) => {
            Reply::ok("released", format!("booking {id} released"))
        }
        (Finish::Done { .. }, Op::EndChanged) => {
            Reply::ok("updated", format!("booking {id} updated"))
        }
        (
            Finish::Failed {
                error, transient, ..
            },
            _,
        ) => failed(op, error, *transient),
        (Finish::Refused { error }, _) => refused(id, error),
        (Finish::Retry { .. }, _) => Reply::new(
            StatusCode::ACCEPTED,
            "in_progress",
            format!("booking {id} is being worked on"),
        ),
    }
    .for_event(id)
}

/// A booking refused for its own input: the delivery was fine, so a 2xx; the user is told.
pub fn refused(id: &str, error: &str) -> Reply {
    Reply::ok(
        "refused",
        format!("booking {id} was refused, and its user told why: {error}"),
    )
}

/// A failed call: 503 if the manager said it may pass, else 500.
pub fn failed(op: Op, error: &str, transient: bool) -> Reply {
    let code = if transient {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Reply::new(code, "failed", format!("{} failed: {error}", op.as_str()))
}

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

/// One delivery's reply, for its audit entry.
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    pub webhook_id: &'a str,
    pub event_type: &'a str,
    pub booking_id: &'a str,
    pub resource_id: i64,
    /// The inbound body, as text.
    pub payload: &'a str,
    pub reply: &'a Reply,
    /// Manager calls made before the last one.
    pub retry_count: u32,
}

/// Builds the reports that the configured endpoints take.
#[derive(Debug, Clone, Copy)]
pub struct Reports {
    notification: bool,
    webhook_log: bool,
}

impl Reports {
    pub fn new(config: &Config) -> Self {
        Self {
            notification: config.notification.is_some(),
            webhook_log: config.webhook_log.is_some(),
        }
    }

    /// Whether any report endpoint is configured.
    pub fn enabled(&self) -> bool {
        self.notification || self.webhook_log
    }

    /// The user's notification of an operation's final result.
    pub fn result(&self, b: &Booking, op: Op, finish: &Finish) -> Option<NewEntry> {
        let webhook_id = b.webhook_id.as_deref().filter(|_| self.notification)?;
        let (resource, id) = (&b.resource_name, &b.id);
        let (kind, message) = match (finish, op) {
            (Finish::Retry { .. }, _) | (Finish::Done { .. }, Op::EndChanged) => return None,
            // The back end refuses a blank message: say what happened in its place.
            (Finish::Done { outcome }, _) if !outcome.trim().is_empty() => {
                (NoticeKind::Success, outcome.clone())
            }
            (Finish::Done { .. }, Op::Configure) => (
                NoticeKind::Success,
                format!("{resource} is ready for your booking {id}."),
            ),
            (Finish::Done { .. }, _) => (
                NoticeKind::Success,
                format!("Your booking {id} of {resource} has ended: its access was removed."),
            ),
            (Finish::Failed { error, .. }, Op::EndChanged) => (
                NoticeKind::Warning,
                format!(
                    "The new end of booking {id} could not be applied to {resource}: {error}. \
                     It stays yours until the new end."
                ),
            ),
            (Finish::Failed { error, .. } | Finish::Refused { error }, _) => (
                NoticeKind::Error,
                format!(
                    "Could not {} {resource} for booking {id}: {error}",
                    op.as_str()
                ),
            ),
        };
        let event_type = match (op, b.event_type.as_str()) {
            (Op::Configure, _) => "EVENT_START",
            (Op::EndChanged, _) => "EVENT_UPDATED",
            (
                Op::Release,
                t @ ("EVENT_END" | "EVENT_DELETED" | "EVENT_UPDATED" | "RESOURCE_DELETED"),
            ) => t,
            (Op::Release, _) => "EVENT_END",
        };
        let body = Notification {
            webhook_id,
            user_id: &b.user_id,
            message: truncate(&message, MESSAGE_MAX),
            kind,
            event_id: &b.id,
            resource_id: b.resource_id.to_string(),
            event_type,
        };
        Some(NewEntry {
            kind: Kind::Notification,
            booking_id: Some(b.id.clone()),
            body: serde_json::to_string(&body).expect("reports serialize"),
        })
    }

    /// The audit-log entry of a delivery and the reply it got.
    pub fn audit(&self, a: Audit<'_>) -> Option<NewEntry> {
        if !self.webhook_log {
            return None;
        }
        let response = a.reply.json();
        let body = LogEntry {
            webhook_id: a.webhook_id,
            event_type: a.event_type,
            payload: truncate(a.payload, LOG_TEXT_MAX),
            status_code: a.reply.code.as_u16(),
            response: truncate(&response, LOG_TEXT_MAX),
            success: a.reply.code.is_success(),
            retry_count: a.retry_count,
            resource_id: a.resource_id,
        };
        Some(NewEntry {
            kind: Kind::WebhookLog,
            booking_id: Some(a.booking_id.to_owned()),
            body: serde_json::to_string(&body).expect("reports serialize"),
        })
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
