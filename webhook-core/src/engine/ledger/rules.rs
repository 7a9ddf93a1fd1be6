//! The ledger's decisions as pure functions of a booking's row. Both stores load the row,
//! call one of these and save what it returns, inside one transaction, so they decide alike.

use super::{
    Booking, Claim, Desired, Intent, Millis, Op, State, Verdict, Verdict::Done,
    Verdict::InProgress, Verdict::Work, random,
};

/// A fresh execution id: 12 hex digits.
pub fn execution_id() -> String {
    format!("{:012x}", random() >> 16)
}

/// What to write back after a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<T> {
    /// The row to save (unchanged rows are saved too: they are small).
    pub booking: Booking,
    pub result: T,
    /// A line for the booking's history.
    pub history: String,
}

impl Decision<Option<Op>> {
    /// The claim this decision took, if it calls the manager.
    pub fn into_claim(self) -> Option<Claim> {
        let booking = self.booking;
        self.result.map(|op| Claim { op, booking })
    }
}

fn done(status: &'static str, message: String) -> Verdict {
    Done { status, message }
}

/// A delivery's wish, applied to the booking's row (`None`: never seen).
///
/// START wants the booking active, END and DELETED want it released. Released is final: a
/// START after it does nothing. A booking that was never configured is released without a
/// manager call. A failed booking is tried again when a delivery asks for the same thing.
pub fn record(existing: Option<Booking>, i: &Intent, now: Millis) -> Decision<Verdict> {
    let mut d = if i.update {
        update(existing, i, now)
    } else {
        wish(existing, i, now)
    };
    if i.defer_audit && !d.booking.settled() {
        d.booking.audit_deferred = true;
    }
    d
}

/// START, END or DELETED: see [`record`].
fn wish(existing: Option<Booking>, i: &Intent, now: Millis) -> Decision<Verdict> {
    let event = i.event_type;
    let Some(mut b) = existing else {
        let mut b = new_booking(i, now);
        let (result, history) = match i.desired {
            Desired::Active => {
                b.next_attempt_at = Some(now);
                (Work, format!("{event} received: configure requested"))
            }
            Desired::Released => {
                b.state = State::Released;
                (
                    done(
                        "ignored",
                        format!("booking {} was never configured: nothing to release", b.id),
                    ),
                    format!("{event} received for a booking never configured: nothing to release"),
                )
            }
        };
        return Decision {
            booking: b,
            result,
            history,
        };
    };
    b.updated_at = now;
    if b.webhook_id.is_none() {
        b.webhook_id.clone_from(&i.webhook_id);
        b.key_id.clone_from(&i.key_id);
    }
    if i.desired == Desired::Released {
        // The booking is over: a move in progress has nowhere to go.
        b.next_reservation = None;
    }
    let id = b.id.clone();
    let (result, history) = match (i.desired, b.desired, b.state) {
        (Desired::Active, Desired::Released, _) => (
            done(
                "ignored",
                format!("booking {id} has already ended or been deleted"),
            ),
            format!("{event} received after the booking ended: ignored"),
        ),
        (Desired::Active, Desired::Active, State::Active) => (
            done("duplicate", format!("booking {id} is already configured")),
            format!("{event} received again: already configured"),
        ),
        (Desired::Active, Desired::Active, State::Refused) => (
            done(
                "refused",
                format!(
                    "booking {id} was refused: {}",
                    b.last_error.as_deref().unwrap_or("invalid input")
                ),
            ),
            format!("{event} received again: already refused"),
        ),
        // Known from an update before it started: the START's data is the booking's own.
        (Desired::Active, Desired::Active, State::Pending) if b.next_attempt_at.is_none() => {
            take_data(&mut b, i);
            ask(&mut b, i, now);
            (Work, format!("{event} received: configure requested"))
        }
        (Desired::Released, Desired::Released, State::Released) => (
            done("duplicate", format!("booking {id} is already released")),
            format!("{event} received again: already released"),
        ),
        (Desired::Released, Desired::Active, State::Pending) => {
            b.desired = Desired::Released;
            b.state = State::Released;
            b.next_attempt_at = None;
            (
                done(
                    "ignored",
                    format!("booking {id} ended before it was configured: nothing to release"),
                ),
                format!("{event} received before configure started: released without a call"),
            )
        }
        (wanted, _, State::Failed) if wanted == b.desired => {
            ask(&mut b, i, now);
            (
                Work,
                format!("{event} received after a failure: trying again"),
            )
        }
        (Desired::Released, Desired::Active, _) => {
            b.desired = Desired::Released;
            ask(&mut b, i, now);
            (Work, format!("{event} received: release requested"))
        }
        (_, _, _) => (
            InProgress,
            format!("{event} received again: work already under way"),
        ),
    };
    Decision {
        booking: b,
        result,
        history,
    }
}

