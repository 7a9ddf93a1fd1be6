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

/// Starts a new operation for the row's desired state.
fn ask(b: &mut Booking, i: &Intent, now: Millis) {
    b.next_attempt_at = Some(now);
    b.attempts = 0;
    b.execution_id = execution_id();
    b.event_type = i.event_type.to_owned();
    b.body.clone_from(&i.body);
    b.audit_deferred = false;
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
        (
            Desired::Released,
            State::Configuring | State::Active | State::Releasing | State::Failed,
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
                Op::Configure => State::Active,
                Op::Release => State::Released,
            };
            b.outcome = Some(outcome.clone());
            b.last_error = None;
            b.error_transient = false;
            match op {
                Op::Configure => format!("configured (attempt {attempt})"),
                Op::Release => format!("released (attempt {attempt})"),
            }
        }
        Finish::Failed { error, transient } => {
            b.state = State::Failed;
            b.last_error = Some(error.clone());
            b.error_transient = *transient;
            let kind = if *transient {
                "transient, no attempts left"
            } else {
                "permanent"
            };
            format!("{name} attempt {attempt} failed ({kind}): {error}")
        }
    };
    let wanted = match b.desired {
        Desired::Active => Op::Configure,
        Desired::Released => Op::Release,
    };
    if wanted == op {
        b.next_attempt_at = None;
    } else {
        // The wish changed while the call ran (END during configure): act on it now.
        b.next_attempt_at = Some(now);
        b.attempts = 0;
    }
    let deferred = std::mem::take(&mut b.audit_deferred);
    Some(Decision {
        booking: b,
        result: deferred,
        history,
    })
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
    use crate::ledger::Finish;

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
}
