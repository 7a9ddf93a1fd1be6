//! One step on the shared ledger: a read of what the decision needs, in one statement, and
//! a write of the decision, in one statement that applies only if the booking row and its
//! resource's decision count are still as read (decision 9). Both are prepared once per
//! connection.

use std::sync::LazyLock;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::booking;
use crate::engine::ledger::rules::Neighbours;
use crate::engine::ledger::{Booking, COLUMNS, Millis, NewEntry, StoreError};

/// Times a step may find what it read changed before it gives up. Each time another step
/// wrote first, so the ledger as a whole moves on.
const MAX_CONFLICTS: u32 = 200;

/// What a step's decision is taken on, read in one statement (one snapshot).
struct Read {
    booking: Option<Booking>,
    /// The booking row's `xmin`: changes with every write of the row.
    row_version: Option<String>,
    resource: i64,
    /// The resource's decision count; `None` before its first decision.
    resource_version: Option<i64>,
    neighbours: Neighbours,
}

/// Built once: reads booking `$1` (of resource `$2` if it is new), the versions, and its
/// neighbours as at time `$3`.
static READ: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<String> = COLUMNS.iter().map(|c| format!("b.{c}")).collect();
    format!(
        "WITH b AS (SELECT *, xmin::text AS row_version FROM bookings WHERE id = $1), \
         res AS (SELECT COALESCE((SELECT resource_id FROM b), $2::BIGINT) AS rid) \
         SELECT {}, b.row_version, res.rid, \
           (SELECT version FROM resource_decisions WHERE resource_id = res.rid) AS rversion, \
           EXISTS (SELECT 1 FROM bookings o WHERE o.resource_id = res.rid AND o.id <> $1 \
                   AND o.lease_until > $3) AS leased, \
           EXISTS (SELECT 1 FROM bookings o WHERE o.resource_id = res.rid AND o.id <> $1 \
                   AND o.desired = 'released' AND o.next_attempt_at IS NOT NULL) AS releasing \
         FROM res LEFT JOIN b ON TRUE",
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

async fn read(
    c: &impl GenericClient,
    id: &str,
    resource: i64,
    now: Millis,
) -> Result<Read, StoreError> {
    let statement = c.prepare_cached(&READ).await?;
    read_row(&c.query_one(&statement, &[&id, &resource, &now]).await?)
}

/// Built once: writes a decision if the row and its resource are as read. `$1`..`$23` the
/// row ([`COLUMNS`]), then its row version, resource and resource version as read, its
/// history lines, its reports (kinds, booking ids, bodies) and the time; answers 1 if
/// written, 0 if something changed meanwhile (and then nothing is written).
static WRITE: LazyLock<String> = LazyLock::new(|| {
    let n = COLUMNS.len();
    let p = |i: usize| format!("${}", n + i);
    let (row_version, resource, resource_version) = (p(1), p(2), p(3));
    let (history, kinds, booking_ids, bodies, now) = (p(4), p(5), p(6), p(7), p(8));
    let upsert = crate::engine::ledger::upsert_guarded_sql(
        '$',
        "decision",
        &format!("bookings.xmin::text = {row_version}"),
    );
    format!(
        "WITH decision AS ( \
           INSERT INTO resource_decisions (resource_id, version) VALUES ({resource}, 1) \
           ON CONFLICT (resource_id) DO UPDATE SET version = resource_decisions.version + 1 \
           WHERE resource_decisions.version = {resource_version} RETURNING 1), \
         row AS ({upsert} RETURNING id), \
         history AS (INSERT INTO booking_history (booking_id, at, what) \
           SELECT row.id, {now}, h.what FROM row, \
           unnest({history}::TEXT[]) WITH ORDINALITY AS h(what, n) ORDER BY h.n), \
         reports AS (INSERT INTO outbox (kind, booking_id, body, state, attempts, \
           next_attempt_at, created_at, updated_at) \
           SELECT e.kind, e.booking_id, e.body, 'pending', 0, {now}, {now}, {now} FROM row, \
           unnest({kinds}::TEXT[], {booking_ids}::TEXT[], {bodies}::TEXT[]) \
             WITH ORDINALITY AS e(kind, booking_id, body, n) ORDER BY e.n) \
         SELECT COUNT(*) FROM row"
    )
});

/// A decision to write.
pub(super) struct Write<'a> {
    pub booking: Booking,
    pub history: Vec<String>,
    pub reports: Vec<&'a NewEntry>,
}

/// Writes `w` if what `r` read still holds; `false` if it changed (nothing written).
async fn write(
    c: &impl GenericClient,
    r: &Read,
    w: &Write<'_>,
    now: Millis,
) -> Result<bool, StoreError> {
    let b = &w.booking;
    let attempts = b.attempts as i32;
    let kinds: Vec<&str> = w.reports.iter().map(|e| e.kind.as_str()).collect();
    let booking_ids: Vec<Option<&str>> =
        w.reports.iter().map(|e| e.booking_id.as_deref()).collect();
    let bodies: Vec<&str> = w.reports.iter().map(|e| e.body.as_str()).collect();
    let params: [&(dyn ToSql + Sync); 34] = [
        &b.id,
        &b.resource_id,
        &b.resource_name,
        &b.user_id,
        &b.start,
        &b.end,
        &b.reservation,
        &b.webhook_id,
        &b.desired.as_str(),
        &b.state.as_str(),
        &attempts,
        &b.last_error,
        &b.error_transient,
        &b.outcome,
        &b.next_attempt_at,
        &b.lease_owner,
        &b.lease_until,
        &b.execution_id,
        &b.event_type,
        &b.body,
        &b.audit_deferred,
        &b.created_at,
        &b.updated_at,
        &b.key_id,
        &b.next_reservation,
        &b.end_changed,
        // What the decision read.
        &r.row_version,
        &r.resource,
        &r.resource_version,
        // What goes with it.
        &w.history,
        &kinds,
        &booking_ids,
        &bodies,
        &now,
    ];
    let statement = c.prepare_cached(&WRITE).await?;
    let written: i64 = c.query_one(&statement, &params).await?.try_get(0)?;
    Ok(written == 1)
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

/// Runs one step on booking `id` (of `resource` if it is new): reads, decides with
/// `decide`, and writes; when what it read changed before the write, it reads and decides
/// again, after a short random wait once it has met others a few times.
pub(super) async fn step<'a, T>(
    c: &impl GenericClient,
    id: &str,
    resource: i64,
    now: Millis,
    mut decide: impl FnMut(Option<Booking>, Neighbours) -> Result<Step<'a, T>, StoreError>,
) -> Result<T, StoreError> {
    for conflict in 0..MAX_CONFLICTS {
        if conflict >= 2 {
            let most = 100u64 << conflict.min(8);
            tokio::time::sleep(Duration::from_micros(
                crate::engine::ledger::random() % most,
            ))
            .await;
        }
        let mut r = read(c, id, resource, now).await?;
        match decide(r.booking.take(), r.neighbours)? {
            Step::Keep(out) => return Ok(out),
            Step::Write(w, out) => {
                if write(c, &r, &w, now).await? {
                    return Ok(out);
                }
            }
        }
    }
    Err(StoreError(format!(
        "ledger (PostgreSQL): booking {id} changed under this step {MAX_CONFLICTS} times in a row"
    )))
}