/// `EVENT_UPDATED` of a booking: what must be true now, decided against the ledger.
///
/// A booking that has not been configured takes the new data for its configure. A configured
/// one (or one being configured) whose resource or owner changed is released, then configured
/// again with the new data (`next_reservation`); one whose end alone moved keeps its resource,
/// and the manager is told (`end_changed`). A booking never seen is kept, not started, so its
/// START finds the new data; an ended one is left alone.
fn update(existing: Option<Booking>, i: &Intent, now: Millis) -> Decision<Verdict> {
    let event = i.event_type;
    let Some(mut b) = existing else {
        let b = new_booking(i, now);
        let message = format!(
            "booking {} has not started here: nothing to change now",
            b.id
        );
        return Decision {
            booking: b,
            result: done("ignored", message),
            history: format!("{event} received before START: kept for it, nothing to do now"),
        };
    };
    let id = b.id.clone();
    if b.desired == Desired::Released {
        return unchanged(
            b,
            now,
            "ignored",
            format!("booking {id} has ended or been deleted: nothing to change"),
            format!("{event} received after the booking ended: ignored"),
        );
    }
    let moved = i.resource_id != b.resource_id;
    let owner = i.user_id != b.user_id;
    let end_moved = i.end != b.end || i.start != b.start;
    if !moved && !owner && !end_moved {
        return unchanged(
            b,
            now,
            "duplicate",
            format!("booking {id}: nothing changed that concerns it now"),
            format!("{event} received: nothing changed that concerns it now"),
        );
    }
    b.updated_at = now;
    let configured = matches!(b.state, State::Configuring | State::Active)
        || (b.state == State::Failed && (moved || owner));
    let what = if moved {
        format!("moved to resource {} ({})", i.resource_name, i.resource_id)
    } else if owner {
        "given to another user".to_owned()
    } else {
        format!("its end moved to {}", super::time(i.end).to_rfc3339())
    };
    let (result, history) = if !configured {
        // Nothing is configured yet: the configure to come uses the new data.
        take_data(&mut b, i);
        (
            done("updated", format!("booking {id} updated: {what}")),
            format!("{event} received before configure: {what}"),
        )
    } else if moved || owner {
        b.desired = Desired::Released;
        b.next_reservation = Some(i.reservation.clone());
        ask(&mut b, i, now);
        (
            Work,
            format!("{event} received: {what}; release requested, then configure"),
        )
    } else {
        b.start = i.start;
        b.end = i.end;
        b.reservation.clone_from(&i.reservation);
        b.end_changed = true;
        if b.state == State::Active && b.next_attempt_at.is_none() {
            ask(&mut b, i, now);
            (
                Work,
                format!("{event} received: {what}; telling the manager"),
            )
        } else {
            (
                InProgress,
                format!("{event} received: {what}; the manager is told once its call ends"),
            )
        }
    };
    Decision {
        booking: b,
        result,
        history,
    }
}

/// A decision that changes nothing but the row's last update.
fn unchanged(
    mut b: Booking,
    now: Millis,
    status: &'static str,
    message: String,
    history: String,
) -> Decision<Verdict> {
    b.updated_at = now;
    Decision {
        booking: b,
        result: done(status, message),
        history,
    }
}

/// Takes a delivery's data of the booking (resource, owner, times, reservation) for a
/// booking nothing is configured for yet.
fn take_data(b: &mut Booking, i: &Intent) {
    b.resource_id = i.resource_id;
    b.resource_name.clone_from(&i.resource_name);
    b.user_id.clone_from(&i.user_id);
    b.start = i.start;
    b.end = i.end;
    b.reservation.clone_from(&i.reservation);
}

