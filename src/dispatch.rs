//! Acts on a booking event at most once: decides from the ledger whether to call the
//! manager, calls it, records the new state, replies, and reports the result back.

use std::sync::Arc;
use std::time::Instant;

use poem::http::StatusCode;

use crate::ledger::State;
use crate::manager::ManagerError;
use crate::payload::Action;
use crate::reply::Reply;
use crate::report::{NoticeKind, Report};
use crate::reservation::Reservation;
use crate::startup::AppState;

/// A booking event, parsed and verified.
pub struct BookingEvent {
    pub action: Action,
    pub reservation: Reservation,
    pub webhook_id: Option<String>,
    pub start_notified: bool,
    /// The raw body, for the audit log.
    pub body: bytes::Bytes,
}

/// What the ledger says to do.
enum Step {
    Configure,
    Release,
    Skip(&'static str, String),
}

/// Handles one booking event to the end, even if the sender hangs up meanwhile.
pub async fn booking(state: Arc<AppState>, event: BookingEvent) -> Reply {
    let event_type = match event.action {
        Action::Configure => "EVENT_START",
        Action::Release => "EVENT_END",
        Action::ReleaseIfActive => "EVENT_DELETED",
    };
    let r = &event.reservation;
    let id = &r.event_id;
    let mut booking = state.ledger.lock(id).await;
    let step = match (event.action, booking.state()) {
        (Action::Configure, Some(State::Active)) => {
            Step::Skip("duplicate", format!("booking {id} is already configured"))
        }
        (Action::Configure, Some(State::Released)) => Step::Skip(
            "ignored",
            format!("booking {id} has already ended or been deleted"),
        ),
        (Action::Configure, _) => Step::Configure,
        (_, Some(State::Released)) => {
            Step::Skip("duplicate", format!("booking {id} is already released"))
        }
        // An END for a booking this process has not seen (a restart in between, or END
        // overtaking START) releases anyway: release is idempotent, a leak is not.
        (Action::Release, _) => Step::Release,
        (Action::ReleaseIfActive, Some(_)) => Step::Release,
        (Action::ReleaseIfActive, None) if event.start_notified => Step::Release,
        (Action::ReleaseIfActive, None) => {
            state.ledger.set(&mut booking, State::Released);
            Step::Skip(
                "ignored",
                format!("booking {id} was deleted before it started: nothing to release"),
            )
        }
    };

    let (reply, notice) = match step {
        Step::Skip(status, message) => (Reply::ok(status, message), None),
        Step::Configure => {
            state.ledger.set(&mut booking, State::Configuring);
            let started = Instant::now();
            let result = state.manager.configure(r).await;
            state.metrics.call("configure", started, result.is_ok());
            match result {
                Ok(outcome) => {
                    state.ledger.set(&mut booking, State::Active);
                    tracing::info!("configured");
                    (
                        Reply::ok("configured", format!("booking {id} configured")),
                        Some((NoticeKind::Success, outcome.message)),
                    )
                }
                Err(e) => {
                    state.ledger.set(&mut booking, State::Failed);
                    failed("configure", r, e)
                }
            }
        }
        Step::Release => {
            let before = booking.state();
            state.ledger.set(&mut booking, State::Releasing);
            let started = Instant::now();
            let result = state.manager.release(r).await;
            state.metrics.call("release", started, result.is_ok());
            match result {
                Ok(outcome) => {
                    state.ledger.set(&mut booking, State::Released);
                    tracing::info!("released");
                    // Tell the user only about bookings they could have been using.
                    let notice = before
                        .is_some()
                        .then_some((NoticeKind::Success, outcome.message));
                    (
                        Reply::ok("released", format!("booking {id} released")),
                        notice,
                    )
                }
                Err(e) => failed("release", r, e),
            }
        }
    };
    drop(booking);
    let reply = reply.for_event(id);
    state.metrics.delivery(event_type, reply.body.status);

    if let Some(webhook_id) = event.webhook_id {
        state.reporter.send(Report {
            webhook_id,
            event_type,
            event_id: id.clone(),
            user_id: r.user.id.clone(),
            resource_id: r.resource.id,
            notice,
            payload: String::from_utf8_lossy(&event.body).into_owned(),
            status: reply.code,
            response: reply.json(),
        });
    } else if state.reporter.enabled() {
        tracing::warn!("event has no webhookId: nothing reported back");
    }
    reply
}

/// The reply and notice for a failed manager call: 503 if worth retrying, else 500.
fn failed(
    operation: &str,
    r: &Reservation,
    e: ManagerError,
) -> (Reply, Option<(NoticeKind, String)>) {
    tracing::error!(
        error.message = %e,
        error.cause_chain = ?std::error::Error::source(&e),
        transient = e.is_transient(),
        "{operation} failed"
    );
    let code = if e.is_transient() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let notice = format!(
        "Could not {operation} {} for booking {}: {}",
        r.resource.name,
        r.event_id,
        e.message()
    );
    (
        Reply::new(
            code,
            "failed",
            format!("{operation} failed: {}", e.message()),
        ),
        Some((NoticeKind::Error, notice)),
    )
}
