//! One step on the shared ledger: a read of what the decision needs, in one statement, and
//! a write of the decision, in one statement that applies only if the booking row and its
//! resource's decision count are still as read (decision 9). The statements take the
//! reads, and the writes, of several steps at once, which [`Group`] gathers (decision 16);
//! each is prepared once per connection.

use std::sync::LazyLock;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::booking;
use super::group::Group;
use crate::engine::ledger::rules::Neighbours;
use crate::engine::ledger::{Booking, COLUMNS, Millis, NewEntry, StoreError};

/// Times a step may find what it read changed before it gives up. Each time another step
/// wrote first, so the ledger as a whole moves on.
const MAX_CONFLICTS: u32 = 200;

/// What a step's decision is taken on, read in one statement (one snapshot), or known from
/// this replica's own last write of the row ([`Known`]).
pub(super) struct Read {
    booking: Option<Booking>,
    /// The booking row's `xmin`: changes with every write of the row.
    row_version: Option<String>,
    resource: i64,
    /// The resource's decision count; `None` before its first decision.
    resource_version: Option<i64>,
    neighbours: Neighbours,
}

/// What a step asks to read: booking `id` (of `resource` if it is new) and its neighbours
/// as at time `now`.
pub(super) struct Ask {
    pub id: String,
    resource: i64,
    now: Millis,
}

/// Built once: reads what several steps ask for ([`Ask`], one element of each array
/// `$1`..`$3` per step) in one statement: for each, its number (from 1), the booking, the
/// versions, and the neighbours. (`OFFSET 0` keeps the lookup of each booking by its key,
/// whatever number of steps the plan expects.)
pub(super) static READ: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<String> = COLUMNS.iter().map(|c| format!("b.{c}")).collect();
    format!(
        "SELECT i.n, {}, b.row_version, r.rid, \
           (SELECT version FROM resource_decisions WHERE resource_id = r.rid) AS rversion, \
           EXISTS (SELECT 1 FROM bookings o WHERE o.resource_id = r.rid AND o.id <> i.id \
                   AND o.lease_until > i.at) AS leased, \
           EXISTS (SELECT 1 FROM bookings o WHERE o.resource_id = r.rid AND o.id <> i.id \
                   AND o.desired = 'released' AND o.next_attempt_at IS NOT NULL) AS releasing \
         FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[]) WITH ORDINALITY AS i(id, res, at, n) \
         LEFT JOIN LATERAL (SELECT *, xmin::text AS row_version FROM bookings \
           WHERE bookings.id = i.id OFFSET 0) b ON TRUE \
         CROSS JOIN LATERAL (SELECT COALESCE(b.resource_id, i.res) AS rid) r",
        columns.join(", ")
    )
});

fn read_row(r: &Row) -> Result<Read, StoreError> {
    let row_version: Option<String> = r.try_get("row_version")?;
    Ok(Read {
        booking: row_version.as_ref().map(|_| booking(r)).transpose()?,
        row_version,
        resource: r.try_get("rid")?,
        resource_version: r.try_get("rversion")?,
        neighbours: Neighbours {
            leased: r.try_get("leased")?,
            release_pending: r.try_get("releasing")?,
        },
    })
}

/// Reads what `asks` ask for in one [`READ`]: the answers in their order.
pub(super) async fn read(
    c: &impl GenericClient,
    asks: &[&Ask],
) -> Result<Vec<Result<Read, StoreError>>, StoreError> {
    let statement = c.prepare_cached(&READ).await?;
    let ids: Vec<&str> = asks.iter().map(|a| a.id.as_str()).collect();
    let resources: Vec<i64> = asks.iter().map(|a| a.resource).collect();
    let times: Vec<Millis> = asks.iter().map(|a| a.now).collect();
    let rows = c.query(&statement, &[&ids, &resources, &times]).await?;
    let mut reads: Vec<Option<Result<Read, StoreError>>> = asks.iter().map(|_| None).collect();
    for row in &rows {
        let n: i64 = row.try_get("n")?;
        if let Some(slot) = reads.get_mut(n as usize - 1) {
            *slot = Some(read_row(row));
        }
    }
    Ok(reads
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(StoreError(
                    "ledger (PostgreSQL): a read went missing".into(),
                ))
            })
        })
        .collect())
}

