//! Handles booking events: records in the ledger what each asks for, has the
//! [reconciler](crate::engine::reconcile) act on it, waits for the result up to `PROCESSING_BUDGET`
//! (none by default: the event processor sends every START and END of the installation one
//! at a time and waits for each answer), and replies; past the budget it replies 202 and the
//! work goes on. A batch, and a deleted resource's bookings, are handled booking by booking,
//! with one result each in the reply.
//!
//! The reply says what happened to the booking (`configured`, `duplicate`, `failed`, ...)
//! but never the manager's outcome, which goes to the user in a notification.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use tokio::sync::oneshot;

use crate::contract::event::Source;
use crate::contract::payload::{Action, BatchItem};
use crate::contract::reply::{Reply, ReplyBody};
use crate::contract::reservation::Reservation;
use crate::contract::signature::KeyId;
use crate::engine::ledger::{self, Booking, Desired, Intent, Op, State, StoreError, Verdict};
use crate::engine::report::{Audit, LOG_TEXT_MAX, failed, refused, truncate};
use crate::http::state::AppState;

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
    /// The key that verified the delivery, if it was signed.
    pub key_id: Option<KeyId>,
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

/// What a delivery shares with every booking it names: who sent it, signed with which key.
pub struct Sender {
    pub event_type: &'static str,
    pub source: Source,
    pub webhook_id: Option<String>,
    pub key_id: Option<KeyId>,
    pub body: bytes::Bytes,
}

impl Sender {
    fn event(&self, action: Action, reservation: Reservation) -> BookingEvent {
        BookingEvent {
            action,
            event_type: self.event_type,
            source: self.source,
            reservation,
            webhook_id: self.webhook_id.clone(),
            key_id: self.key_id.clone(),
            start_notified: false,
            body: self.body.clone(),
        }
    }
}

/// A batched START or END: each element of ours is a booking of its own, handled in turn.
pub async fn batch(
    state: Arc<AppState>,
    action: Action,
    sender: Sender,
    items: Vec<BatchItem>,
) -> Reply {
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let reply = match item.booking {
            Ok(reservation) => booking(state.clone(), sender.event(action, reservation)).await,
            Err(reason) => Reply::ok("ignored", reason).for_event(&item.event_id),
        };
        results.push(reply);
    }
    combined(sender.event_type, "bookings in the batch", results)
}

/// `RESOURCE_DELETED`: the back end deleted every booking of the resource, active ones too,
/// and sends no END or DELETED for them: each one still wanted active is released.
pub async fn resource_deleted(state: Arc<AppState>, resource_id: i64, sender: Sender) -> Reply {
    let bookings = match state.store.bookings_of_resource(resource_id).await {
        Ok(bookings) => bookings,
        Err(e) => return unavailable(&e),
    };
    let mut results = Vec::with_capacity(bookings.len());
    for b in bookings {
        let reply = match serde_json::from_str::<Reservation>(&b.reservation) {
            Ok(reservation) => {
                booking(state.clone(), sender.event(Action::Release, reservation)).await
            }
            Err(e) => Reply::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed",
                format!("the ledger's copy of booking {} cannot be read: {e}", b.id),
            )
            .for_event(&b.id),
        };
        results.push(reply);
    }
    if results.is_empty() {
        return Reply::ok(
            "ignored",
            format!("resource {resource_id} has no booking in progress here: nothing to release"),
        );
    }
    combined(
        sender.event_type,
        "bookings of the deleted resource",
        results,
    )
}

