//! The shared ledger: PostgreSQL at `LEDGER_URL`, for several replicas behind one Service.
//!
//! A step reads what its decision needs in one statement (the booking, its row version, the
//! version of its resource's decisions, the neighbours), decides with [`rules`], and writes
//! the decision in one statement (the row, its history, its reports, the resource's next
//! version) that applies only if none of that changed meanwhile; otherwise it reads and
//! decides again. Each write is one durable commit, and every decision about a resource
//! bumps its version, so decisions about one resource are taken one at a time across all
//! replicas; the leases they write keep two replicas from calling the manager for one
//! booking, and an expired lease (a replica that died) is taken over (decision 9).
//! The steps waiting at the same moment are read in one statement and written in one
//! statement that commits once, each keeping its own guard (decision 16). Statements are
//! prepared once per connection. One replica at a time leads the timed
//! polls ([`Store::leads`]). The schema is created and migrated at start-up, idempotently,
//! in one place (`SCHEMA`).

use std::sync::LazyLock;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{NoTls, Row};

mod group;
mod lead;
mod step;

use step::{Start, Step, Write, step};

use super::rules;
use super::{
    ADDED_COLUMNS, Attempt, Booking, COLUMNS, Claim, Desired, Entry, EntryState, Event,
    FORGET_OUTCOMES_SQL, FORGET_REPORTS_SQL, Finish, Intent, Kind, Lease, Millis, NewEntry,
    PRUNABLE_SQL, Recorded, State, Store, StoreError, Verdict, active_bookings_sql,
    drop_leases_sql, failing_releases_sql, outbox_oldest_sql, overdue_bookings_sql,
};

// ---------------------------------------------------------------------------------------
// Schema and migrations: the one place that creates or changes the shared ledger's tables.
// Every statement is idempotent and runs at each start-up under `SCHEMA_LOCK`; a new column
// is added here with `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` after its table.
// `resource_decisions` (since decision 9): a version per resource, bumped by every decision.
// ---------------------------------------------------------------------------------------
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bookings (
    id TEXT PRIMARY KEY,
    resource_id BIGINT NOT NULL,
    resource_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    start_at BIGINT NOT NULL,
    end_at BIGINT NOT NULL,
    reservation TEXT NOT NULL,
    webhook_id TEXT,
    desired TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    error_transient BOOLEAN NOT NULL,
    outcome TEXT,
    next_attempt_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    execution_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    audit_deferred BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS bookings_due ON bookings (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS bookings_resource ON bookings (resource_id);
CREATE INDEX IF NOT EXISTS bookings_sweep ON bookings (desired, end_at);
CREATE INDEX IF NOT EXISTS bookings_settled ON bookings (updated_at)
    WHERE desired = 'released' AND next_attempt_at IS NULL;
CREATE TABLE IF NOT EXISTS booking_history (
    seq BIGSERIAL PRIMARY KEY,
    booking_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    what TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS booking_history_booking ON booking_history (booking_id, seq);
CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    booking_id TEXT,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_status TEXT,
    next_attempt_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_booking ON outbox (booking_id);
CREATE INDEX IF NOT EXISTS outbox_kept ON outbox (updated_at)
    WHERE state = 'failed' AND kind = 'notification' AND body <> '';
CREATE TABLE IF NOT EXISTS resource_decisions (
    resource_id BIGINT PRIMARY KEY,
    version BIGINT NOT NULL
);
";

/// The first key of this service's advisory locks ("WEBH"), so they never meet another
/// application's single-key locks in the same database.
const LOCK_SPACE: i32 = 0x5745_4248;
/// The second key of the lock taken while creating the schema.
const SCHEMA_LOCK: i32 = i32::MIN;
/// The second key of the lock the leading replica holds for as long as its session lives.
const LEADER_LOCK: i32 = i32::MIN + 1;

/// Connections kept open for reads and single statements; a busy replica uses a few at a
/// time. The readers and writers of [`group::Group`] hold theirs besides.
const POOL_SIZE: usize = 16;

/// The shared ledger.
pub struct Postgres {
    pool: Pool,
    /// Commits the steps' writes, those waiting at the same time together.
    group: group::Group,
    /// Who leads the timed polls.
    election: lead::Election,
}

/// The connection pool for `url`, with TLS as its `sslmode` asks ([`crate::engine::ledger_tls`]): the
/// one place that says how the ledger connects.
fn pool(url: &str) -> Result<(Pool, crate::engine::ledger_tls::Mode), StoreError> {
    let (config, tls) = crate::engine::ledger_tls::parse(url)
        .map_err(|e| StoreError(format!("LEDGER_URL: {e}")))?;
    let connector = tls
        .connector()
        .map_err(|e| StoreError(format!("LEDGER_URL: {e}")))?;
    let recycling = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match connector {
        Some(connector) => Manager::from_config(config, connector, recycling),
        None => Manager::from_config(config, NoTls, recycling),
    };
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE + group::WRITERS + group::READERS)
        .build()
        .map_err(|e| StoreError(format!("ledger (PostgreSQL): {e}")))?;
    Ok((pool, tls.mode))
}

impl Postgres {
    /// Connects to `url` (TLS as its `sslmode` asks: [`crate::engine::ledger_tls`]) and creates the
    /// schema if needed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (pool, mode) = pool(url)?;
        let this = Self {
            group: group::Group::start(&pool),
            pool,
            election: lead::Election::default(),
        };
        let mut client = this.client().await.map_err(|e| match mode {
            // The pool's error keeps the handshake's cause to itself: say what is checked.
            crate::engine::ledger_tls::Mode::VerifyFull if e.0.contains("TLS") => {
                StoreError(format!(
                    "{}: with sslmode=verify-full the server's certificate must be issued for \
                     the host in LEDGER_URL by a CA in sslrootcert (or the system's roots)",
                    e.0
                ))
            }
            _ => e,
        })?;
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&LOCK_SPACE, &SCHEMA_LOCK],
        )
        .await?;
        tx.batch_execute(SCHEMA).await?;
        // Columns a ledger written by an older version lacks.
        let names: Vec<&str> = ADDED_COLUMNS.iter().map(|(name, ..)| *name).collect();
        let present: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = 'bookings' \
                 AND column_name = ANY($1)",
                &[&names],
            )
            .await?
            .get(0);
        for (name, _, kind) in ADDED_COLUMNS {
            tx.batch_execute(&format!(
                "ALTER TABLE bookings ADD COLUMN IF NOT EXISTS {name} {kind}"
            ))
            .await?;
        }
        if present < names.len() as i64 {
            tx.batch_execute(FORGET_OUTCOMES_SQL).await?;
        }
        tx.commit().await?;
        Ok(this)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        client(&self.pool).await
    }
}

