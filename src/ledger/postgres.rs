//! The shared ledger: PostgreSQL at `LEDGER_URL`, for several replicas behind one Service.
//!
//! Every step that decides about a booking runs in a transaction holding
//! `pg_advisory_xact_lock` on its resource and a row lock on the booking, so decisions about
//! one resource are taken one at a time across all replicas; the leases they write keep two
//! replicas from calling the manager for one booking, and an expired lease (a replica that
//! died) is taken over. The schema is created at start-up, idempotently.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::rules::{self, Decision, Neighbours};
use super::{
    ADDED_COLUMNS, Attempt, Booking, COLUMNS, Claim, Desired, Entry, EntryState, Event, Finish,
    Intent, Kind, Lease, Millis, NewEntry, Op, Recorded, State, Store, StoreError, Verdict,
    active_bookings_sql, drop_leases_sql,
};

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
";

/// The first key of this service's advisory locks ("WEBH"), so they never meet another
/// application's single-key locks in the same database.
const LOCK_SPACE: i32 = 0x5745_4248;
/// The second key of the lock taken while creating the schema.
const SCHEMA_LOCK: i32 = i32::MIN;

/// Connections kept open; a busy replica uses a few at a time.
const POOL_SIZE: usize = 16;

/// The shared ledger.
pub struct Postgres {
    pool: Pool,
}

/// The advisory-lock key of a resource.
fn resource_key(resource_id: i64) -> i32 {
    let folded = (resource_id ^ (resource_id >> 32)) as i32;
    if folded == SCHEMA_LOCK { 0 } else { folded }
}

impl Postgres {
    /// Connects to `url` (TLS as its `sslmode` asks: [`crate::ledger_tls`]) and creates the
    /// schema if needed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (config, tls) =
            crate::ledger_tls::parse(url).map_err(|e| StoreError(format!("LEDGER_URL: {e}")))?;
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
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError(format!("ledger (PostgreSQL): {e}")))?;
        let this = Self { pool };
        let mut client = this.client().await.map_err(|e| match tls.mode {
            // The pool's error keeps the handshake's cause to itself: say what is checked.
            crate::ledger_tls::Mode::VerifyFull if e.0.contains("TLS") => StoreError(format!(
                "{}: with sslmode=verify-full the server's certificate must be issued for \
                     the host in LEDGER_URL by a CA in sslrootcert (or the system's roots)",
                e.0
            )),
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
        for (name, _, kind) in ADDED_COLUMNS {
            tx.batch_execute(&format!(
                "ALTER TABLE bookings ADD COLUMN IF NOT EXISTS {name} {kind}"
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(this)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| {
            StoreError(format!(
                "ledger (PostgreSQL at LEDGER_URL) cannot be reached: {e}"
            ))
        })
    }
}

async fn lock_resource(c: &impl GenericClient, resource_id: i64) -> Result<(), StoreError> {
    c.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_SPACE, &resource_key(resource_id)],
    )
    .await?;
    Ok(())
}

async fn load(
    c: &impl GenericClient,
    id: &str,
    for_update: bool,
) -> Result<Option<Booking>, StoreError> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let sql = format!(
        "SELECT {} FROM bookings WHERE id = $1{lock}",
        COLUMNS.join(", ")
    );
    let row = c.query_opt(&sql, &[&id]).await?;
    row.map(|r| booking(&r)).transpose()
}

/// Built once: see [`upsert_sql`](super::upsert_sql).
static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| super::upsert_sql('$'));

async fn save<T>(c: &impl GenericClient, d: &Decision<T>) -> Result<(), StoreError> {
    let b = &d.booking;
    let attempts = b.attempts as i32;
    let params: [&(dyn ToSql + Sync); 26] = [
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
    ];
    c.execute(UPSERT.as_str(), &params).await?;
    note(c, &b.id, b.updated_at, &d.history).await
}

