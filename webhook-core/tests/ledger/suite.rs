//! One suite for both stores: each case takes two handles on one ledger (two connections,
//! as two replicas would have) and checks a rule of the ledger through the `Store` trait.

use std::sync::Arc;

use webhook::engine::ledger::{
    Attempt, Desired, EntryState, Finish, Intent, Kind, Lease, Millis, NewEntry, Op, State, Store,
    Verdict,
};

/// Two handles on one fresh ledger, and what keeps it alive.
pub type Ledger = (
    Arc<dyn Store>,
    Arc<dyn Store>,
    Box<dyn std::any::Any + Send>,
);

pub fn intent(id: &str, resource: i64, desired: Desired) -> Intent {
    Intent {
        desired,
        booking_id: id.into(),
        resource_id: resource,
        resource_name: format!("port-{resource}"),
        user_id: "user".into(),
        start: 0,
        end: 1_000,
        reservation: "{}".into(),
        webhook_id: Some("7".into()),
        event_type: if desired == Desired::Active {
            "EVENT_START"
        } else {
            "EVENT_END"
        },
        body: "{}".into(),
        key_id: None,
        update: false,
        defer_audit: false,
    }
}

const START: Desired = Desired::Active;
const END: Desired = Desired::Released;
const T: i64 = 1_000_000;
const LEASE: i64 = T + 30_000;

fn done() -> Finish {
    Finish::Done {
        outcome: "ok".into(),
    }
}

pub async fn a_start_asks_for_work_and_a_second_start_finds_it_in_progress(l: Ledger) {
    let (a, b, _keep) = l;
    let first = a.record(&intent("1", 1, START), T, None).await.unwrap();
    let second = b.record(&intent("1", 1, START), T, None).await.unwrap();
    assert_eq!(first.verdict, Verdict::Work);
    assert_eq!(second.verdict, Verdict::InProgress);
    assert_eq!(first.booking.state, State::Pending);
}