/// Deletes what retention may ([`PRUNABLE_SQL`]) in one statement, skipping any booking a
/// step holds meanwhile. It bumps the decision count of each resource it touches, so that a
/// step that read a pruned booking before it went decides again instead of writing what it
/// decided on a row that is gone.
static PRUNE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH doomed AS ({PRUNABLE_SQL} FOR UPDATE SKIP LOCKED), \
         bumped AS (UPDATE resource_decisions SET version = version + 1 \
           WHERE resource_id IN (SELECT resource_id FROM doomed)), \
         reports AS (DELETE FROM outbox WHERE booking_id IN (SELECT id FROM doomed)), \
         history AS (DELETE FROM booking_history WHERE booking_id IN (SELECT id FROM doomed)), \
         gone AS (DELETE FROM bookings WHERE id IN (SELECT id FROM doomed) RETURNING 1) \
         SELECT COUNT(*) FROM gone"
    )
});

async fn client(pool: &Pool) -> Result<deadpool_postgres::Client, StoreError> {
    pool.get().await.map_err(|e| {
        StoreError(format!(
            "ledger (PostgreSQL at LEDGER_URL) cannot be reached: {e}"
        ))
    })
}

async fn enqueue(
    c: &impl GenericClient,
    entries: &[NewEntry],
    now: Millis,
) -> Result<(), StoreError> {
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let booking_ids: Vec<Option<&str>> = entries.iter().map(|e| e.booking_id.as_deref()).collect();
    let bodies: Vec<&str> = entries.iter().map(|e| e.body.as_str()).collect();
    let statement = c
        .prepare_cached(
            "INSERT INTO outbox (kind, booking_id, body, state, attempts, next_attempt_at, \
             created_at, updated_at) \
             SELECT e.kind, e.booking_id, e.body, 'pending', 0, $4, $4, $4 \
             FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]) WITH ORDINALITY \
               AS e(kind, booking_id, body, n) ORDER BY e.n",
        )
        .await?;
    c.execute(&statement, &[&kinds, &booking_ids, &bodies, &now])
        .await?;
    Ok(())
}