async fn note(c: &impl GenericClient, id: &str, at: Millis, what: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO booking_history (booking_id, at, what) VALUES ($1, $2, $3)",
        &[&id, &at, &what],
    )
    .await?;
    Ok(())
}

async fn enqueue(
    c: &impl GenericClient,
    entries: &[NewEntry],
    now: Millis,
) -> Result<(), StoreError> {
    for e in entries {
        c.execute(
            "INSERT INTO outbox (kind, booking_id, body, state, attempts, next_attempt_at, \
             created_at, updated_at) VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4)",
            &[&e.kind.as_str(), &e.booking_id, &e.body, &now],
        )
        .await?;
    }
    Ok(())
}

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

async fn neighbours(
    c: &impl GenericClient,
    b: &Booking,
    now: Millis,
) -> Result<Neighbours, StoreError> {
    let r = c
        .query_one(
            "SELECT \
               EXISTS (SELECT 1 FROM bookings WHERE resource_id = $1 AND id <> $2 \
                       AND lease_until > $3), \
               EXISTS (SELECT 1 FROM bookings WHERE resource_id = $1 AND id <> $2 \
                       AND desired = 'released' AND next_attempt_at IS NOT NULL)",
            &[&b.resource_id, &b.id, &now],
        )
        .await?;
    Ok(Neighbours {
        leased: r.try_get(0)?,
        release_pending: r.try_get(1)?,
    })
}

/// The resource of a booking, read without locks, to know which lock to take.
/// Locks the booking's resource, then reads the booking for update; `None` if unknown.
async fn load_locked(c: &impl GenericClient, id: &str) -> Result<Option<Booking>, StoreError> {
    let Some(resource) = resource_of(c, id).await? else {
        return Ok(None);
    };
    lock_resource(c, resource).await?;
    load(c, id, true).await
}