/// One reply for several bookings: the worst status among them (a 5xx if one could not be
/// recorded, else 202 if one is still being worked on), and each booking's own result.
fn combined(event_type: &str, what: &str, results: Vec<Reply>) -> Reply {
    let code = results
        .iter()
        .map(|r| r.code)
        .max_by_key(|c| match c.as_u16() {
            500.. => 3,
            202 => 2,
            _ => 1,
        })
        .unwrap_or(StatusCode::OK);
    let acted = results
        .iter()
        .filter(|r| r.body.status != "ignored")
        .count();
    let mut reply = Reply::new(
        code,
        if code.is_success() { "batch" } else { "failed" },
        format!(
            "{event_type}: {} {what}, {acted} of them this webhook's",
            results.len()
        ),
    );
    reply.body.results = results
        .into_iter()
        .map(|r| r.body)
        .collect::<Vec<ReplyBody>>();
    reply
}

/// Handles one booking event to the end, even if the sender hangs up meanwhile.
pub async fn booking(state: Arc<AppState>, mut event: BookingEvent) -> Reply {
    let event_type = event.event_type;
    let (desired, update) = match event.action {
        Action::Configure => (Desired::Active, false),
        Action::Update => (Desired::Active, true),
        Action::Release | Action::ReleaseIfActive | Action::MovedAway => (Desired::Released, false),
    };
    if matches!(event.action, Action::Update | Action::MovedAway) {
        match known(&state, &mut event).await {
            Ok(true) => {}
            Ok(false) => {
                let id = &event.reservation.event_id;
                let reply = Reply::ok(
                    "ignored",
                    format!("booking {id} has not started here: nothing to change now"),
                )
                .for_event(id);
                state.metrics.delivery(event_type, reply.body.status);
                return reply;
            }
            Err(e) => return unavailable(&e).for_event(&event.reservation.event_id),
        }
    }
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
        key_id: event.key_id.clone(),
        update,
        defer_audit: state.config.processing_budget.is_zero() || update,
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
                if update {
                    // A move or a new end: several calls may follow; their results are
                    // reported back as usual.
                    let b = &recorded.booking;
                    let reply = Reply::new(
                        StatusCode::ACCEPTED,
                        "accepted",
                        format!("booking {id} changed: the change is being applied and its result is reported back"),
                    )
                    .with_execution(&b.execution_id);
                    (reply, 0)
                } else {
                    settle(&state, &recorded.booking, desired, work, result).await
                }
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

/// Whether an update names a booking this webhook knows. An update carries the back end's
/// entity, without the user's name, address or key: when the owner is the same, those of the
/// booking as first delivered are kept.
async fn known(state: &AppState, event: &mut BookingEvent) -> Result<bool, StoreError> {
    let Some(b) = state.store.booking(&event.reservation.event_id).await? else {
        return Ok(false);
    };
    if let Ok(first) = serde_json::from_str::<Reservation>(&b.reservation)
        && first.user.id == event.reservation.user.id
    {
        event.reservation.user = first.user;
    }
    Ok(true)
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
    // With no budget (the default) the reply does not wait for the call at all, and the
    // audit entry was deferred with the record.
    if state.config.processing_budget.is_zero() {
        return (accepted(state, b, desired, work), 0);
    }
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
        (State::Refused, _) => refused(id, b.last_error.as_deref().unwrap_or("invalid input")),
        _ => Reply::new(
            StatusCode::ACCEPTED,
            "in_progress",
            format!("booking {id} is being worked on"),
        )
        .with_execution(&b.execution_id),
    };
    (reply, retries)
}

fn accepted(state: &AppState, b: &Booking, desired: Desired, work: bool) -> Reply {
    let (status, whose) = if work {
        ("accepted", "its")
    } else {
        ("in_progress", "an earlier delivery's")
    };
    let op = op_for(desired).as_str();
    let budget = state.config.processing_budget;
    let when = if budget.is_zero() {
        format!("{op} of booking {} is under way", b.id)
    } else {
        format!(
            "{op} of booking {} is still running after {}",
            b.id,
            humantime::format_duration(budget)
        )
    };
    Reply::new(
        StatusCode::ACCEPTED,
        status,
        format!("{when}: {whose} work goes on in the background and its result is reported back"),
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
