//! The embedded ledger: one SQLite file, `DATA_DIR/ledger.db`, for a single replica.
//!
//! One connection on its own thread takes the calls in order (SQLite writes one transaction
//! at a time anyway). The steps waiting together are committed together (`commit_group`):
//! one `BEGIN IMMEDIATE` transaction, a savepoint per step, and one full sync, so a recorded
//! booking survives a crash or a power cut and one sync serves many. While the service runs it
//! holds `DATA_DIR/ledger.lock`, so a second service on the same file stops at start-up
//! instead of acting on the same bookings; command-line looks need no lock.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::rules::{self, Decision, Neighbours};
use super::{
    ADDED_COLUMNS, Attempt, Booking, COLUMNS, Claim, Desired, Entry, EntryState, Event,
    FORGET_OUTCOMES_SQL, FORGET_REPORTS_SQL, Finish, Intent, Kind, Lease, Millis, NewEntry, Op,
    PRUNABLE_SQL, Recorded, State, Store, StoreError, Verdict, active_bookings_sql,
    drop_leases_sql, failing_releases_sql, outbox_oldest_sql, overdue_bookings_sql,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bookings (
    id TEXT PRIMARY KEY,
    resource_id INTEGER NOT NULL,
    resource_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    start_at INTEGER NOT NULL,
    end_at INTEGER NOT NULL,
    reservation TEXT NOT NULL,
    webhook_id TEXT,
    desired TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    error_transient INTEGER NOT NULL,
    outcome TEXT,
    next_attempt_at INTEGER,
    lease_owner TEXT,
    lease_until INTEGER,
    execution_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    audit_deferred INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bookings_due ON bookings (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS bookings_resource ON bookings (resource_id);
CREATE INDEX IF NOT EXISTS bookings_sweep ON bookings (desired, end_at);
CREATE INDEX IF NOT EXISTS bookings_settled ON bookings (updated_at)
    WHERE desired = 'released' AND next_attempt_at IS NULL;
CREATE TABLE IF NOT EXISTS booking_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    booking_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    what TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS booking_history_booking ON booking_history (booking_id, seq);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    booking_id TEXT,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_status TEXT,
    next_attempt_at INTEGER,
    lease_owner TEXT,
    lease_until INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_booking ON outbox (booking_id);
CREATE INDEX IF NOT EXISTS outbox_kept ON outbox (updated_at)
    WHERE state = 'failed' AND kind = 'notification' AND body <> '';
";

/// A step, run on the ledger's thread inside its group's transaction (`None` if that could
/// not begin); it returns how to answer once the group's commit is known.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Answer + Send>;
/// Sends a step's result, or the group's failure, to whoever asked.
type Answer = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// The most steps committed together.
const MAX_GROUP: usize = 256;

/// The embedded ledger.
pub struct Sqlite {
    jobs: mpsc::Sender<Job>,
    /// Held while serving: the lock on `ledger.lock`.
    _lock: Option<File>,
}

impl Sqlite {
    /// Opens (creating if needed) `dir/ledger.db`. Every failure names the directory and
    /// says what it needs, so a misconfigured volume stops the service with a clear message.
    pub fn open(dir: &Path, serving: bool) -> Result<Self, StoreError> {
        let problem = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            StoreError(format!(
                "DATA_DIR {}: {what} {}: {e} (DATA_DIR must be a directory this process can \
                 read and write; or set LEDGER_URL to use PostgreSQL)",
                dir.display(),
                path.display()
            ))
        };
        let db = dir.join("ledger.db");
        let lock = if serving {
            private_dir(dir).map_err(|e| problem("cannot create", dir, &e))?;
            private_file(&db).map_err(|e| problem("cannot open the ledger", &db, &e))?;
            let path = dir.join("ledger.lock");
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| problem("cannot open", &path, &e))?;
            match file.try_lock() {
                Ok(()) => Some(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError(format!(
                        "DATA_DIR {}: the ledger is in use by another running service; an \
                         embedded ledger serves one replica (set LEDGER_URL to share a \
                         PostgreSQL ledger between replicas)",
                        dir.display()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(problem("cannot lock", &path, &e));
                }
            }
        } else {
            if !db.exists() {
                return Err(problem("no ledger at", &db, &"not found"));
            }
            None
        };
        let conn = Connection::open(&db)
            .and_then(|c| {
                c.set_prepared_statement_cache_capacity(64);
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.pragma_update(None, "synchronous", "FULL")?;
                // What is deleted or overwritten (a report's text once delivered) is zeroed
                // on disk, not left in free pages.
                c.pragma_update(None, "secure_delete", "ON")?;
                c.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA}"))?;
                add_columns(&c)?;
                c.execute_batch("COMMIT;")?;
                Ok(c)
            })
            .map_err(|e| problem("cannot open the ledger", &db, &e))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(first) = queue.recv() {
                    // The group is what waits now; a step sent later joins the next one.
                    let group: Vec<Job> = std::iter::once(first)
                        .chain(queue.try_iter().take(MAX_GROUP - 1))
                        .collect();
                    commit_group(&mut conn, group);
                }
            })
            .map_err(|e| StoreError(format!("cannot start the ledger thread: {e}")))?;
        Ok(Self { jobs, _lock: lock })
    }

    /// The ledger file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("ledger.db")
    }

    /// Runs `f` on the ledger's thread, in the transaction of the group it joins, and
    /// returns its result once that group is committed.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let result = conn.map(f);
                Box::new(move |group| {
                    let _ = tx.send(match (result, group) {
                        (Some(Err(e)), _) => Err(StoreError::from(e)),
                        (_, Err(e)) => Err(StoreError(format!("ledger (SQLite): {e}"))),
                        (Some(Ok(value)), Ok(())) => Ok(value),
                        (None, Ok(())) => {
                            unreachable!("a step that did not run is answered an error")
                        }
                    });
                })
            }))
            .map_err(|_| StoreError("the ledger is closed".into()))?;
        rx.await
            .map_err(|_| StoreError("the ledger thread stopped".into()))?
    }

    /// Runs `f` as one atomic step: within a savepoint of its group's transaction, so that
    /// its failure undoes its own changes and no other step's.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.call(move |conn| {
            let run = |sql| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
            run("SAVEPOINT step")?;
            let out = f(conn);
            let undone = out.is_ok() || run("ROLLBACK TO step").is_ok();
            if !undone || run("RELEASE step").is_err() {
                // This step's changes can be neither undone nor kept alone: undo the group's.
                let _ = conn.execute_batch("ROLLBACK");
            }
            out
        })
        .await
    }
}