/// The PostgreSQL type of each of [`COLUMNS`], in their order.
const TYPES: [&str; COLUMNS.len()] = [
    "TEXT", "BIGINT", "TEXT", "TEXT", "BIGINT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT",
    "INTEGER", "TEXT", "BOOLEAN", "TEXT", "BIGINT", "TEXT", "BIGINT", "TEXT", "TEXT", "TEXT",
    "BOOLEAN", "BIGINT", "BIGINT", "TEXT", "TEXT", "BOOLEAN",
];

/// Built once: writes the decisions of several steps, each only if its row and its
/// resource are as it read them, in one statement. Its parameters ([`params`]) are arrays
/// with one element per step: `$1`..`$26` the rows ([`COLUMNS`]), then the row version,
/// resource and resource version each read, and each step's time; then the history lines
/// and the reports, each with the number of its step (from 1). No two steps may name the
/// same booking or the same resource. Answers, for each booking written, its id, its new
/// row version and its resource's new decision count; a step whose read no longer held
/// wrote nothing at all.
pub(super) static WRITE: LazyLock<String> = LazyLock::new(|| {
    let n = COLUMNS.len();
    let p = |i: usize| format!("${}", n + i);
    let arrays: Vec<String> = (1..=n)
        .map(|i| format!("${i}::{}[]", TYPES[i - 1]))
        .chain([
            format!("{}::TEXT[]", p(1)),
            format!("{}::BIGINT[]", p(2)),
            format!("{}::BIGINT[]", p(3)),
            format!("{}::BIGINT[]", p(4)),
        ])
        .collect();
    let inputs: Vec<String> = COLUMNS.iter().map(|c| format!("input.{c}")).collect();
    let updates: Vec<String> = COLUMNS[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "WITH input AS (SELECT * FROM unnest({arrays}) WITH ORDINALITY \
           AS i({columns}, row_version, res, res_version, at, n)), \
         decision AS ( \
           INSERT INTO resource_decisions (resource_id, version) \
           SELECT res, 1 FROM input ORDER BY n \
           ON CONFLICT (resource_id) DO UPDATE SET version = resource_decisions.version + 1 \
           WHERE resource_decisions.version = \
             (SELECT res_version FROM input WHERE input.res = excluded.resource_id) \
           RETURNING resource_id, version), \
         row AS ( \
           INSERT INTO bookings ({columns}) \
           SELECT {inputs} FROM input JOIN decision ON decision.resource_id = input.res \
           ORDER BY input.n \
           ON CONFLICT (id) DO UPDATE SET {updates} \
           WHERE bookings.xmin::text = \
             (SELECT row_version FROM input WHERE input.id = excluded.id) \
           RETURNING id, xmin::text AS row_version, resource_id), \
         history AS (INSERT INTO booking_history (booking_id, at, what) \
           SELECT row.id, input.at, h.what \
           FROM unnest({h_step}::BIGINT[], {h_what}::TEXT[]) WITH ORDINALITY AS h(step, what, n) \
           JOIN input ON input.n = h.step JOIN row ON row.id = input.id ORDER BY h.n), \
         reports AS (INSERT INTO outbox (kind, booking_id, body, state, attempts, \
           next_attempt_at, created_at, updated_at) \
           SELECT e.kind, e.booking_id, e.body, 'pending', 0, input.at, input.at, input.at \
           FROM unnest({e_step}::BIGINT[], {e_kind}::TEXT[], {e_booking}::TEXT[], \
             {e_body}::TEXT[]) WITH ORDINALITY AS e(step, kind, booking_id, body, n) \
           JOIN input ON input.n = e.step JOIN row ON row.id = input.id ORDER BY e.n) \
         SELECT row.id, row.row_version, decision.version FROM row \
           JOIN decision ON decision.resource_id = row.resource_id",
        arrays = arrays.join(", "),
        columns = COLUMNS.join(", "),
        inputs = inputs.join(", "),
        updates = updates.join(", "),
        h_step = p(5),
        h_what = p(6),
        e_step = p(7),
        e_kind = p(8),
        e_booking = p(9),
        e_body = p(10),
    )
});