/// Starts a new operation for the row's desired state. Reports about it go to the webhook
/// that asked, signed with the key that verified it.
fn ask(b: &mut Booking, i: &Intent, now: Millis) {
    b.next_attempt_at = Some(now);
    b.attempts = 0;
    b.execution_id = execution_id();
    b.event_type = i.event_type.to_owned();
    b.body.clone_from(&i.body);
    b.audit_deferred = false;
    if i.webhook_id.is_some() {
        b.webhook_id.clone_from(&i.webhook_id);
        b.key_id.clone_from(&i.key_id);
    }
}

fn new_booking(i: &Intent, now: Millis) -> Booking {
    Booking {
        id: i.booking_id.clone(),
        resource_id: i.resource_id,
        resource_name: i.resource_name.clone(),
        user_id: i.user_id.clone(),
        start: i.start,
        end: i.end,
        reservation: i.reservation.clone(),
        webhook_id: i.webhook_id.clone(),
        desired: i.desired,
        state: State::Pending,
        attempts: 0,
        last_error: None,
        error_transient: false,
        outcome: None,
        next_attempt_at: None,
        lease_owner: None,
        lease_until: None,
        execution_id: execution_id(),
        event_type: i.event_type.to_owned(),
        body: i.body.clone(),
        audit_deferred: false,
        created_at: now,
        updated_at: now,
        key_id: i.key_id.clone(),
        next_reservation: None,
        end_changed: false,
    }
}

/// What the other bookings of the same resource say about claiming this one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Neighbours {
    /// Another booking of the resource is leased: its call may be running.
    pub leased: bool,
    /// Another booking of the resource waits for its release, which goes first.
    pub release_pending: bool,
}

/// Claims a due booking for one call: `Some(op)` to call the manager, `None` when the row
/// was settled without a call; no decision at all when it cannot be claimed now.
pub fn claim(
    mut b: Booking,
    neighbours: Neighbours,
    owner: &str,
    now: Millis,
    lease_until: Millis,
) -> Option<Decision<Option<Op>>> {
    let due = b.next_attempt_at.is_some_and(|at| at <= now);
    let leased = b.lease_until.is_some_and(|until| until > now);
    if !due || leased {
        return None;
    }
    let op = match (b.desired, b.state) {
        (Desired::Active, State::Pending | State::Configuring | State::Failed) => Op::Configure,
        (Desired::Active, State::Active) if b.end_changed => Op::EndChanged,
        (
            Desired::Released,
            State::Configuring | State::Active | State::Releasing | State::Failed | State::Refused,
        ) => Op::Release,
        (Desired::Released, State::Pending) => {
            b.state = State::Released;
            b.next_attempt_at = None;
            b.updated_at = now;
            return Some(Decision {
                booking: b,
                result: None,
                history: "released without a call: it was never configured".into(),
            });
        }
        // Already where it should be.
        _ => {
            b.next_attempt_at = None;
            b.updated_at = now;
            return Some(Decision {
                booking: b,
                result: None,
                history: "nothing left to do".into(),
            });
        }
    };
    if neighbours.leased || (op == Op::Configure && neighbours.release_pending) {
        return None;
    }
    let taken_over = b.lease_owner.take();
    b.state = match op {
        Op::Configure => State::Configuring,
        Op::Release => State::Releasing,
        // Still configured while the manager hears of the new end; a change that comes
        // meanwhile raises the flag again.
        Op::EndChanged => {
            b.end_changed = false;
            State::Active
        }
    };
    b.attempts += 1;
    b.lease_owner = Some(owner.to_owned());
    b.lease_until = Some(lease_until);
    b.updated_at = now;
    let mut history = format!("{} attempt {} started by {owner}", op.as_str(), b.attempts);
    if let Some(previous) = taken_over.filter(|p| p != owner) {
        history.push_str(&format!(
            ", taking over from {previous} whose lease expired"
        ));
    }
    Some(Decision {
        booking: b,
        result: Some(op),
        history,
    })
}