/// Built once: reads a booking's row.
static LOAD: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM bookings WHERE id = $1", COLUMNS.join(", ")));

fn text_enum<T>(row: &Row, column: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    parse(&text).ok_or_else(|| StoreError(format!("ledger: unknown {column} {text:?}")))
}

fn booking(r: &Row) -> Result<Booking, StoreError> {
    Ok(Booking {
        id: r.try_get("id")?,
        resource_id: r.try_get("resource_id")?,
        resource_name: r.try_get("resource_name")?,
        user_id: r.try_get("user_id")?,
        start: r.try_get("start_at")?,
        end: r.try_get("end_at")?,
        reservation: r.try_get("reservation")?,
        webhook_id: r.try_get("webhook_id")?,
        desired: text_enum(r, "desired", Desired::parse)?,
        state: text_enum(r, "state", State::parse)?,
        attempts: r.try_get::<_, i32>("attempts")? as u32,
        last_error: r.try_get("last_error")?,
        error_transient: r.try_get("error_transient")?,
        outcome: r.try_get("outcome")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_until: r.try_get("lease_until")?,
        execution_id: r.try_get("execution_id")?,
        event_type: r.try_get("event_type")?,
        body: r.try_get("body")?,
        audit_deferred: r.try_get("audit_deferred")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        key_id: r.try_get("key_id")?,
        next_reservation: r.try_get("next_reservation")?,
        end_changed: r.try_get("end_changed")?,
    })
}

const ENTRY_COLUMNS: &str = "id, kind, booking_id, body, state, attempts, last_status, \
                             next_attempt_at, created_at, updated_at";