/// An array parameter of [`WRITE`]: one element per step.
pub(super) type Param<'a> = Box<dyn ToSql + Sync + Send + 'a>;

fn array<'a, T: ToSql + Sync + Send + 'a>(jobs: &[&'a Job], f: impl Fn(&'a Job) -> T) -> Param<'a> {
    Box::new(jobs.iter().map(|j| f(j)).collect::<Vec<T>>())
}

/// The parameters of [`WRITE`] for `jobs`.
pub(super) fn params<'a>(jobs: &[&'a Job]) -> Vec<Param<'a>> {
    let mut h_step: Vec<i64> = Vec::new();
    let mut h_what: Vec<&str> = Vec::new();
    let mut e_step: Vec<i64> = Vec::new();
    let (mut e_kind, mut e_booking, mut e_body) = (Vec::new(), Vec::new(), Vec::new());
    for (i, j) in jobs.iter().enumerate() {
        let step = i as i64 + 1;
        for what in &j.history {
            h_step.push(step);
            h_what.push(what.as_str());
        }
        for ((kind, booking), body) in j.kinds.iter().zip(&j.booking_ids).zip(&j.bodies) {
            e_step.push(step);
            e_kind.push(*kind);
            e_booking.push(booking.as_deref());
            e_body.push(body.as_str());
        }
    }
    vec![
        array(jobs, |j| j.booking.id.as_str()),
        array(jobs, |j| j.booking.resource_id),
        array(jobs, |j| j.booking.resource_name.as_str()),
        array(jobs, |j| j.booking.user_id.as_str()),
        array(jobs, |j| j.booking.start),
        array(jobs, |j| j.booking.end),
        array(jobs, |j| j.booking.reservation.as_str()),
        array(jobs, |j| j.booking.webhook_id.as_deref()),
        array(jobs, |j| j.booking.desired.as_str()),
        array(jobs, |j| j.booking.state.as_str()),
        array(jobs, |j| j.booking.attempts as i32),
        array(jobs, |j| j.booking.last_error.as_deref()),
        array(jobs, |j| j.booking.error_transient),
        array(jobs, |j| j.booking.outcome.as_deref()),
        array(jobs, |j| j.booking.next_attempt_at),
        array(jobs, |j| j.booking.lease_owner.as_deref()),
        array(jobs, |j| j.booking.lease_until),
        array(jobs, |j| j.booking.execution_id.as_str()),
        array(jobs, |j| j.booking.event_type.as_str()),
        array(jobs, |j| j.booking.body.as_str()),
        array(jobs, |j| j.booking.audit_deferred),
        array(jobs, |j| j.booking.created_at),
        array(jobs, |j| j.booking.updated_at),
        array(jobs, |j| j.booking.key_id.as_deref()),
        array(jobs, |j| j.booking.next_reservation.as_deref()),
        array(jobs, |j| j.booking.end_changed),
        // What each decision read.
        array(jobs, |j| j.row_version.as_deref()),
        array(jobs, |j| j.resource),
        array(jobs, |j| j.resource_version),
        array(jobs, |j| j.now),
        // What goes with them.
        Box::new(h_step),
        Box::new(h_what),
        Box::new(e_step),
        Box::new(e_kind),
        Box::new(e_booking),
        Box::new(e_body),
    ]
}

/// A decision to write.
pub(super) struct Write<'a> {
    pub booking: Booking,
    pub history: Vec<String>,
    pub reports: Vec<&'a NewEntry>,
}

/// A decision to write with what it was taken on, owned, for the writer
/// ([`Group`](super::group::Group)).
pub(super) struct Job {
    pub booking: Booking,
    row_version: Option<String>,
    pub resource: i64,
    resource_version: Option<i64>,
    history: Vec<String>,
    kinds: Vec<&'static str>,
    booking_ids: Vec<Option<String>>,
    bodies: Vec<String>,
    now: Millis,
}

impl Job {
    fn new(r: &Read, w: &Write<'_>, now: Millis) -> Self {
        Self {
            booking: w.booking.clone(),
            row_version: r.row_version.clone(),
            resource: r.resource,
            resource_version: r.resource_version,
            history: w.history.clone(),
            kinds: w.reports.iter().map(|e| e.kind.as_str()).collect(),
            booking_ids: w.reports.iter().map(|e| e.booking_id.clone()).collect(),
            bodies: w.reports.iter().map(|e| e.body.clone()).collect(),
            now,
        }
    }
}

