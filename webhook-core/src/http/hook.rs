//! Verified events that are not a booking's start or end, offered to
//! [`ResourceManager::on_event`](crate::manager::ResourceManager::on_event).
//!
//! The hook gets the event type and the body exactly as signed; the body is parsed again only
//! if the hook asks ([`OtherEvent::parse`]), so the default no-op costs no parsing. Its call is
//! not recorded in the ledger: it is made once per delivery, never retried, and a repeated
//! delivery calls it again, except with Standard Webhooks: a message (`webhook-id`) whose
//! delivery was answered 2xx is answered `duplicate` and not offered again while it may still
//! arrive, in this replica ([`seen`](crate::http::seen), decision 17).

use std::sync::Arc;

use poem::http::StatusCode;
use tracing::Instrument;

use crate::contract::event::{OtherEvent, Source};
use crate::contract::reply::Reply;
use crate::contract::signature::Message;
use crate::engine::report::{MESSAGE_MAX, truncate};
use crate::http::seen::Claim;
use crate::http::state::AppState;
use crate::manager::ManagerError;

/// The least a hook is waited for, whatever `PROCESSING_BUDGET` says: enough for a hook that
/// answers at once (most do: they ignore the event) to have its answer in the reply. Only the
/// back end sends these events, from a pool of threads with a 10 s timeout, so a short wait
/// holds up no one else's deliveries.
const HOOK_BUDGET_FLOOR: std::time::Duration = std::time::Duration::from_millis(200);

/// Offers an event to the manager's hook and replies: `ignored` with `reason` when it does not
/// handle it, `handled` with its message, `failed` (5xx) with its error. A hook still running
/// after `PROCESSING_BUDGET` (at least `HOOK_BUDGET_FLOOR`) is answered 202 and finishes in
/// the background. A Standard Webhooks `message` already answered 2xx is answered
/// `duplicate` without the hook, and one whose first delivery is still being handled 409.
pub async fn offer(
    state: Arc<AppState>,
    source: Source,
    event_type: String,
    reason: String,
    body: bytes::Bytes,
    message: Option<&Message>,
) -> Reply {
    let label = match source {
        Source::ReservationSystem => event_type.as_str(),
        Source::Waldur => "waldur",
    };
    let pending = match message.map(|m| (m, state.seen.claim(&m.id))) {
        None => None,
        Some((_, Claim::New(pending))) => Some(pending),
        Some((m, Claim::Answered)) => {
            tracing::info!(webhook_id = %m.id, "duplicate message not offered to the hook");
            let reply = Reply::ok(
                "duplicate",
                format!(
                    "{event_type} with webhook-id {} was delivered and answered before: not \
                     handled again",
                    m.id
                ),
            );
            state.metrics.delivery(label, reply.body.status);
            return reply;
        }
        Some((m, Claim::InFlight)) => {
            let reply = Reply::new(
                StatusCode::CONFLICT,
                "in_progress",
                format!(
                    "{event_type} with webhook-id {} is still being handled from an earlier \
                     delivery: try again later",
                    m.id
                ),
            );
            state.metrics.delivery(label, reply.body.status);
            return reply;
        }
    };
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
    if let (Some(pending), Some(m)) = (pending, message) {
        pending.answered(reply.code.is_success(), keep(&state, m));
    }
    state.metrics.delivery(label, reply.body.status);
    reply
}

/// How long a message answered 2xx is remembered: until its signed timestamp is outside
/// `REPLAY_TOLERANCE`, when the signature check refuses it anyway, and at least the
/// tolerance from now, for a sender's retry with a new timestamp.
fn keep(state: &AppState, m: &Message) -> std::time::Duration {
    // The configuration refuses this preset without a tolerance; five minutes is the spec's.
    let tolerance = state
        .config
        .replay_tolerance
        .unwrap_or(std::time::Duration::from_secs(300));
    let ahead = (m.timestamp - chrono::Utc::now().timestamp()).max(0) as u64;
    tolerance + std::time::Duration::from_secs(ahead)
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