async fn resource_of(c: &impl GenericClient, id: &str) -> Result<Option<i64>, StoreError> {
    let row = c
        .query_opt("SELECT resource_id FROM bookings WHERE id = $1", &[&id])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// What claiming `b` decides ([`rules::claim`]), with its neighbours read; nothing saved.
/// The resource is locked.
async fn decide_claim(
    tx: &impl GenericClient,
    b: Booking,
    owner: &str,
    now: Millis,
    lease_until: Millis,
) -> Result<Option<Decision<Option<Op>>>, StoreError> {
    let n = neighbours(tx, &b, now).await?;
    Ok(rules::claim(b, n, owner, now, lease_until))
}

#[async_trait]
impl Store for Postgres {
    async fn record(
        &self,
        intent: &Intent,
        now: Millis,
        lease: Option<Lease<'_>>,
    ) -> Result<Recorded, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let resource = resource_of(&tx, &intent.booking_id)
            .await?
            .unwrap_or(intent.resource_id);
        lock_resource(&tx, resource).await?;
        let existing = load(&tx, &intent.booking_id, true).await?;
        let d = rules::record(existing, intent, now);
        let claimed = match lease {
            Some(l) if d.result == Verdict::Work => {
                decide_claim(&tx, d.booking.clone(), l.owner, now, l.until).await?
            }
            _ => None,
        };
        let (booking, claim) = match claimed {
            // The claim's row holds the record's changes too: the row is written once.
            Some(c) => {
                note(&tx, &d.booking.id, now, &d.history).await?;
                save(&tx, &c).await?;
                (c.booking.clone(), c.into_claim())
            }
            None => {
                save(&tx, &d).await?;
                (d.booking, None)
            }
        };
        tx.commit().await?;
        Ok(Recorded {
            verdict: d.result,
            booking,
            claim,
        })
    }

    async fn claim(
        &self,
        id: &str,
        owner: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<Claim>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(b) = load_locked(&tx, id).await? else {
            return Ok(None);
        };
        let Some(d) = decide_claim(&tx, b, owner, now, lease_until).await? else {
            return Ok(None);
        };
        save(&tx, &d).await?;
        tx.commit().await?;
        Ok(d.into_claim())
    }

    async fn renew(&self, id: &str, owner: &str, lease_until: Millis) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE bookings SET lease_until = $3 WHERE id = $1 AND lease_owner = $2",
                &[&id, &owner, &lease_until],
            )
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
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(b) = load_locked(&tx, id).await? else {
            return Ok(None);
        };
        let Some(d) = rules::finish(b, owner, finish, now) else {
            return Ok(None);
        };
        save(&tx, &d).await?;
        enqueue(&tx, reports, now).await?;
        if let (true, Some(entry)) = (d.result, deferred_audit) {
            enqueue(&tx, std::slice::from_ref(entry), now).await?;
        }
        tx.commit().await?;
        Ok(Some(d.booking))
    }

    async fn defer(&self, id: &str, now: Millis) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "UPDATE bookings SET audit_deferred = TRUE, updated_at = $2 \
                 WHERE id = $1 AND next_attempt_at IS NOT NULL",
                &[&id, &now],
            )
            .await?;
        if n == 1 {
            note(
                &tx,
                id,
                now,
                "answered 202: the work goes on in the background",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn booking(&self, id: &str) -> Result<Option<Booking>, StoreError> {
        load(&self.client().await?, id, false).await
    }

    async fn history(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT at, what FROM booking_history WHERE booking_id = $1 ORDER BY seq",
                &[&id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Event {
                at: r.get(0),
                what: r.get(1),
            })
            .collect())
    }

    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id FROM bookings WHERE next_attempt_at <= $1 \
                 AND (lease_until IS NULL OR lease_until <= $1) \
                 ORDER BY desired = 'released' DESC, next_attempt_at LIMIT $2",
                &[&now, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn sweep(&self, now: Millis, grace: Millis) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        let candidates = client
            .query(
                "SELECT id, resource_id FROM bookings WHERE desired = 'active' \
                 AND end_at + $2 < $1 AND state <> 'released'",
                &[&now, &grace],
            )
            .await?;
        let mut call = Vec::new();
        for row in candidates {
            let (id, resource): (String, i64) = (row.get(0), row.get(1));
            let tx = client.transaction().await?;
            lock_resource(&tx, resource).await?;
            if let Some(b) = load(&tx, &id, true).await?
                && let Some(d) = rules::sweep(b, now)
            {
                save(&tx, &d).await?;
                if d.result {
                    call.push(id);
                }
            }
            tx.commit().await?;
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
        let row = self
            .client()
            .await?
            .query_one(&active_bookings_sql(""), &[])
            .await?;
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
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        enqueue(&tx, entries, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn outbox_claim(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "UPDATE outbox SET lease_owner = $1, lease_until = $2 WHERE id IN ( \
                       SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $3 \
                       AND (lease_until IS NULL OR lease_until <= $3) \
                       ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                     RETURNING {ENTRY_COLUMNS}"
                ),
                &[&owner, &lease_until, &now, &(limit as i64)],
            )
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
        self.client()
            .await?
            .execute(
                "UPDATE outbox SET state = $3, attempts = attempts + 1, last_status = $4, \
                 next_attempt_at = $5, lease_owner = NULL, lease_until = NULL, updated_at = $6 \
                 WHERE id = $1 AND lease_owner = $2",
                &[&id, &owner, &state.as_str(), status, &next, &now],
            )
            .await?;
        Ok(())
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
        let client = self.client().await?;
        let Some(row) = client
            .query_opt("SELECT state FROM outbox WHERE id = $1", &[&id])
            .await?
        else {
            return Ok(None);
        };
        let n = client
            .execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $2, \
                 updated_at = $2 WHERE id = $1 AND state = 'failed'",
                &[&id, &now],
            )
            .await?;
        let _: String = row.get(0);
        Ok(Some(n == 1))
    }

    async fn outbox_backlog(&self) -> Result<u64, StoreError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT COUNT(*) FROM outbox WHERE state = 'pending'", &[])
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}
