//! Handles one booking event: records in the ledger what it asks for, has the
//! [reconciler](crate::reconcile) act on it, waits for the result up to
//! `PROCESSING_BUDGET`, and replies; past the budget it replies 202 and the work goes on.
//!
//! The reply says what happened to the booking (`configured`, `duplicate`, `failed`, ...)
//! but never the manager's outcome, which goes to the user in a notification.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use tokio::sync::oneshot;

use crate::hook::Source;
use crate::ledger::{self, Booking, Desired, Finish, Intent, Op, State, StoreError, Verdict};
use crate::payload::Action;
use crate::reply::Reply;
use crate::report::{Audit, LOG_TEXT_MAX, truncate};
use crate::reservation::Reservation;
use crate::startup::AppState;

/// How often a waiting delivery looks at the ledger when no signal comes (the work may
/// run in another replica).
const WAIT_POLL: Duration = Duration::from_millis(250);

/// A booking event, parsed and verified.
pub struct BookingEvent {
    pub action: Action,
    /// The sender's event type, for the ledger's history and the audit log.
    pub event_type: &'static str,
    pub source: Source,
    pub reservation: Reservation,
    pub webhook_id: Option<String>,
    pub start_notified: bool,
    /// The raw body, for the audit log.
    pub body: bytes::Bytes,
}

