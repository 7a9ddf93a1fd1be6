//! Verified events that are not a booking's start or end, offered to
//! [`ResourceManager::on_event`](crate::manager::ResourceManager::on_event).
//!
//! The hook gets the event type and the body exactly as signed; the body is parsed again only
//! if the hook asks ([`OtherEvent::parse`]), so the default no-op costs no parsing. Its call is
//! not recorded in the ledger: it is made once per delivery, never retried, and a repeated
//! delivery calls it again.

use std::sync::Arc;

use poem::http::StatusCode;
use serde::Deserialize;
use tracing::Instrument;

use crate::manager::ManagerError;
use crate::reply::Reply;
use crate::report::{MESSAGE_MAX, truncate};
use crate::startup::AppState;

/// Which sender an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The reservation system, on `POST /webhook`.
    ReservationSystem,
    /// Waldur's marketplace, on `POST /waldur`.
    Waldur,
}

/// A verified event with no booking action: `EVENT_CREATED`, `EVENT_UPDATED`, `RESOURCE_*`,
/// the `ALL` test ping, event types newer than this webhook, and Waldur events that neither
/// configure nor release.
#[derive(Debug, Clone, Copy)]
pub struct OtherEvent<'a> {
    pub source: Source,
    /// `eventType` (reservation system) or `event_type` (Waldur).
    pub event_type: &'a str,
    /// The raw body as received and verified: JSON.
    pub body: &'a [u8],
    /// The resource type this webhook handles for `source`.
    handled_type: &'a str,
}

impl<'a> OtherEvent<'a> {
    /// An event as the service hands it over; `handled_type` is this webhook's resource type.
    pub fn new(source: Source, event_type: &'a str, body: &'a [u8], handled_type: &'a str) -> Self {
        Self {
            source,
            event_type,
            body,
            handled_type,
        }
    }

    /// Parses the body into `T`, e.g. `serde_json::Value` or a struct of the fields needed.
    pub fn parse<T: Deserialize<'a>>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(self.body)
    }

    /// The resource type the event is about, if it names one: `data.resource.type.name` or
    /// `data.type.name` from the reservation system, `context.offering_name` or
    /// `context.offering_uuid` from Waldur. Parses the body.
    ///
    /// The reservation system's `EVENT_CREATED`, `EVENT_UPDATED` and `RESOURCE_*` events reach
    /// the hook for every resource type; this tells them apart.
    pub fn resource_type(&self) -> Option<String> {
        self.named_types().into_iter().next()
    }

    /// Whether the event is about this webhook's resource type (ignoring case and surrounding
    /// spaces); `None` when it names none, like the `ALL` ping. Parses the body.
    pub fn is_ours(&self) -> Option<bool> {
        let named = self.named_types();
        if named.is_empty() {
            return None;
        }
        Some(
            named
                .iter()
                .any(|t| crate::config::same_name(t, self.handled_type) || self.same_uuid(t)),
        )
    }

    /// Waldur's offering UUID against one written with or without dashes.
    fn same_uuid(&self, uuid: &str) -> bool {
        let hex = |t: &str| t.trim().replace('-', "").to_ascii_lowercase();
        self.source == Source::Waldur && hex(uuid) == hex(self.handled_type)
    }

    fn named_types(&self) -> Vec<String> {
        let Ok(v) = self.parse::<serde_json::Value>() else {
            return Vec::new();
        };
        let pointers: &[&str] = match self.source {
            Source::ReservationSystem => &["/data/resource/type/name", "/data/type/name"],
            Source::Waldur => &["/context/offering_name", "/context/offering_uuid"],
        };
        pointers
            .iter()
            .filter_map(|p| v.pointer(p)?.as_str())
            .map(str::to_owned)
            .collect()
    }
}

/// The least a hook is waited for, whatever `PROCESSING_BUDGET` says: enough for a hook that
/// answers at once (most do: they ignore the event) to have its answer in the reply. Only the
/// back end sends these events, from a pool of threads with a 10 s timeout, so a short wait
/// holds up no one else's deliveries.
const HOOK_BUDGET_FLOOR: std::time::Duration = std::time::Duration::from_millis(200);

/// Offers an event to the manager's hook and replies: `ignored` with `reason` when it does not
/// handle it, `handled` with its message, `failed` (5xx) with its error. A hook still running
/// after `PROCESSING_BUDGET` (at least [`HOOK_BUDGET_FLOOR`]) is answered 202 and finishes in
/// the background.
pub async fn offer(
    state: Arc<AppState>,
    source: Source,
    event_type: String,
    reason: String,
    body: bytes::Bytes,
) -> Reply {
    let work = {
        let state = state.clone();
        let event_type = event_type.clone();
        async move {
            let handled_type = match (source, &state.config.waldur) {
                (Source::Waldur, Some(waldur)) => waldur.resource_type.as_str(),
                _ => state.config.resource_type.as_str(),
            };
            let event = OtherEvent::new(source, &event_type, &body, handled_type);
            state.manager.on_event(&event).await
        }
    };
    // In a task of its own, like a booking's work: it finishes if the sender hangs up, and
    // shutdown waits for it.
    let mut task = state.tasks.spawn(work.instrument(tracing::Span::current()));
    let budget = state.config.processing_budget.max(HOOK_BUDGET_FLOOR);
    let reply = match tokio::time::timeout(budget, &mut task).await {
        Ok(Ok(Ok(None))) => Reply::ok("ignored", reason),
        Ok(Ok(Ok(Some(outcome)))) => Reply::ok(
            "handled",
            truncate(&outcome.message, MESSAGE_MAX).to_owned(),
        ),
        Ok(Ok(Err(e))) => failed(&event_type, &e),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "event hook task failed");
            Reply::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed",
                format!("internal error while handling {event_type}"),
            )
        }
        Err(_) => Reply::new(
            StatusCode::ACCEPTED,
            "accepted",
            format!(
                "{event_type} is still being handled after {}: it goes on in the background",
                humantime::format_duration(budget)
            ),
        ),
    };
    let label = match source {
        Source::ReservationSystem => event_type.as_str(),
        Source::Waldur => "waldur",
    };
    state.metrics.delivery(label, reply.body.status);
    reply
}

/// A failed hook: 503 if the manager said it may pass, else 500.
fn failed(event_type: &str, e: &ManagerError) -> Reply {
    tracing::warn!(error.message = %e, error.source = ?std::error::Error::source(e), "event hook failed");
    let code = if e.is_transient() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Reply::new(
        code,
        "failed",
        format!("handling {event_type} failed: {}", e.message()),
    )
}