/// Records how `owner`'s call ended; `None` if `owner` no longer holds the lease. The
/// result says whether the delivery's audit entry was deferred and is due now.
pub fn finish(
    mut b: Booking,
    owner: &str,
    finish: &super::Finish,
    now: Millis,
) -> Option<Decision<bool>> {
    use super::Finish;
    if b.lease_owner.as_deref() != Some(owner) {
        return None;
    }
    let op = match b.state {
        State::Configuring => Op::Configure,
        State::Releasing => Op::Release,
        // Only a claim for the new end leaves a leased booking active.
        State::Active => Op::EndChanged,
        _ => return None,
    };
    b.lease_owner = None;
    b.lease_until = None;
    b.updated_at = now;
    let attempt = b.attempts;
    let name = op.as_str();
    let history = match finish {
        Finish::Retry { error, at } => {
            b.last_error = Some(error.clone());
            b.error_transient = true;
            b.next_attempt_at = Some(*at);
            if op == Op::EndChanged {
                b.end_changed = true;
            }
            let wait = (at - now).max(0) as f64 / 1000.0;
            return Some(Decision {
                booking: b,
                result: false,
                history: format!(
                    "{name} attempt {attempt} failed (transient): {error}; next attempt in {wait:.1}s"
                ),
            });
        }
        Finish::Done { outcome } => {
            b.state = match op {
                Op::Configure | Op::EndChanged => State::Active,
                Op::Release => State::Released,
            };
            // The outcome may hold credentials: it goes to the user's notification only, and
            // is never kept with the booking.
            let _ = outcome;
            b.outcome = None;
            b.last_error = None;
            b.error_transient = false;
            match op {
                Op::Configure => format!("configured (attempt {attempt})"),
                Op::Release => format!("released (attempt {attempt})"),
                Op::EndChanged => format!("manager told of the new end (attempt {attempt})"),
            }
        }
        Finish::Failed {
            error, transient, ..
        } if op == Op::EndChanged => {
            // The resource stays configured until the booking's end, which the ledger has.
            b.last_error = Some(error.clone());
            b.error_transient = *transient;
            format!(
                "end_changed attempt {attempt} failed ({}): {error}; the booking stays configured until its new end",
                if *transient {
                    "transient, no attempts left"
                } else {
                    "permanent"
                }
            )
        }
        Finish::Refused { error } if op == Op::Configure => {
            b.state = State::Refused;
            b.last_error = Some(error.clone());
            b.error_transient = false;
            format!("configure attempt {attempt} refused (the booking's input): {error}")
        }
        Finish::Failed { error, .. } | Finish::Refused { error } => {
            let transient = matches!(
                finish,
                Finish::Failed {
                    transient: true,
                    ..
                }
            );
            b.state = State::Failed;
            b.last_error = Some(error.clone());
            b.error_transient = transient;
            let kind = if transient {
                "transient, no attempts left"
            } else {
                "permanent"
            };
            format!("{name} attempt {attempt} failed ({kind}): {error}")
        }
    };
    let wanted = match b.desired {
        Desired::Active if op == Op::EndChanged => Op::EndChanged,
        Desired::Active => Op::Configure,
        Desired::Released => Op::Release,
    };
    let history = match (op, &b.state, b.next_reservation.take()) {
        (Op::Release, State::Released, Some(next)) if b.desired == Desired::Released => {
            match move_to(&mut b, &next, now) {
                Ok(to) => format!("{history}; now configuring it {to}"),
                Err(e) => {
                    format!("{history}; the moved booking cannot be read ({e}): not configured")
                }
            }
        }
        (_, _, next) => {
            b.next_reservation = next;
            history
        }
    };
    let more = b.state == State::Pending || (b.end_changed && b.state == State::Active);
    if wanted == op && !more {
        b.next_attempt_at = None;
    } else if b.state != State::Pending {
        // The wish changed while the call ran (END during configure): act on it now.
        b.next_attempt_at = Some(now);
        b.attempts = 0;
    }
    let history = match finish {
        Finish::Failed {
            retry_at: Some(at), ..
        } if op == Op::Release && b.desired == Desired::Released => {
            b.next_attempt_at = Some(*at);
            let wait = (at - now).max(0) as f64 / 1000.0;
            format!("{history}; the release is tried again in {wait:.1}s, and until it succeeds")
        }
        _ => history,
    };
    let deferred = std::mem::take(&mut b.audit_deferred);
    Some(Decision {
        booking: b,
        result: deferred,
        history,
    })
}