/// Group commit: runs the steps waiting in the queue in one `BEGIN IMMEDIATE` transaction
/// and answers each only after the commit, so one sync to disk serves them all and no
/// answer tells of a change that a crash could still undo. If the transaction ends early
/// (SQLite rolls back on some errors, such as a full disk), no further step runs and every
/// step of the group is answered with the failure: nothing is half-done.
fn commit_group(conn: &mut Connection, group: Vec<Job>) {
    let mut group = group.into_iter();
    let fail_all = |answers: Vec<Answer>, rest: &mut dyn Iterator<Item = Job>, e: &str| {
        answers.into_iter().for_each(|answer| answer(Err(e)));
        rest.for_each(|job| job(None)(Err(e)));
    };
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(Vec::new(), &mut group, &e.to_string()),
    };
    let mut answers: Vec<Answer> = Vec::new();
    for job in group.by_ref() {
        answers.push(job(Some(&tx)));
        if tx.is_autocommit() {
            let e = "the transaction was rolled back; nothing of this step was kept";
            return fail_all(answers, &mut group, e);
        }
    }
    match tx.commit() {
        Ok(()) => answers.into_iter().for_each(|answer| answer(Ok(()))),
        Err(e) => fail_all(answers, &mut std::iter::empty(), &e.to_string()),
    }
}