fn entry(r: &Row) -> Result<Entry, StoreError> {
    Ok(Entry {
        id: r.try_get("id")?,
        kind: text_enum(r, "kind", Kind::parse)?,
        booking_id: r.try_get("booking_id")?,
        body: r.try_get("body")?,
        state: text_enum(r, "state", EntryState::parse)?,
        attempts: r.try_get::<_, i32>("attempts")? as u32,
        last_status: r.try_get("last_status")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

#[async_trait]
impl Store for Postgres {
    async fn record(
        &self,
        intent: &Intent,
        now: Millis,
        lease: Option<Lease<'_>>,
    ) -> Result<Recorded, StoreError> {
        let id = &intent.booking_id;
        step(
            &self.group,
            id,
            intent.resource_id,
            now,
            Start::Read,
            |existing, neighbours| {
                let d = rules::record(existing, intent, now);
                let claimed = match lease {
                    Some(l) if d.result == Verdict::Work => {
                        rules::claim(d.booking.clone(), neighbours, l.owner, now, l.until)
                    }
                    _ => None,
                };
                Ok(match claimed {
                    // The claim's row holds the record's changes too: the row is written once.
                    Some(c) => Step::write(
                        Write {
                            booking: c.booking.clone(),
                            history: vec![d.history, c.history.clone()],
                            reports: Vec::new(),
                        },
                        Recorded {
                            verdict: d.result,
                            booking: c.booking.clone(),
                            claim: c.into_claim(),
                        },
                    ),
                    None => Step::write(
                        Write {
                            booking: d.booking.clone(),
                            history: vec![d.history],
                            reports: Vec::new(),
                        },
                        Recorded {
                            verdict: d.result,
                            booking: d.booking,
                            claim: None,
                        },
                    ),
                })
            },
        )
        .await
    }

    async fn claim(
        &self,
        id: &str,
        owner: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<Claim>, StoreError> {
        // A booking that does not exist has no resource to read: any key finds none.
        step(
            &self.group,
            id,
            0,
            now,
            Start::Read,
            |existing, neighbours| {
                let Some(d) =
                    existing.and_then(|b| rules::claim(b, neighbours, owner, now, lease_until))
                else {
                    return Ok(Step::Keep(None));
                };
                let w = Write {
                    booking: d.booking.clone(),
                    history: vec![d.history.clone()],
                    reports: Vec::new(),
                };
                Ok(Step::write(w, d.into_claim()))
            },
        )
        .await
    }

    async fn renew(&self, id: &str, owner: &str, lease_until: Millis) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE bookings SET lease_until = $3 WHERE id = $1 AND lease_owner = $2",
            )
            .await?;
        let n = client
            .execute(&statement, &[&id, &owner, &lease_until])
            .await?;
        Ok(n == 1)
    }

    async fn finish(
        &self,
        id: &str,
        owner: &str,
        finish: &Finish,
        now: Millis,
        reports: &[NewEntry],
        deferred_audit: Option<&NewEntry>,
    ) -> Result<Option<Booking>, StoreError> {
        // On the row as the claim left it, when this replica made the claim.
        step(&self.group, id, 0, now, Start::Known, |existing, _| {
            let Some(d) = existing.and_then(|b| rules::finish(b, owner, finish, now)) else {
                return Ok(Step::Keep(None));
            };
            let mut entries: Vec<&NewEntry> = reports.iter().collect();
            if let (true, Some(entry)) = (d.result, deferred_audit) {
                entries.push(entry);
            }
            let w = Write {
                booking: d.booking.clone(),
                history: vec![d.history],
                reports: entries,
            };
            Ok(Step::write(w, Some(d.booking)))
        })
        .await
    }

    async fn defer(&self, id: &str, now: Millis) -> Result<bool, StoreError> {
        let client = self.client().await?;
        // One statement, so the flag and its history line are one commit.
        let statement = client
            .prepare_cached(
                "WITH row AS (UPDATE bookings SET audit_deferred = TRUE, updated_at = $2 \
                   WHERE id = $1 AND next_attempt_at IS NOT NULL RETURNING id), \
                 history AS (INSERT INTO booking_history (booking_id, at, what) \
                   SELECT id, $2, $3 FROM row) \
                 SELECT COUNT(*) FROM row",
            )
            .await?;
        let what = "answered 202: the work goes on in the background";
        let n: i64 = client
            .query_one(&statement, &[&id, &now, &what])
            .await?
            .try_get(0)?;
        Ok(n == 1)
    }

    async fn booking(&self, id: &str) -> Result<Option<Booking>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&LOAD).await?;
        let row = client.query_opt(&statement, &[&id]).await?;
        row.map(|r| booking(&r)).transpose()
    }

    async fn history(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT at, what FROM booking_history WHERE booking_id = $1 ORDER BY seq",
            )
            .await?;
        let rows = client.query(&statement, &[&id]).await?;
        Ok(rows
            .iter()
            .map(|r| Event {
                at: r.get(0),
                what: r.get(1),
            })
            .collect())
    }

    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        // Releases first, each kind in the order of the due index, walked by a plain index
        // scan: it marks the entries of row versions no longer visible to anyone (every
        // call leaves one) so that later scans skip them, where a bitmap scan and a sort
        // (the plan of one `ORDER BY desired = 'released' DESC`) would visit them all
        // again in the table at every look, and the look follows every call.
        let statement = client
            .prepare_cached(
                "SELECT id FROM ( \
                   (SELECT id, 0 AS kind, next_attempt_at FROM bookings \
                    WHERE next_attempt_at <= $1 AND desired = 'released' \
                    AND (lease_until IS NULL OR lease_until <= $1) \
                    ORDER BY next_attempt_at LIMIT $2) \
                   UNION ALL \
                   (SELECT id, 1, next_attempt_at FROM bookings \
                    WHERE next_attempt_at <= $1 AND desired <> 'released' \
                    AND (lease_until IS NULL OR lease_until <= $1) \
                    ORDER BY next_attempt_at LIMIT $2)) due \
                 ORDER BY kind, next_attempt_at LIMIT $2",
            )
            .await?;
        let rows = client.query(&statement, &[&now, &(limit as i64)]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn sweep(&self, now: Millis, grace: Millis) -> Result<Vec<String>, StoreError> {
        let candidates = {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT id, resource_id FROM bookings WHERE desired = 'active' \
                     AND end_at + $2 < $1 AND state <> 'released'",
                )
                .await?;
            client.query(&statement, &[&now, &grace]).await?
        };
        let mut call = Vec::new();
        for row in candidates {
            let (id, resource): (String, i64) = (row.get(0), row.get(1));
            let needs_call = step(
                &self.group,
                &id,
                resource,
                now,
                Start::Read,
                |existing, _| {
                    Ok(match existing.and_then(|b| rules::sweep(b, now)) {
                        Some(d) => Step::write(
                            Write {
                                booking: d.booking,
                                history: vec![d.history],
                                reports: Vec::new(),
                            },
                            d.result,
                        ),
                        None => Step::Keep(false),
                    })
                },
            )
            .await?;
            if needs_call {
                call.push(id);
            }
        }
        Ok(call)
    }

    async fn drop_leases(&self, owner: Option<&str>) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let [bookings, reports] = drop_leases_sql("$1::TEXT");
        let n = client.execute(&bookings, &[&owner]).await?;
        client.execute(&reports, &[&owner]).await?;
        Ok(n)
    }

    async fn active_bookings(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&active_bookings_sql("")).await?;
        let row = client.query_one(&statement, &[]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn failing_releases(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&failing_releases_sql("")).await?;
        let row = client.query_one(&statement, &[]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn overdue_bookings(&self, cutoff: Millis) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&overdue_bookings_sql("")).await?;
        let row = client.query_one(&statement, &[&cutoff]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn bookings_of_resource(&self, resource_id: i64) -> Result<Vec<Booking>, StoreError> {
        let sql = format!(
            "SELECT {} FROM bookings WHERE resource_id = $1 AND desired = 'active'",
            COLUMNS.join(", ")
        );
        let rows = self.client().await?.query(&sql, &[&resource_id]).await?;
        rows.iter().map(booking).collect()
    }

    async fn enqueue(&self, entries: &[NewEntry], now: Millis) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        enqueue(&self.client().await?, entries, now).await
    }

    async fn outbox_claim(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "UPDATE outbox SET lease_owner = $1, lease_until = $2 WHERE id IN ( \
                   SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $3 \
                   AND (lease_until IS NULL OR lease_until <= $3) \
                   ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING {ENTRY_COLUMNS}"
            ))
            .await?;
        let rows = client
            .query(&statement, &[&owner, &lease_until, &now, &(limit as i64)])
            .await?;
        rows.iter().map(entry).collect()
    }

    async fn outbox_finish(
        &self,
        id: i64,
        owner: &str,
        attempt: &Attempt,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (state, status, next) = match attempt {
            Attempt::Delivered { status } => (EntryState::Delivered, status, None),
            Attempt::Retry { status, at } => (EntryState::Pending, status, Some(*at)),
            Attempt::Failed { status } => (EntryState::Failed, status, None),
        };
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE outbox SET state = $3, attempts = attempts + 1, last_status = $4, \
                 next_attempt_at = $5, lease_owner = NULL, lease_until = NULL, updated_at = $6, \
                 body = CASE WHEN $3 = 'delivered' AND kind = 'notification' THEN '' ELSE body END \
                 WHERE id = $1 AND lease_owner = $2",
            )
            .await?;
        client
            .execute(
                &statement,
                &[&id, &owner, &state.as_str(), status, &next, &now],
            )
            .await?;
        Ok(())
    }

    async fn prune(&self, before: Millis, limit: usize) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&PRUNE).await?;
        let row = client
            .query_one(&statement, &[&before, &(limit as i64)])
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn forget_reports(&self, before: Millis) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(FORGET_REPORTS_SQL).await?;
        Ok(client.execute(&statement, &[&before]).await?)
    }

    async fn outbox_list(&self, all: bool, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM outbox WHERE $1 OR state <> 'delivered' \
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&all, &(limit as i64)],
            )
            .await?;
        rows.iter().map(entry).collect()
    }

    async fn outbox_retry(&self, id: i64, now: Millis) -> Result<Option<bool>, StoreError> {
        let row = self
            .client()
            .await?
            .query_one(
                "WITH retried AS (UPDATE outbox SET state = 'pending', attempts = 0, \
                   next_attempt_at = $2, updated_at = $2 WHERE id = $1 AND state = 'failed' \
                   RETURNING id) \
                 SELECT EXISTS (SELECT 1 FROM outbox WHERE id = $1), \
                        EXISTS (SELECT 1 FROM retried)",
                &[&id, &now],
            )
            .await?;
        let (exists, retried): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
        Ok(exists.then_some(retried))
    }

    async fn outbox_backlog(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
            .await?;
        let row = client.query_one(&statement, &[]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn outbox_oldest(&self) -> Result<Option<Millis>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&outbox_oldest_sql("")).await?;
        let row = client.query_one(&statement, &[]).await?;
        Ok(row.get(0))
    }

    fn leads(&self) -> bool {
        self.election.leads(&self.pool)
    }
}