pub async fn only_one_of_many_concurrent_claims_wins(l: Ledger) {
    let (a, b, _keep) = l;
    a.record(&intent("1", 1, START), T, None).await.unwrap();
    let mut claims = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        claims.push(tokio::spawn(async move {
            store
                .claim("1", &format!("replica-{i}"), T, LEASE)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for c in claims {
        if let Some(claim) = c.await.unwrap() {
            assert_eq!(claim.op, Op::Configure);
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

pub async fn a_booking_ended_before_it_was_configured_is_released_without_a_call(l: Ledger) {
    let (a, _b, _keep) = l;
    a.record(&intent("1", 1, START), T, None).await.unwrap();
    let end = a.record(&intent("1", 1, END), T + 1, None).await.unwrap();
    assert!(
        matches!(
            end.verdict,
            Verdict::Done {
                status: "ignored",
                ..
            }
        ),
        "{end:?}"
    );
    assert_eq!(end.booking.state, State::Released);
    assert!(a.claim("1", "me", T + 2, LEASE).await.unwrap().is_none());
    let late = a.record(&intent("1", 1, START), T + 3, None).await.unwrap();
    assert!(matches!(
        late.verdict,
        Verdict::Done {
            status: "ignored",
            ..
        }
    ));
    // END for a booking never seen: a no-op, and its START later too.
    let unknown = a.record(&intent("2", 1, END), T, None).await.unwrap();
    assert!(matches!(
        unknown.verdict,
        Verdict::Done {
            status: "ignored",
            ..
        }
    ));
    let start = a.record(&intent("2", 1, START), T + 1, None).await.unwrap();
    assert!(matches!(
        start.verdict,
        Verdict::Done {
            status: "ignored",
            ..
        }
    ));
}

pub async fn an_end_during_configure_is_released_right_after_it(l: Ledger) {
    let (a, b, _keep) = l;
    a.record(&intent("1", 1, START), T, None).await.unwrap();
    let claim = a.claim("1", "me", T, LEASE).await.unwrap().unwrap();
    assert_eq!(claim.op, Op::Configure);
    let end = b.record(&intent("1", 1, END), T + 1, None).await.unwrap();
    assert_eq!(end.verdict, Verdict::Work);
    assert!(b.claim("1", "other", T + 2, LEASE).await.unwrap().is_none());
    let after = a
        .finish("1", "me", &done(), T + 3, &[], None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.state, State::Active);
    assert!(!after.settled());
    let release = b.claim("1", "other", T + 4, LEASE).await.unwrap().unwrap();
    assert_eq!(release.op, Op::Release);
    let released = b
        .finish("1", "other", &done(), T + 5, &[], None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (released.state, released.settled()),
        (State::Released, true)
    );
}

pub async fn calls_on_one_resource_never_overlap_and_its_release_goes_first(l: Ledger) {
    let (a, b, _keep) = l;
    // Booking 1 is active on resource 9; its END and booking 2's START arrive together.
    a.record(&intent("1", 9, START), T, None).await.unwrap();
    a.claim("1", "me", T, LEASE).await.unwrap().unwrap();
    a.finish("1", "me", &done(), T, &[], None).await.unwrap();
    b.record(&intent("2", 9, START), T + 1, None).await.unwrap();
    a.record(&intent("1", 9, END), T + 1, None).await.unwrap();
    // The configure waits for the pending release; a booking elsewhere does not.
    assert!(b.claim("2", "other", T + 2, LEASE).await.unwrap().is_none());
    b.record(&intent("3", 10, START), T + 2, None)
        .await
        .unwrap();
    assert!(b.claim("3", "other", T + 2, LEASE).await.unwrap().is_some());
    // Releases come first when due work is listed.
    assert_eq!(a.due(T + 2, 10).await.unwrap(), ["1", "2"]);
    let release = a.claim("1", "me", T + 3, LEASE).await.unwrap().unwrap();
    assert_eq!(release.op, Op::Release);
    // While the release runs (leased), nothing else on the resource starts.
    assert!(b.claim("2", "other", T + 4, LEASE).await.unwrap().is_none());
    a.finish("1", "me", &done(), T + 5, &[], None)
        .await
        .unwrap();
    let configure = b.claim("2", "other", T + 6, LEASE).await.unwrap().unwrap();
    assert_eq!(configure.op, Op::Configure);
}

pub async fn a_delivery_claims_its_work_in_the_same_step_unless_it_may_not(l: Ledger) {
    let (a, b, _keep) = l;
    let me = Lease {
        owner: "me",
        until: LEASE,
    };
    let first = a.record(&intent("1", 9, START), T, Some(me)).await.unwrap();
    assert_eq!(first.verdict, Verdict::Work);
    let claim = first.claim.expect("the work is claimed with the record");
    assert_eq!(claim.op, Op::Configure);
    assert_eq!(
        (claim.booking.state, claim.booking.lease_owner.as_deref()),
        (State::Configuring, Some("me"))
    );
    assert_eq!(first.booking, claim.booking);
    // A second START only finds the work in progress; nothing more is claimed.
    let other = Lease {
        owner: "other",
        until: LEASE,
    };
    let again = b
        .record(&intent("1", 9, START), T + 1, Some(other))
        .await
        .unwrap();
    assert_eq!(
        (again.verdict, again.claim.is_none()),
        (Verdict::InProgress, true)
    );
    // An END while configure runs asks for work, but the lease forbids the claim.
    let end = b
        .record(&intent("1", 9, END), T + 2, Some(other))
        .await
        .unwrap();
    assert_eq!((end.verdict, end.claim.is_none()), (Verdict::Work, true));
    // Another booking of the same resource is recorded but not claimed while one runs.
    let neighbour = b
        .record(&intent("2", 9, START), T + 3, Some(other))
        .await
        .unwrap();
    assert_eq!(
        (
            neighbour.verdict,
            neighbour.claim.is_none(),
            neighbour.booking.state
        ),
        (Verdict::Work, true, State::Pending)
    );
    // A booking of another resource is claimed at once.
    let elsewhere = b
        .record(&intent("3", 10, START), T + 3, Some(other))
        .await
        .unwrap();
    assert!(elsewhere.claim.is_some());
    // Without a lease nothing is claimed.
    let unclaimed = a
        .record(&intent("4", 11, START), T + 3, None)
        .await
        .unwrap();
    assert_eq!(
        (unclaimed.verdict, unclaimed.claim.is_none()),
        (Verdict::Work, true)
    );
    // The claim's owner finishes the call as usual.
    let after = a
        .finish("1", "me", &done(), T + 4, &[], None)
        .await
        .unwrap();
    assert_eq!(after.map(|b| b.state), Some(State::Active));
}

pub async fn an_expired_lease_is_taken_over_and_the_old_owner_cannot_finish(l: Ledger) {
    let (a, b, _keep) = l;
    a.record(&intent("1", 1, START), T, None).await.unwrap();
    a.claim("1", "crashed", T, T + 100).await.unwrap().unwrap();
    assert!(b.claim("1", "me", T + 50, T + 500).await.unwrap().is_none());
    assert!(b.due(T + 50, 10).await.unwrap().is_empty());
    assert_eq!(b.due(T + 100, 10).await.unwrap(), ["1"]);
    let taken = b.claim("1", "me", T + 100, T + 500).await.unwrap().unwrap();
    assert_eq!(taken.booking.attempts, 2);
    assert!(!a.renew("1", "crashed", T + 900).await.unwrap());
    assert!(
        a.finish("1", "crashed", &done(), T + 101, &[], None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(b.renew("1", "me", T + 900).await.unwrap());
    let history = b.history("1").await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.what.contains("taking over from crashed")),
        "{history:?}"
    );
}

pub async fn a_retry_waits_for_its_time_and_a_failure_is_final(l: Ledger) {
    let (a, _b, _keep) = l;
    a.record(&intent("1", 1, START), T, None).await.unwrap();
    a.claim("1", "me", T, LEASE).await.unwrap().unwrap();
    let retry = Finish::Retry {
        error: "busy".into(),
        at: T + 1_000,
    };
    let b = a
        .finish("1", "me", &retry, T, &[], None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (b.state, b.last_error.as_deref()),
        (State::Configuring, Some("busy"))
    );
    assert!(a.claim("1", "me", T + 999, LEASE).await.unwrap().is_none());
    let second = a.claim("1", "me", T + 1_000, LEASE).await.unwrap().unwrap();
    assert_eq!(second.booking.attempts, 2);
    let failed = Finish::Failed {
        error: "bad VLAN".into(),
        transient: false,
        retry_at: None,
    };
    let b = a
        .finish("1", "me", &failed, T + 1_001, &[], None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.state, b.settled()), (State::Failed, true));
    // A new START tries again; an END releases what the failure left.
    let again = a
        .record(&intent("1", 1, START), T + 2_000, None)
        .await
        .unwrap();
    assert_eq!(again.verdict, Verdict::Work);
    let end = a
        .record(&intent("1", 1, END), T + 2_001, None)
        .await
        .unwrap();
    assert_eq!(end.verdict, Verdict::Work);
    let release = a.claim("1", "me", T + 2_002, LEASE).await.unwrap().unwrap();
    assert_eq!(release.op, Op::Release);
}

pub async fn the_sweeper_releases_bookings_past_their_end_and_grace(l: Ledger) {
    let (a, _b, _keep) = l;
    // end = 1_000; grace 500: swept after 1_500.
    a.record(&intent("active", 1, START), T, None)
        .await
        .unwrap();
    a.claim("active", "me", T, LEASE).await.unwrap().unwrap();
    a.finish("active", "me", &done(), T, &[], None)
        .await
        .unwrap();
    a.record(&intent("pending", 2, START), T, None)
        .await
        .unwrap();
    assert_eq!(a.active_bookings().await.unwrap(), 1);
    assert!(a.sweep(1_400, 500).await.unwrap().is_empty());
    let swept = a.sweep(T, 500).await.unwrap();
    assert_eq!(swept, ["active"]);
    // Still configured while its release waits.
    assert_eq!(a.active_bookings().await.unwrap(), 1);
    let pending = a.booking("pending").await.unwrap().unwrap();
    assert_eq!(
        (pending.desired, pending.state),
        (Desired::Released, State::Released)
    );
    let release = a.claim("active", "me", T, LEASE).await.unwrap().unwrap();
    assert_eq!(release.op, Op::Release);
    a.finish("active", "me", &done(), T, &[], None)
        .await
        .unwrap();
    assert_eq!(a.active_bookings().await.unwrap(), 0);
    assert!(a.sweep(T, 500).await.unwrap().is_empty());
}

pub async fn a_deferred_reply_gets_its_audit_entry_when_the_work_ends(l: Ledger) {
    let (a, _b, _keep) = l;
    a.record(&intent("1", 1, START), T, None).await.unwrap();
    a.claim("1", "me", T, LEASE).await.unwrap().unwrap();
    assert!(a.defer("1", T).await.unwrap());
    let entry = |kind| NewEntry {
        kind,
        booking_id: Some("1".into()),
        body: format!("{kind:?}"),
    };
    let notification = entry(Kind::Notification);
    let audit = entry(Kind::WebhookLog);
    a.finish("1", "me", &done(), T, &[notification], Some(&audit))
        .await
        .unwrap();
    assert!(
        !a.defer("1", T).await.unwrap(),
        "settled work cannot be deferred"
    );
    let stored = a.outbox_list(true, 10).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(a.outbox_backlog().await.unwrap(), 2);
}

pub async fn outbox_entries_are_leased_retried_delivered_and_retried_by_hand(l: Ledger) {
    let (a, b, _keep) = l;
    let entry = |n: usize| NewEntry {
        kind: Kind::Notification,
        booking_id: None,
        body: format!("{{\"n\":{n}}}"),
    };
    a.enqueue(&[entry(1), entry(2)], T).await.unwrap();
    let mine = a.outbox_claim("me", T, T + 60_000, 10).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert!(
        b.outbox_claim("other", T, T + 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let retry = Attempt::Retry {
        status: "503".into(),
        at: T + 500,
    };
    a.outbox_finish(mine[0].id, "me", &retry, T).await.unwrap();
    let failed = Attempt::Failed {
        status: "400 Bad Request".into(),
    };
    a.outbox_finish(mine[1].id, "me", &failed, T).await.unwrap();
    assert!(
        b.outbox_claim("other", T + 499, T + 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = b
        .outbox_claim("other", T + 500, T + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    let delivered = Attempt::Delivered {
        status: "200 OK".into(),
    };
    b.outbox_finish(again[0].id, "other", &delivered, T + 501)
        .await
        .unwrap();
    assert_eq!(a.outbox_backlog().await.unwrap(), 0);
    let open = a.outbox_list(false, 10).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].state, EntryState::Failed);
    assert_eq!(
        a.outbox_retry(open[0].id, T + 600).await.unwrap(),
        Some(true)
    );
    assert_eq!(
        a.outbox_retry(again[0].id, T + 600).await.unwrap(),
        Some(false)
    );
    assert_eq!(a.outbox_retry(999_999, T).await.unwrap(), None);
    assert_eq!(
        a.outbox_claim("me", T + 600, T + 60_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A notification may hold what the user was given: its text goes once it is delivered,
/// and a failed one's once it is older than the cut-off; other reports keep theirs.
pub async fn a_notifications_text_is_cleared_when_delivered_or_old_and_failed(l: Ledger) {
    let (a, b, _keep) = l;
    let entry = |kind, n: usize| NewEntry {
        kind,
        booking_id: Some(format!("{n}")),
        body: format!("{{\"password\":\"secret-{n}\"}}"),
    };
    a.enqueue(
        &[
            entry(Kind::Notification, 1),
            entry(Kind::Notification, 2),
            entry(Kind::Notification, 3),
            entry(Kind::WebhookLog, 4),
        ],
        T,
    )
    .await
    .unwrap();
    let claimed = a.outbox_claim("me", T, LEASE, 10).await.unwrap();
    let id = |n: usize| {
        let booking = Some(n.to_string());
        claimed.iter().find(|e| e.booking_id == booking).unwrap().id
    };
    let delivered = Attempt::Delivered {
        status: "200 OK".into(),
    };
    let failed = Attempt::Failed {
        status: "400 Bad Request".into(),
    };
    a.outbox_finish(id(1), "me", &delivered, T).await.unwrap();
    a.outbox_finish(id(2), "me", &failed, T).await.unwrap();
    a.outbox_finish(id(3), "me", &failed, T + 10).await.unwrap();
    a.outbox_finish(id(4), "me", &delivered, T).await.unwrap();
    assert_eq!(b.forget_reports(T + 5).await.unwrap(), 1);
    let mut bodies: Vec<(String, String)> = b
        .outbox_list(true, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.booking_id.unwrap(), e.body))
        .collect();
    bodies.sort();
    let kept = |n: usize| format!("{{\"password\":\"secret-{n}\"}}");
    assert_eq!(
        bodies,
        [
            ("1".into(), String::new()),
            ("2".into(), String::new()),
            ("3".into(), kept(3)),
            ("4".into(), kept(4)),
        ]
    );
}

/// Retention deletes bookings settled before the cut-off with their history and reports,
/// a batch at a time, and nothing that is wanted active, in progress, failing, waiting to
/// be reported or settled after the cut-off.
pub async fn retention_deletes_settled_bookings_and_nothing_in_use(l: Ledger) {
    let (a, b, _keep) = l;
    let cutoff = T + 10_000;
    let configure = |id: &'static str, at: Millis| {
        let a = a.clone();
        async move {
            a.record(&intent(id, resource(id), START), at, None)
                .await
                .unwrap();
            a.claim(id, "me", at, at + 30_000).await.unwrap().unwrap();
            a.finish(id, "me", &done(), at, &[], None).await.unwrap();
        }
    };
    let release = |id: &'static str, at: Millis, finish: Finish, reports: Vec<NewEntry>| {
        let a = a.clone();
        async move {
            a.record(&intent(id, resource(id), END), at, None)
                .await
                .unwrap();
            a.claim(id, "me", at, at + 30_000).await.unwrap().unwrap();
            a.finish(id, "me", &finish, at, &reports, None)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let report = |id: &str| NewEntry {
        kind: Kind::Notification,
        booking_id: Some(id.into()),
        body: "{}".into(),
    };
    // Settled before the cut-off: deleted, the third with its delivered report.
    for id in ["released-1", "released-2", "reported"] {
        configure(id, T).await;
    }
    release("released-1", T + 1, done(), vec![]).await;
    release("released-2", T + 2, done(), vec![]).await;
    release("reported", T + 3, done(), vec![report("reported")]).await;
    let sent = a.outbox_claim("me", T + 4, LEASE, 10).await.unwrap();
    a.outbox_finish(
        sent[0].id,
        "me",
        &Attempt::Delivered {
            status: "200".into(),
        },
        T + 4,
    )
    .await
    .unwrap();
    // Ended before it was configured: a released row with no call, deleted too.
    a.record(&intent("never-configured", 9, END), T + 5, None)
        .await
        .unwrap();
    // Kept: wanted active, pending, failing, with a report still to send, settled late.
    configure("active", T).await;
    a.record(&intent("pending", 10, START), T, None)
        .await
        .unwrap();
    configure("failing", T).await;
    let failing = Finish::Failed {
        error: "switch down".into(),
        transient: true,
        retry_at: Some(T + 600_000),
    };
    let failed = release("failing", T + 1, failing, vec![]).await;
    assert_eq!(failed.state, State::Failed);
    configure("unreported", T).await;
    release("unreported", T + 1, done(), vec![report("unreported")]).await;
    configure("late", T).await;
    release("late", cutoff + 1, done(), vec![]).await;

    assert_eq!(b.prune(cutoff, 2).await.unwrap(), 2, "one batch at most");
    assert_eq!(b.prune(cutoff, 100).await.unwrap(), 2);
    assert_eq!(b.prune(cutoff, 100).await.unwrap(), 0);
    for id in ["released-1", "released-2", "reported", "never-configured"] {
        assert_eq!(a.booking(id).await.unwrap(), None, "{id}");
        assert!(a.history(id).await.unwrap().is_empty(), "{id}");
    }
    for id in ["active", "pending", "failing", "unreported", "late"] {
        assert!(a.booking(id).await.unwrap().is_some(), "{id} was deleted");
        assert!(!a.history(id).await.unwrap().is_empty(), "{id}");
    }
    let reports: Vec<Option<String>> = a
        .outbox_list(true, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.booking_id)
        .collect();
    assert_eq!(reports, [Some("unreported".to_owned())]);
    // A pruned booking's END again is a booking never seen: nothing to do.
    let again = a
        .record(&intent("released-1", 1, END), cutoff + 2, None)
        .await
        .unwrap();
    assert!(matches!(
        again.verdict,
        Verdict::Done {
            status: "ignored",
            ..
        }
    ));
}

/// Each booking of [`retention_deletes_settled_bookings_and_nothing_in_use`] on a resource of
/// its own, so that none holds another back.
fn resource(id: &str) -> i64 {
    id.bytes().map(i64::from).sum()
}

pub async fn dropping_leases_makes_cut_short_work_due_at_once(l: Ledger) {
    let (a, _b, _keep) = l;
    a.record(&intent("1", 1, START), T, None).await.unwrap();
    a.claim("1", "crashed", T, LEASE).await.unwrap().unwrap();
    assert!(a.due(T + 1, 10).await.unwrap().is_empty());
    assert_eq!(a.drop_leases(Some("someone-else")).await.unwrap(), 0);
    assert_eq!(a.drop_leases(None).await.unwrap(), 1);
    assert_eq!(a.due(T + 1, 10).await.unwrap(), ["1"]);
    let resumed = a.claim("1", "me", T + 1, LEASE).await.unwrap().unwrap();
    assert_eq!(
        (resumed.op, resumed.booking.state),
        (Op::Configure, State::Configuring)
    );
}

/// One `#[tokio::test]` per case, on the ledger `$open` returns.
#[macro_export]
macro_rules! store_suite {
    ($open:path) => {
        $crate::store_suite!($open;
            a_start_asks_for_work_and_a_second_start_finds_it_in_progress,
            only_one_of_many_concurrent_claims_wins,
            a_booking_ended_before_it_was_configured_is_released_without_a_call,
            an_end_during_configure_is_released_right_after_it,
            a_delivery_claims_its_work_in_the_same_step_unless_it_may_not,
            calls_on_one_resource_never_overlap_and_its_release_goes_first,
            an_expired_lease_is_taken_over_and_the_old_owner_cannot_finish,
            a_retry_waits_for_its_time_and_a_failure_is_final,
            the_sweeper_releases_bookings_past_their_end_and_grace,
            a_deferred_reply_gets_its_audit_entry_when_the_work_ends,
            outbox_entries_are_leased_retried_delivered_and_retried_by_hand,
            a_notifications_text_is_cleared_when_delivered_or_old_and_failed,
            retention_deletes_settled_bookings_and_nothing_in_use,
            dropping_leases_makes_cut_short_work_due_at_once
        );
    };
    ($open:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::suite::$case($open().await).await;
            }
        )*
    };
}