/// What a step decided from what it read: a decision to write, or nothing to write.
pub(super) enum Step<'a, T> {
    Write(Box<Write<'a>>, T),
    Keep(T),
}

impl<'a, T> Step<'a, T> {
    /// Write `w`, then answer `out`.
    pub(super) fn write(w: Write<'a>, out: T) -> Self {
        Step::Write(Box::new(w), out)
    }
}

/// How a write left its row: its new row version and its resource's new decision count.
pub(super) struct Written {
    pub row_version: String,
    pub resource_version: i64,
}

/// The most rows [`Known`] keeps; it starts again empty beyond (calls a crash cut short
/// never take theirs).
const MAX_KNOWN: usize = 4096;

/// The rows this replica last wrote with a lease of its own (a claim), as the write left
/// them. The step that records the leased call's result decides on that instead of
/// reading the row again: one statement less per call. The write's guard still applies, so
/// if the row changed meanwhile (an END, a renewed lease, another replica) nothing is
/// written and the step reads and decides again, as after any conflict.
#[derive(Default)]
pub(super) struct Known(std::sync::Mutex<std::collections::HashMap<String, Read>>);

impl Known {
    fn take(&self, id: &str) -> Option<Read> {
        self.0.lock().expect("known rows lock").remove(id)
    }

    /// Keeps how a write left `booking`'s row if it is leased, and forgets it otherwise.
    fn note(&self, booking: Booking, resource: i64, written: Written) {
        let mut known = self.0.lock().expect("known rows lock");
        if booking.lease_owner.is_none() {
            known.remove(&booking.id);
            return;
        }
        if known.len() >= MAX_KNOWN {
            known.clear();
        }
        known.insert(
            booking.id.clone(),
            Read {
                booking: Some(booking),
                row_version: Some(written.row_version),
                resource,
                resource_version: Some(written.resource_version),
                neighbours: Neighbours::default(),
            },
        );
    }
}

/// Where a step starts: what it reads, or the row as this replica's claim left it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Read the row.
    Read,
    /// Decide on the row as this replica's last leased write left it, if it is known
    /// ([`Known`]); only for a step that needs no neighbours (recording a call's result).
    Known,
}

/// Runs one step on booking `id` (of `resource` if it is new): reads, decides with
/// `decide`, and hands the decision to the writer, which commits it with the decisions of
/// the steps waiting at the same time; when what it read changed before the write, it
/// reads and decides again, after a short random wait once it has met others a few times.
pub(super) async fn step<'a, T>(
    group: &Group,
    id: &str,
    resource: i64,
    now: Millis,
    start: Start,
    mut decide: impl FnMut(Option<Booking>, Neighbours) -> Result<Step<'a, T>, StoreError>,
) -> Result<T, StoreError> {
    let mut known = match start {
        Start::Known => group.known.take(id),
        Start::Read => None,
    };
    for conflict in 0..MAX_CONFLICTS {
        if conflict >= 2 {
            let most = 100u64 << conflict.min(8);
            tokio::time::sleep(Duration::from_micros(
                crate::engine::ledger::random() % most,
            ))
            .await;
        }
        let reused = known.take();
        let from_known = reused.is_some();
        let mut r = match reused {
            Some(r) => r,
            None => {
                let ask = Ask {
                    id: id.to_owned(),
                    resource,
                    now,
                };
                group.read(ask).await?
            }
        };
        match decide(r.booking.take(), r.neighbours)? {
            // Only a write is checked against the row: a decision to keep it is taken on
            // what is read.
            Step::Keep(_) if from_known => {}
            Step::Keep(out) => return Ok(out),
            Step::Write(w, out) => {
                if let Some(written) = group.write(Job::new(&r, &w, now)).await? {
                    group.known.note(w.booking, r.resource, written);
                    return Ok(out);
                }
            }
        }
    }
    Err(StoreError(format!(
        "ledger (PostgreSQL): booking {id} changed under this step {MAX_CONFLICTS} times in a row"
    )))
}