/// Built once: reads a booking's row.
/// Creates `dir` readable by this user only (bookings and reports may hold what users were
/// given); an existing directory keeps its mode, which the owner chose.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Creates the ledger file readable by this user only; SQLite gives its journal files the
/// same mode. A ledger made by an older version is made private too.
fn private_file(path: &Path) -> std::io::Result<()> {
    let file = File::options().create(true).append(true).open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    drop(file);
    for journal in ["ledger.db-wal", "ledger.db-shm"] {
        let p = path.with_file_name(journal);
        #[cfg(unix)]
        if p.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Adds the columns a ledger written by an older version lacks ([`ADDED_COLUMNS`]).
fn add_columns(c: &Connection) -> rusqlite::Result<()> {
    let have: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('bookings')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut upgraded = false;
    for (name, kind, _) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == name) {
            c.execute_batch(&format!("ALTER TABLE bookings ADD COLUMN {name} {kind}"))?;
            upgraded = true;
        }
    }
    if upgraded {
        c.execute_batch(FORGET_OUTCOMES_SQL)?;
    }
    Ok(())
}

static LOAD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {} FROM bookings WHERE id = ?1", COLUMNS.join(", "))
});

fn load(tx: &Connection, id: &str) -> rusqlite::Result<Option<Booking>> {
    tx.prepare_cached(&LOAD)?
        .query_row([id], booking)
        .optional()
}

/// Built once: see [`upsert_sql`](super::upsert_sql).
static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| super::upsert_sql('?'));

fn save<T>(tx: &Connection, d: &Decision<T>) -> rusqlite::Result<()> {
    let b = &d.booking;
    tx.prepare_cached(&UPSERT)?.execute(params![
        b.id,
        b.resource_id,
        b.resource_name,
        b.user_id,
        b.start,
        b.end,
        b.reservation,
        b.webhook_id,
        b.desired.as_str(),
        b.state.as_str(),
        b.attempts,
        b.last_error,
        b.error_transient,
        b.outcome,
        b.next_attempt_at,
        b.lease_owner,
        b.lease_until,
        b.execution_id,
        b.event_type,
        b.body,
        b.audit_deferred,
        b.created_at,
        b.updated_at,
        b.key_id,
        b.next_reservation,
        b.end_changed,
    ])?;
    note(tx, &b.id, b.updated_at, &d.history)
}

fn note(tx: &Connection, id: &str, at: Millis, what: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO booking_history (booking_id, at, what) VALUES (?1, ?2, ?3)")?
        .execute(params![id, at, what])?;
    Ok(())
}

fn enqueue(tx: &Connection, entries: &[NewEntry], now: Millis) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (kind, booking_id, body, state, attempts, next_attempt_at, \
         created_at, updated_at) VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4)",
    )?;
    for e in entries {
        insert.execute(params![e.kind.as_str(), e.booking_id, e.body, now])?;
    }
    Ok(())
}

fn text_enum<T>(row: &Row<'_>, i: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown value {text:?}").into(),
        )
    })
}

fn booking(r: &Row<'_>) -> rusqlite::Result<Booking> {
    Ok(Booking {
        id: r.get(0)?,
        resource_id: r.get(1)?,
        resource_name: r.get(2)?,
        user_id: r.get(3)?,
        start: r.get(4)?,
        end: r.get(5)?,
        reservation: r.get(6)?,
        webhook_id: r.get(7)?,
        desired: text_enum(r, 8, Desired::parse)?,
        state: text_enum(r, 9, State::parse)?,
        attempts: r.get(10)?,
        last_error: r.get(11)?,
        error_transient: r.get(12)?,
        outcome: r.get(13)?,
        next_attempt_at: r.get(14)?,
        lease_owner: r.get(15)?,
        lease_until: r.get(16)?,
        execution_id: r.get(17)?,
        event_type: r.get(18)?,
        body: r.get(19)?,
        audit_deferred: r.get(20)?,
        created_at: r.get(21)?,
        updated_at: r.get(22)?,
        key_id: r.get(23)?,
        next_reservation: r.get(24)?,
        end_changed: r.get(25)?,
    })
}