/// Makes a released booking the moved or re-owned one: wanted active again with the new data.
/// Returns where it now is, in words.
fn move_to(b: &mut Booking, next: &str, now: Millis) -> Result<String, serde_json::Error> {
    let r: crate::contract::reservation::Reservation = serde_json::from_str(next)?;
    b.resource_id = r.resource.id;
    b.resource_name.clone_from(&r.resource.name);
    b.user_id.clone_from(&r.user.id);
    b.start = r.start.timestamp_millis();
    b.end = r.end.timestamp_millis();
    b.reservation = next.to_owned();
    b.desired = Desired::Active;
    b.state = State::Pending;
    b.next_attempt_at = Some(now);
    b.attempts = 0;
    b.end_changed = false;
    b.execution_id = execution_id();
    Ok(format!(
        "on resource {} ({}) for user {}",
        b.resource_name, b.resource_id, b.user_id
    ))
}

/// The sweeper's wish for a booking wanted active whose end plus the grace period has
/// passed: release it. `None` if there is nothing to sweep; the result says whether a call
/// is needed.
pub fn sweep(mut b: Booking, now: Millis) -> Option<Decision<bool>> {
    if b.desired != Desired::Active || b.state == State::Released {
        return None;
    }
    b.desired = Desired::Released;
    b.updated_at = now;
    if b.state == State::Pending && b.lease_owner.is_none() {
        b.state = State::Released;
        b.next_attempt_at = None;
        return Some(Decision {
            booking: b,
            result: false,
            history: "swept: ended without END or DELETED and never configured".into(),
        });
    }
    b.next_attempt_at = Some(now);
    b.attempts = 0;
    b.execution_id = execution_id();
    Some(Decision {
        booking: b,
        result: true,
        history:
            "swept: its end plus RELEASE_GRACE passed without END or DELETED: release requested"
                .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ledger::Finish;

    fn intent(desired: Desired) -> Intent {
        Intent {
            desired,
            booking_id: "1".into(),
            resource_id: 7,
            resource_name: "port".into(),
            user_id: "u".into(),
            start: 0,
            end: 10,
            reservation: "{}".into(),
            webhook_id: None,
            event_type: if desired == Desired::Active {
                "EVENT_START"
            } else {
                "EVENT_END"
            },
            body: String::new(),
            key_id: None,
            update: false,
            defer_audit: false,
        }
    }

    #[test]
    fn a_start_then_a_claim_then_success_leaves_the_booking_active_and_settled() {
        let d = record(None, &intent(Desired::Active), 1);
        assert_eq!(d.result, Work);
        let c = claim(d.booking, Neighbours::default(), "me", 2, 100).unwrap();
        assert_eq!(c.result, Some(Op::Configure));
        assert_eq!(c.booking.attempts, 1);
        let f = finish(
            c.booking,
            "me",
            &Finish::Done {
                outcome: "ok".into(),
            },
            3,
        )
        .unwrap();
        assert_eq!(f.booking.state, State::Active);
        assert!(f.booking.settled());
    }

    #[test]
    fn an_end_during_configure_releases_right_after_it() {
        let d = record(None, &intent(Desired::Active), 1);
        let c = claim(d.booking, Neighbours::default(), "me", 2, 100).unwrap();
        let e = record(Some(c.booking), &intent(Desired::Released), 3);
        assert_eq!(e.result, Work);
        assert!(claim(e.booking.clone(), Neighbours::default(), "other", 4, 100).is_none());
        let f = finish(
            e.booking,
            "me",
            &Finish::Done {
                outcome: "ok".into(),
            },
            5,
        )
        .unwrap();
        assert_eq!(
            (f.booking.state, f.booking.next_attempt_at),
            (State::Active, Some(5))
        );
        let r = claim(f.booking, Neighbours::default(), "me", 6, 100).unwrap();
        assert_eq!(r.result, Some(Op::Release));
    }

    #[test]
    fn a_configure_waits_for_a_pending_release_on_its_resource() {
        let d = record(None, &intent(Desired::Active), 1);
        let blocked = Neighbours {
            leased: false,
            release_pending: true,
        };
        assert!(claim(d.booking.clone(), blocked, "me", 2, 100).is_none());
        let leased = Neighbours {
            leased: true,
            release_pending: false,
        };
        assert!(claim(d.booking, leased, "me", 2, 100).is_none());
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_a_lost_lease_cannot_finish() {
        let d = record(None, &intent(Desired::Active), 1);
        let c = claim(d.booking, Neighbours::default(), "crashed", 2, 10).unwrap();
        assert!(claim(c.booking.clone(), Neighbours::default(), "me", 5, 50).is_none());
        let t = claim(c.booking, Neighbours::default(), "me", 11, 50).unwrap();
        assert!(
            t.history.contains("taking over from crashed"),
            "{}",
            t.history
        );
        assert_eq!(t.booking.attempts, 2);
        let done = Finish::Done {
            outcome: "ok".into(),
        };
        assert!(finish(t.booking, "crashed", &done, 12).is_none());
    }

    fn active(end: i64) -> Booking {
        let mut i = intent(Desired::Active);
        i.end = end;
        let d = record(None, &i, 1);
        let c = claim(d.booking, Neighbours::default(), "me", 2, 100).unwrap();
        let done = Finish::Done {
            outcome: "ok".into(),
        };
        finish(c.booking, "me", &done, 3).unwrap().booking
    }

    fn update(change: impl FnOnce(&mut Intent)) -> Intent {
        let mut i = intent(Desired::Active);
        i.event_type = "EVENT_UPDATED";
        i.update = true;
        change(&mut i);
        i
    }

    #[test]
    fn a_new_end_keeps_the_booking_and_tells_the_manager_once() {
        let b = active(10);
        let d = record(Some(b), &update(|i| i.end = 99), 4);
        assert_eq!(d.result, Work);
        assert_eq!((d.booking.end, d.booking.end_changed), (99, true));
        let c = claim(d.booking, Neighbours::default(), "me", 5, 100).unwrap();
        assert_eq!(c.result, Some(Op::EndChanged));
        assert_eq!(c.booking.state, State::Active);
        let done = Finish::Done {
            outcome: String::new(),
        };
        let f = finish(c.booking, "me", &done, 6).unwrap();
        assert_eq!(f.booking.state, State::Active);
        assert!(f.booking.settled());
        assert_eq!(f.booking.outcome, None);
        // The same update again changes nothing.
        let again = record(Some(f.booking), &update(|i| i.end = 99), 7);
        assert!(
            matches!(
                again.result,
                Done {
                    status: "duplicate",
                    ..
                }
            ),
            "{:?}",
            again.result
        );
    }

    #[test]
    fn a_move_releases_the_old_resource_then_configures_the_new_one() {
        let b = active(10);
        let moved = update(|i| {
            i.resource_id = 8;
            i.reservation = serde_json::to_string(&serde_json::json!({
                "event_id": "1",
                "user": {"id": "u", "username": null, "email": null, "ssh_public_key": null},
                "resource": {"id": 8, "name": "port-8", "kind": "Switch Port", "specs": null, "location": null},
                "site": null, "title": null, "description": null,
                "start": "2026-11-23T10:00:00Z", "end": "2026-11-23T12:00:00Z",
                "parameters": {"values": {}, "raw": null}
            }))
            .unwrap();
        });
        let d = record(Some(b), &moved, 4);
        assert_eq!(d.result, Work);
        let r = claim(d.booking, Neighbours::default(), "me", 5, 100).unwrap();
        assert_eq!((r.result, r.booking.resource_id), (Some(Op::Release), 7));
        let done = Finish::Done {
            outcome: "ok".into(),
        };
        let f = finish(r.booking, "me", &done, 6).unwrap();
        assert_eq!(
            (f.booking.desired, f.booking.state, f.booking.resource_id),
            (Desired::Active, State::Pending, 8)
        );
        let c = claim(f.booking, Neighbours::default(), "me", 7, 100).unwrap();
        assert_eq!(c.result, Some(Op::Configure));
    }

    #[test]
    fn an_end_during_a_move_cancels_the_configure_that_was_to_follow() {
        let b = active(10);
        let d = record(Some(b), &update(|i| i.user_id = "v".into()), 4);
        assert!(d.booking.next_reservation.is_some());
        let e = record(Some(d.booking), &intent(Desired::Released), 5);
        assert_eq!(e.booking.next_reservation, None);
        let r = claim(e.booking, Neighbours::default(), "me", 6, 100).unwrap();
        let done = Finish::Done {
            outcome: "ok".into(),
        };
        let f = finish(r.booking, "me", &done, 7).unwrap();
        assert_eq!(f.booking.state, State::Released);
        assert!(f.booking.settled());
    }
}