/// Refuses a delivery whose signed `timestamp` is further than `tolerance` from `now`.
pub fn check_fresh(
    sent_at: Option<DateTime<Utc>>,
    tolerance: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<(), Reply> {
    let Some(tolerance) = tolerance else {
        return Ok(());
    };
    let shown = humantime::format_duration(tolerance);
    let Some(sent_at) = sent_at else {
        return Err(Reply::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!(
                "missing field timestamp: it is needed to refuse replays (REPLAY_TOLERANCE={shown})"
            ),
        ));
    };
    let skew = (now - sent_at).to_std();
    let (late, early) = match skew {
        Ok(age) => (age > tolerance, false),
        Err(_) => (false, (sent_at - now).to_std().is_ok_and(|d| d > tolerance)),
    };
    if late || early {
        let how = if late {
            "older"
        } else {
            "further in the future"
        };
        return Err(Reply::new(
            StatusCode::CONFLICT,
            "replay",
            format!(
                "refused as a replay: the event's timestamp {} is {how} than REPLAY_TOLERANCE ({shown}) allows",
                sent_at.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

/// Handles one booking event to the end, even if the sender hangs up meanwhile.
pub async fn booking(state: Arc<AppState>, event: BookingEvent) -> Reply {
    let event_type = event.event_type;
    let desired = match event.action {
        Action::Configure => Desired::Active,
        Action::Release | Action::ReleaseIfActive => Desired::Released,
    };
    let r = &event.reservation;
    let id = r.event_id.clone();
    let payload = String::from_utf8_lossy(&event.body);
    let intent = Intent {
        desired,
        booking_id: id.clone(),
        resource_id: r.resource.id,
        resource_name: r.resource.name.clone(),
        user_id: r.user.id.clone(),
        start: r.start.timestamp_millis(),
        end: r.end.timestamp_millis(),
        reservation: serde_json::to_string(r).expect("a reservation serializes"),
        webhook_id: event.webhook_id.clone(),
        event_type,
        body: truncate(&payload, LOG_TEXT_MAX).to_owned(),
    };
    // With a free place for the call, the booking is claimed in the same step as the record.
    let now = ledger::now();
    let (slot, lease) = state.reconciler.slot(now).unzip();
    let (reply, retry_count) = match state.store.record(&intent, now, lease).await {
        Err(e) => (unavailable(&e), 0),
        Ok(recorded) => match recorded.verdict {
            Verdict::Done { status, message } => {
                if event.start_notified
                    && recorded.booking.created_at == recorded.booking.updated_at
                {
                    tracing::warn!(
                        "the sender says START was sent for this deleted booking, but this ledger never recorded it: nothing released"
                    );
                }
                (Reply::ok(status, message), 0)
            }
            verdict => {
                let work = verdict == Verdict::Work;
                let result = match (recorded.claim, slot) {
                    (Some(claim), Some(slot)) => Some(state.reconciler.run_claimed(claim, slot)),
                    _ => {
                        if work {
                            state.reconciler.kick(&id);
                        }
                        None
                    }
                };
                settle(&state, &recorded.booking, desired, work, result).await
            }
        },
    };
    let reply = reply.for_event(&id);
    let label = match event.source {
        Source::ReservationSystem => event_type,
        Source::Waldur => "waldur",
    };
    state.metrics.delivery(label, reply.body.status);

    if let Some(webhook_id) = &event.webhook_id {
        let audit = state.reports.audit(Audit {
            webhook_id,
            event_type,
            booking_id: &id,
            resource_id: r.resource.id,
            payload: &payload,
            reply: &reply,
            retry_count,
        });
        if let Some(entry) = audit {
            match state.store.enqueue(&[entry], ledger::now()).await {
                Ok(()) => state.outbox.wake(),
                Err(e) => tracing::error!(error = %e, "cannot store the audit entry"),
            }
        }
    } else if state.reports.enabled() && event.source == Source::ReservationSystem {
        tracing::warn!("event has no webhookId: nothing reported back");
    }
    reply
}

/// Waits for the booking to settle within the budget and replies with the result, or 202.
/// `result` is the call this delivery claimed, if it did.
async fn settle(
    state: &AppState,
    b: &Booking,
    desired: Desired,
    work: bool,
    result: Option<oneshot::Receiver<Booking>>,
) -> (Reply, u32) {
    let settled = match wait(state, &b.id, desired, result).await {
        Ok(Some(settled)) => Some(settled),
        Ok(None) => match state.store.defer(&b.id, ledger::now()).await {
            // It ended between the last look and now: answer with the result after all.
            Ok(false) => state.store.booking(&b.id).await.ok().flatten(),
            Ok(true) | Err(_) => None,
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the booking; its work goes on");
            None
        }
    };
    match settled {
        Some(settled) => reply_for(&settled, desired, work),
        None => (accepted(state, b, desired, work), 0),
    }
}

/// Waits for the booking to be settled or no longer wanted in the state this delivery asked
/// for: from the claimed call's `result` if there is one, else (or if a retry follows) by
/// polling the ledger, woken early by the reconciler's signal; `None` when the budget ran out.
async fn wait(
    state: &AppState,
    id: &str,
    desired: Desired,
    result: Option<oneshot::Receiver<Booking>>,
) -> Result<Option<Booking>, StoreError> {
    let deadline = tokio::time::Instant::now() + state.config.processing_budget;
    let done = |b: &Booking| b.desired != desired || b.settled();
    if let Some(result) = result {
        match tokio::time::timeout_at(deadline, result).await {
            Ok(Ok(b)) if done(&b) => return Ok(Some(b)),
            Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
    let signal = state.reconciler.signals.subscribe(id);
    loop {
        let notified = signal.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        let Some(b) = state.store.booking(id).await? else {
            return Ok(None);
        };
        if done(&b) {
            return Ok(Some(b));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let _ = tokio::time::timeout_at(deadline.min(now + WAIT_POLL), notified).await;
    }
}

fn op_for(desired: Desired) -> Op {
    match desired {
        Desired::Active => Op::Configure,
        Desired::Released => Op::Release,
    }
}

/// The reply for a settled booking, and the retries its operation took.
fn reply_for(b: &Booking, desired: Desired, work: bool) -> (Reply, u32) {
    let id = &b.id;
    let retries = b.attempts.saturating_sub(1);
    let reply = match (b.state, desired) {
        (_, Desired::Active) if b.desired == Desired::Released => Reply::ok(
            "ignored",
            format!("booking {id} ended or was deleted meanwhile: it is being released"),
        ),
        (State::Active, Desired::Active) if work => {
            Reply::ok("configured", format!("booking {id} configured"))
        }
        (State::Active, Desired::Active) => {
            Reply::ok("duplicate", format!("booking {id} is already configured"))
        }
        (State::Released, Desired::Released) if work => {
            Reply::ok("released", format!("booking {id} released"))
        }
        (State::Released, Desired::Released) => {
            Reply::ok("duplicate", format!("booking {id} is already released"))
        }
        (State::Failed, _) => failed(
            op_for(desired),
            b.last_error.as_deref().unwrap_or("unknown error"),
            b.error_transient,
        ),
        _ => Reply::new(
            StatusCode::ACCEPTED,
            "in_progress",
            format!("booking {id} is being worked on"),
        )
        .with_execution(&b.execution_id),
    };
    (reply, retries)
}

/// The reply an operation's final result would have got, for a deferred audit entry.
pub fn final_reply(id: &str, op: Op, finish: &Finish) -> Reply {
    match (finish, op) {
        (Finish::Done { .. }, Op::Configure) => {
            Reply::ok("configured", format!("booking {id} configured"))
        }
        (Finish::Done { .. }, Op::Release) => {
            Reply::ok("released", format!("booking {id} released"))
        }
        (Finish::Failed { error, transient }, _) => failed(op, error, *transient),
        (Finish::Retry { .. }, _) => Reply::new(
            StatusCode::ACCEPTED,
            "in_progress",
            format!("booking {id} is being worked on"),
        ),
    }
    .for_event(id)
}

/// A failed call: 503 if the manager said it may pass, else 500.
fn failed(op: Op, error: &str, transient: bool) -> Reply {
    let code = if transient {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Reply::new(code, "failed", format!("{} failed: {error}", op.as_str()))
}

fn accepted(state: &AppState, b: &Booking, desired: Desired, work: bool) -> Reply {
    let (status, whose) = if work {
        ("accepted", "its")
    } else {
        ("in_progress", "an earlier delivery's")
    };
    Reply::new(
        StatusCode::ACCEPTED,
        status,
        format!(
            "{} of booking {} is still running after {}: {whose} work goes on in the background and its result is reported back",
            op_for(desired).as_str(),
            b.id,
            humantime::format_duration(state.config.processing_budget)
        ),
    )
    .with_execution(&b.execution_id)
}

fn unavailable(e: &StoreError) -> Reply {
    tracing::error!(error = %e, "the ledger is unavailable");
    Reply::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the booking ledger is unavailable: nothing was done",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_timestamp_beyond_the_tolerance_either_way_is_refused_as_a_replay() {
        let now = at("2026-11-24T12:00:00Z");
        let five = Some(Duration::from_secs(300));
        assert!(check_fresh(Some(at("2026-11-24T11:56:00Z")), five, now).is_ok());
        let old = check_fresh(Some(at("2026-11-24T11:54:00Z")), five, now).unwrap_err();
        assert_eq!(
            (old.code, old.body.status),
            (StatusCode::CONFLICT, "replay")
        );
        assert!(
            old.body.message.contains("REPLAY_TOLERANCE (5m)"),
            "{old:?}"
        );
        assert!(check_fresh(Some(at("2026-11-24T12:06:00Z")), five, now).is_err());
        assert!(check_fresh(None, five, now).is_err());
        assert!(check_fresh(None, None, now).is_ok());
    }
}