const ENTRY_COLUMNS: &str = "id, kind, booking_id, body, state, attempts, last_status, \
                             next_attempt_at, created_at, updated_at";

fn entry(r: &Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        id: r.get(0)?,
        kind: text_enum(r, 1, Kind::parse)?,
        booking_id: r.get(2)?,
        body: r.get(3)?,
        state: text_enum(r, 4, EntryState::parse)?,
        attempts: r.get(5)?,
        last_status: r.get(6)?,
        next_attempt_at: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

fn neighbours(tx: &Connection, b: &Booking, now: Millis) -> rusqlite::Result<Neighbours> {
    tx.prepare_cached(
        "SELECT \
           EXISTS (SELECT 1 FROM bookings WHERE resource_id = ?1 AND id <> ?2 \
                   AND lease_until > ?3), \
           EXISTS (SELECT 1 FROM bookings WHERE resource_id = ?1 AND id <> ?2 \
                   AND desired = 'released' AND next_attempt_at IS NOT NULL)",
    )?
    .query_row(params![b.resource_id, b.id, now], |r| {
        Ok(Neighbours {
            leased: r.get(0)?,
            release_pending: r.get(1)?,
        })
    })
}

/// What claiming `b` decides ([`rules::claim`]), with its neighbours read; nothing saved.
fn decide_claim(
    tx: &Connection,
    b: Booking,
    owner: &str,
    now: Millis,
    lease_until: Millis,
) -> rusqlite::Result<Option<Decision<Option<Op>>>> {
    let n = neighbours(tx, &b, now)?;
    Ok(rules::claim(b, n, owner, now, lease_until))
}

/// Bookings due for a call, at most `limit`. Limits are written into the statements of this
/// file: a bound `LIMIT` makes SQLite prepare its statement again on every run.
fn due_sql(limit: usize) -> String {
    format!(
        "SELECT id FROM bookings WHERE next_attempt_at <= ?1 \
         AND (lease_until IS NULL OR lease_until <= ?1) \
         ORDER BY desired = 'released' DESC, next_attempt_at LIMIT {limit}"
    )
}

/// Outbox entries due for delivery, at most `limit`.
fn outbox_due_sql(limit: usize) -> String {
    format!(
        "SELECT {ENTRY_COLUMNS} FROM outbox WHERE state = 'pending' \
         AND next_attempt_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1) \
         ORDER BY next_attempt_at, id LIMIT {limit}"
    )
}

#[async_trait]
impl Store for Sqlite {
    async fn record(
        &self,
        intent: &Intent,
        now: Millis,
        lease: Option<Lease<'_>>,
    ) -> Result<Recorded, StoreError> {
        let intent = intent.clone();
        let lease = lease.map(|l| (l.owner.to_owned(), l.until));
        self.write(move |tx| {
            let d = rules::record(load(tx, &intent.booking_id)?, &intent, now);
            let claimed = match &lease {
                Some((owner, until)) if d.result == Verdict::Work => {
                    decide_claim(tx, d.booking.clone(), owner, now, *until)?
                }
                _ => None,
            };
            let (booking, claim) = match claimed {
                // The claim's row holds the record's changes too: the row is written once.
                Some(c) => {
                    note(tx, &d.booking.id, now, &d.history)?;
                    save(tx, &c)?;
                    (c.booking.clone(), c.into_claim())
                }
                None => {
                    save(tx, &d)?;
                    (d.booking, None)
                }
            };
            Ok(Recorded {
                verdict: d.result,
                booking,
                claim,
            })
        })
        .await
    }

    async fn claim(
        &self,
        id: &str,
        owner: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<Claim>, StoreError> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.write(move |tx| {
            let Some(b) = load(tx, &id)? else {
                return Ok(None);
            };
            let Some(d) = decide_claim(tx, b, &owner, now, lease_until)? else {
                return Ok(None);
            };
            save(tx, &d)?;
            Ok(d.into_claim())
        })
        .await
    }

    async fn renew(&self, id: &str, owner: &str, lease_until: Millis) -> Result<bool, StoreError> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE bookings SET lease_until = ?3 WHERE id = ?1 AND lease_owner = ?2",
                params![id, owner, lease_until],
            )?;
            Ok(n == 1)
        })
        .await
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
        let (id, owner, finish) = (id.to_owned(), owner.to_owned(), finish.clone());
        let (reports, deferred) = (reports.to_vec(), deferred_audit.cloned());
        self.write(move |tx| {
            let Some(b) = load(tx, &id)? else {
                return Ok(None);
            };
            let Some(d) = rules::finish(b, &owner, &finish, now) else {
                return Ok(None);
            };
            save(tx, &d)?;
            enqueue(tx, &reports, now)?;
            if let (true, Some(entry)) = (d.result, deferred) {
                enqueue(tx, &[entry], now)?;
            }
            Ok(Some(d.booking))
        })
        .await
    }

    async fn defer(&self, id: &str, now: Millis) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE bookings SET audit_deferred = 1, updated_at = ?2 \
                 WHERE id = ?1 AND next_attempt_at IS NOT NULL",
                params![id, now],
            )?;
            if n == 1 {
                note(
                    tx,
                    &id,
                    now,
                    "answered 202: the work goes on in the background",
                )?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn booking(&self, id: &str) -> Result<Option<Booking>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| load(c, &id)).await
    }

    async fn history(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.prepare_cached(
                "SELECT at, what FROM booking_history WHERE booking_id = ?1 ORDER BY seq",
            )?
            .query_map([id], |r| {
                Ok(Event {
                    at: r.get(0)?,
                    what: r.get(1)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        self.call(move |c| {
            c.prepare_cached(&due_sql(limit))?
                .query_map([now], |r| r.get(0))?
                .collect()
        })
        .await
    }

    async fn sweep(&self, now: Millis, grace: Millis) -> Result<Vec<String>, StoreError> {
        self.write(move |tx| {
            let ids: Vec<String> = tx
                .prepare_cached(
                    "SELECT id FROM bookings WHERE desired = 'active' AND end_at + ?2 < ?1 \
                     AND state <> 'released'",
                )?
                .query_map(params![now, grace], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut call = Vec::new();
            for id in ids {
                let Some(b) = load(tx, &id)? else { continue };
                if let Some(d) = rules::sweep(b, now) {
                    save(tx, &d)?;
                    if d.result {
                        call.push(id);
                    }
                }
            }
            Ok(call)
        })
        .await
    }

    async fn drop_leases(&self, owner: Option<&str>) -> Result<u64, StoreError> {
        let owner = owner.map(str::to_owned);
        self.write(move |tx| {
            let [bookings, reports] = drop_leases_sql("?1");
            let n = tx.execute(&bookings, params![owner])?;
            tx.execute(&reports, params![owner])?;
            Ok(n as u64)
        })
        .await
    }

    async fn active_bookings(&self) -> Result<u64, StoreError> {
        self.call(|c| {
            c.prepare_cached(&active_bookings_sql("INDEXED BY bookings_due"))?
                .query_row([], |r| r.get::<_, i64>(0))
        })
        .await
        .map(|n| n as u64)
    }

    async fn failing_releases(&self) -> Result<u64, StoreError> {
        self.call(|c| {
            c.prepare_cached(&failing_releases_sql("INDEXED BY bookings_due"))?
                .query_row([], |r| r.get::<_, i64>(0))
        })
        .await
        .map(|n| n as u64)
    }

    async fn overdue_bookings(&self, cutoff: Millis) -> Result<u64, StoreError> {
        self.call(move |c| {
            c.prepare_cached(&overdue_bookings_sql("INDEXED BY bookings_due").replace("$1", "?1"))?
                .query_row([cutoff], |r| r.get::<_, i64>(0))
        })
        .await
        .map(|n| n as u64)
    }

    async fn bookings_of_resource(&self, resource_id: i64) -> Result<Vec<Booking>, StoreError> {
        self.call(move |c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM bookings WHERE resource_id = ?1 AND desired = 'active'",
                COLUMNS.join(", ")
            ))?
            .query_map([resource_id], booking)?
            .collect()
        })
        .await
    }

    async fn enqueue(&self, entries: &[NewEntry], now: Millis) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let entries = entries.to_vec();
        self.write(move |tx| enqueue(tx, &entries, now)).await
    }

    async fn outbox_claim(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let owner = owner.to_owned();
        self.write(move |tx| {
            let entries: Vec<Entry> = tx
                .prepare_cached(&outbox_due_sql(limit))?
                .query_map([now], entry)?
                .collect::<rusqlite::Result<_>>()?;
            let mut lease = tx.prepare_cached(
                "UPDATE outbox SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1",
            )?;
            for e in &entries {
                lease.execute(params![e.id, owner, lease_until])?;
            }
            Ok(entries)
        })
        .await
    }

    async fn outbox_finish(
        &self,
        id: i64,
        owner: &str,
        attempt: &Attempt,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (owner, attempt) = (owner.to_owned(), attempt.clone());
        self.write(move |tx| {
            let (state, status, next) = match &attempt {
                Attempt::Delivered { status } => (EntryState::Delivered, status, None),
                Attempt::Retry { status, at } => (EntryState::Pending, status, Some(*at)),
                Attempt::Failed { status } => (EntryState::Failed, status, None),
            };
            tx.execute(
                "UPDATE outbox SET state = ?3, attempts = attempts + 1, last_status = ?4, \
                 next_attempt_at = ?5, lease_owner = NULL, lease_until = NULL, updated_at = ?6, \
                 body = CASE WHEN ?3 = 'delivered' AND kind = 'notification' THEN '' ELSE body END \
                 WHERE id = ?1 AND lease_owner = ?2",
                params![id, owner, state.as_str(), status, next, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn prune(&self, before: Millis, limit: usize) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let ids: Vec<String> = tx
                .prepare_cached(&PRUNABLE_SQL.replace('$', "?"))?
                .query_map(params![before, limit as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for id in &ids {
                for sql in [
                    "DELETE FROM outbox WHERE booking_id = ?1",
                    "DELETE FROM booking_history WHERE booking_id = ?1",
                    "DELETE FROM bookings WHERE id = ?1",
                ] {
                    tx.prepare_cached(sql)?.execute([id])?;
                }
            }
            Ok(ids.len() as u64)
        })
        .await
    }

    async fn forget_reports(&self, before: Millis) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let sql = FORGET_REPORTS_SQL.replace("$1", "?1");
            Ok(tx.prepare_cached(&sql)?.execute([before])? as u64)
        })
        .await
    }

    async fn outbox_list(&self, all: bool, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.call(move |c| {
            c.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM outbox WHERE ?1 OR state <> 'delivered' \
                 ORDER BY id DESC LIMIT ?2"
            ))?
            .query_map(params![all, limit as i64], entry)?
            .collect()
        })
        .await
    }

    async fn outbox_retry(&self, id: i64, now: Millis) -> Result<Option<bool>, StoreError> {
        self.write(move |tx| {
            let state: Option<String> = tx
                .query_row("SELECT state FROM outbox WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            match state.as_deref() {
                None => Ok(None),
                Some("failed") => {
                    tx.execute(
                        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?2, \
                         updated_at = ?2 WHERE id = ?1",
                        params![id, now],
                    )?;
                    Ok(Some(true))
                }
                Some(_) => Ok(Some(false)),
            }
        })
        .await
    }

    async fn outbox_backlog(&self) -> Result<u64, StoreError> {
        self.call(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")?
                .query_row([], |r| r.get::<_, i64>(0))
        })
        .await
        .map(|n| n as u64)
    }

    async fn outbox_oldest(&self) -> Result<Option<Millis>, StoreError> {
        self.call(|c| {
            c.prepare_cached(&outbox_oldest_sql("INDEXED BY outbox_due"))?
                .query_row([], |r| r.get(0))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn entry(body: &str) -> NewEntry {
        NewEntry {
            kind: Kind::Notification,
            booking_id: None,
            body: body.into(),
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_ledger_is_readable_by_its_user_only() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let s = Sqlite::open(&dir, true).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&Sqlite::path(&dir)), 0o600);
        drop(s);
    }

    #[tokio::test]
    async fn a_ledger_written_before_the_added_columns_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The tables as the first release made them, with one booking.
            let old = Connection::open(Sqlite::path(dir.path())).unwrap();
            old.execute_batch(SCHEMA).unwrap();
            let values = (0..23).map(|i| format!("?{}", i + 1)).collect::<Vec<_>>();
            old.execute(
                &format!(
                    "INSERT INTO bookings ({}) VALUES ({})",
                    COLUMNS[..23].join(", "),
                    values.join(", ")
                ),
                params![
                    "103",
                    42,
                    "sw1-port-3",
                    "u",
                    0,
                    10,
                    "{}",
                    "7",
                    "active",
                    "active",
                    1,
                    None::<String>,
                    false,
                    "ok",
                    None::<i64>,
                    None::<String>,
                    None::<i64>,
                    "e",
                    "EVENT_START",
                    "{}",
                    false,
                    1,
                    2
                ],
            )
            .unwrap();
        }
        let s = Sqlite::open(dir.path(), true).unwrap();
        let b = s.booking("103").await.unwrap().unwrap();
        assert_eq!(
            (b.state, b.key_id, b.end_changed),
            (State::Active, None, false)
        );
        // What the old version kept of the manager's outcome is gone.
        assert_eq!(b.outcome, None);
        assert_eq!(s.bookings_of_resource(42).await.unwrap().len(), 1);
    }

    async fn bodies(s: &Sqlite) -> Vec<String> {
        let mut all: Vec<String> = s
            .outbox_list(true, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.body)
            .collect();
        all.sort();
        all
    }

    /// Holds the ledger's thread until the returned sender is dropped, so that the steps sent
    /// meanwhile are committed as one group.
    fn hold(s: &Sqlite) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        s.jobs
            .send(Box::new(move |_| {
                tx.send(()).unwrap();
                let _ = held.recv();
                Box::new(|_| {})
            }))
            .unwrap();
        rx.recv().unwrap();
        release
    }

    #[tokio::test]
    async fn a_failed_step_undoes_only_its_own_changes_in_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Sqlite::open(dir.path(), true).unwrap());
        let held = hold(&s);
        let mut steps = Vec::new();
        for i in 0..20 {
            let s = s.clone();
            steps.push(tokio::spawn(async move {
                s.write(move |tx| {
                    enqueue(tx, &[entry(&format!("{i:02}"))], 1)?;
                    if i % 5 == 0 {
                        tx.execute_batch("SELECT * FROM no_such_table")?;
                    }
                    Ok(i)
                })
                .await
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(held);
        let mut failed = Vec::new();
        for step in steps {
            if let Err(e) = step.await.unwrap() {
                assert!(e.0.contains("no_such_table"), "{e}");
                failed.push(());
            }
        }
        assert_eq!(failed.len(), 4);
        let kept: Vec<String> = (0..20)
            .filter(|i| i % 5 != 0)
            .map(|i| format!("{i:02}"))
            .collect();
        assert_eq!(bodies(&s).await, kept);
    }

    #[tokio::test]
    async fn a_group_whose_transaction_ends_early_fails_every_step_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Sqlite::open(dir.path(), true).unwrap());
        let held = hold(&s);
        let write = |body: &'static str, rollback: bool| {
            let s = s.clone();
            tokio::spawn(async move {
                s.write(move |tx| {
                    enqueue(tx, &[entry(body)], 1)?;
                    if rollback {
                        // What SQLite does by itself on some errors, such as a full disk.
                        tx.execute_batch("ROLLBACK")?;
                    }
                    Ok(())
                })
                .await
            })
        };
        let steps = [write("a", false), write("b", true), write("c", false)];
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(held);
        for step in steps {
            assert!(step.await.unwrap().is_err());
        }
        assert!(bodies(&s).await.is_empty());
        // The next group works as usual.
        s.enqueue(&[entry("d")], 2).await.unwrap();
        assert_eq!(bodies(&s).await, ["d"]);
    }

    #[tokio::test]
    async fn steps_of_one_group_are_answered_after_their_commit_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Sqlite::open(dir.path(), true).unwrap());
        let held = hold(&s);
        let steps: Vec<_> = (0..100)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.enqueue(&[entry(&format!("{i:03}"))], 1).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(held);
        for step in steps {
            step.await.unwrap().unwrap();
        }
        drop(s);
        let reopened = Sqlite::open(dir.path(), false).unwrap();
        assert_eq!(bodies(&reopened).await.len(), 100);
    }

    /// SQLite prepares a statement with a bound `LIMIT` again on every run; the statements
    /// run for every delivery are prepared once.
    #[tokio::test]
    async fn statements_run_for_every_delivery_are_not_prepared_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sqlite::open(dir.path(), true).unwrap();
        for now in 0..5 {
            s.due(now, 10).await.unwrap();
            s.outbox_claim("me", now, now + 1, 10).await.unwrap();
        }
        let reprepared = s
            .call(|c| {
                let mut total = 0;
                for sql in [due_sql(10), outbox_due_sql(10)] {
                    let stmt = c.prepare_cached(&sql)?;
                    total += stmt.get_status(rusqlite::StatementStatus::RePrepare);
                }
                Ok(total)
            })
            .await
            .unwrap();
        assert_eq!(reprepared, 0);
    }

    /// The ledger keeps every booking it has seen; what runs at start-up and on every
    /// metrics scrape reads only the indexes of work in progress, never the whole table.
    #[test]
    fn start_up_and_scrape_statements_read_no_whole_table() {
        let dir = tempfile::tempdir().unwrap();
        drop(Sqlite::open(dir.path(), true).unwrap());
        let c = Connection::open(Sqlite::path(dir.path())).unwrap();
        let statements = [
            active_bookings_sql("INDEXED BY bookings_due"),
            failing_releases_sql("INDEXED BY bookings_due"),
            overdue_bookings_sql("INDEXED BY bookings_due").replace("$1", "?1"),
            outbox_oldest_sql("INDEXED BY outbox_due"),
            FORGET_REPORTS_SQL.replace("$1", "?1"),
            PRUNABLE_SQL.replace('$', "?"),
            "DELETE FROM outbox WHERE booking_id = ?1".into(),
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending'".into(),
        ]
        .into_iter()
        .chain(drop_leases_sql("?1"));
        for sql in statements {
            let mut explain = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            // Start-up drops everyone's leases: the owner parameter is NULL.
            let owner = vec![None::<String>; explain.parameter_count()];
            let plan: Vec<String> = explain
                .query_map(rusqlite::params_from_iter(owner), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().all(|step| {
                    let whole_table = step == "SCAN bookings" || step == "SCAN outbox";
                    !whole_table
                }),
                "{sql}: {plan:?}"
            );
        }
    }
}
