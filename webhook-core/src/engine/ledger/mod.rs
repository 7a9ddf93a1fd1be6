//! The booking ledger: for each booking, what it should be (desired) and what it is (state),
//! kept durably so that no booking is configured twice or leaked, across restarts and
//! replicas.
//!
//! A delivery records a desired state ([`Store::record`]); the
//! [reconciler](crate::engine::reconcile) drives the actual state to it by claiming the booking
//! ([`Store::claim`], a lease), calling the manager and recording the result
//! ([`Store::finish`]). Both stores apply the same decisions ([`rules`]) inside one
//! transaction per step: [`sqlite`] (one file, the default) and [`postgres`] (shared by
//! replicas). The report outbox lives in the same store, so a result and its report are
//! recorded together.

pub mod postgres;
pub mod rules;
pub mod sqlite;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use crate::config::{Config, LedgerConfig};

/// Milliseconds since the Unix epoch: how both stores keep times.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now() -> Millis {
    Utc::now().timestamp_millis()
}

/// A [`Millis`] as a UTC time.
pub fn time(ms: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A random number from the standard library's per-process hasher keys: enough for ids and
/// jitter, without a random number generator crate.
pub fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// What a booking should be, as the last delivery (or the sweeper) asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Active,
    Released,
}

/// Where a booking actually is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Recorded; `configure` has not started.
    Pending,
    /// `configure` is running, waits for a retry, or was cut short by a crash.
    Configuring,
    /// `configure` succeeded.
    Active,
    /// `release` is running, waits for a retry, or was cut short by a crash.
    Releasing,
    /// `release` succeeded, or the booking ended before it was configured.
    Released,
    /// The last call failed for good (see `last_error`); a new delivery tries again.
    Failed,
    /// `configure` was refused because of the booking's own input (a custom parameter, see
    /// `last_error`): the user was told; the same booking asked again is refused again.
    Refused,
}

macro_rules! names {
    ($ty:ty { $($variant:ident = $name:literal),* }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($name => Some(Self::$variant),)* _ => None }
            }
        }
    };
}
names!(Desired { Active = "active", Released = "released" });
names!(State {
    Pending = "pending",
    Configuring = "configuring",
    Active = "active",
    Releasing = "releasing",
    Released = "released",
    Failed = "failed",
    Refused = "refused"
});

/// The manager call a claim is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Configure,
    Release,
    /// The end of a configured booking moved: tell the manager.
    EndChanged,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Configure => "configure",
            Op::Release => "release",
            Op::EndChanged => "end_changed",
        }
    }
}

/// The longest wait between two attempts.
pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(600);

/// The wait before attempt `attempt + 1`: `base` doubled per attempt, capped, plus up to
/// half again as jitter so that retries of many bookings spread out.
pub fn backoff(base: std::time::Duration, attempt: u32) -> std::time::Duration {
    let exp = base
        .saturating_mul(1 << attempt.saturating_sub(1).min(20))
        .min(MAX_BACKOFF);
    let jitter_ms = (exp.as_millis() as u64 / 2).max(1);
    exp + std::time::Duration::from_millis(random() % jitter_ms)
}

/// One booking's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Booking {
    /// The reservation's id (`eventId`), the key.
    pub id: String,
    pub resource_id: i64,
    pub resource_name: String,
    pub user_id: String,
    pub start: Millis,
    pub end: Millis,
    /// The [`Reservation`](crate::contract::reservation::Reservation) as JSON, as first delivered.
    pub reservation: String,
    pub webhook_id: Option<String>,
    pub desired: Desired,
    pub state: State,
    /// Calls made for the current operation.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Whether `last_error` was marked transient by the manager.
    pub error_transient: bool,
    /// The manager's last outcome message. It may hold credentials: never shown by the
    /// status endpoint, only sent to the user.
    pub outcome: Option<String>,
    /// When the reconciler should act; `None` once the booking is settled.
    pub next_attempt_at: Option<Millis>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Millis>,
    /// Changes with every new desired state; replies and logs carry it.
    pub execution_id: String,
    /// The delivery that set the desired state, for its deferred audit entry.
    pub event_type: String,
    pub body: String,
    /// The delivery was answered 202: its audit entry is written when the work ends.
    pub audit_deferred: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Which of the configured keys verified the delivery that set the desired state (its
    /// [`KeyId`](crate::contract::signature::KeyId), never the key): reports about the booking are
    /// signed with it, since the back end knows one key per `webhookId`.
    pub key_id: Option<String>,
    /// A moved or re-owned booking: the reservation to configure once the old one is
    /// released.
    pub next_reservation: Option<String>,
    /// The end of the configured booking moved and the manager has not been told yet.
    pub end_changed: bool,
}

impl Booking {
    /// Nothing left to do until a new delivery (or the sweeper) asks for something.
    pub fn settled(&self) -> bool {
        self.next_attempt_at.is_none()
    }
}

/// The column names of `bookings`, in [`Booking`]'s field order.
pub const COLUMNS: [&str; 26] = [
    "id",
    "resource_id",
    "resource_name",
    "user_id",
    "start_at",
    "end_at",
    "reservation",
    "webhook_id",
    "desired",
    "state",
    "attempts",
    "last_error",
    "error_transient",
    "outcome",
    "next_attempt_at",
    "lease_owner",
    "lease_until",
    "execution_id",
    "event_type",
    "body",
    "audit_deferred",
    "created_at",
    "updated_at",
    "key_id",
    "next_reservation",
    "end_changed",
];

/// Columns added to `bookings` since the first release, with their SQLite and PostgreSQL
/// types. Both stores create the table without them and add each one that is missing at
/// start-up, so a ledger written by an older version is upgraded in place.
pub(crate) const ADDED_COLUMNS: [(&str, &str, &str); 3] = [
    ("key_id", "TEXT", "TEXT"),
    ("next_reservation", "TEXT", "TEXT"),
    (
        "end_changed",
        "INTEGER NOT NULL DEFAULT 0",
        "BOOLEAN NOT NULL DEFAULT FALSE",
    ),
];

/// Run once, when a ledger written before [`ADDED_COLUMNS`] is upgraded: those versions kept
/// each manager's outcome (which may hold what the user was given) with its booking, and
/// nothing reads it.
pub(crate) const FORGET_OUTCOMES_SQL: &str =
    "UPDATE bookings SET outcome = NULL WHERE outcome IS NOT NULL";

/// The statement that writes a whole booking row: an insert, or an update of every column
/// when the id exists. `marker` is the store's parameter prefix (`$` or `?`).
pub(crate) fn upsert_sql(marker: char) -> String {
    upsert(marker, |values| format!("VALUES ({values})"), "")
}

fn upsert(marker: char, rows: impl Fn(&str) -> String, guard: &str) -> String {
    let placeholders: Vec<String> = (1..=COLUMNS.len())
        .map(|i| format!("{marker}{i}"))
        .collect();
    let updates: Vec<String> = COLUMNS[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO bookings ({}) {} ON CONFLICT (id) DO UPDATE SET {}{guard}",
        COLUMNS.join(", "),
        rows(&placeholders.join(", ")),
        updates.join(", ")
    )
}

/// Counts bookings configured and not released through the indexes of work in progress, so
/// that the count does not read every booking ever kept: a booking still wanted active, or
/// one whose release is due (an END asks for it at once). `hint` makes a store use its index
/// of due bookings for the second part.
pub(crate) fn active_bookings_sql(hint: &str) -> String {
    format!(
        "SELECT \
         (SELECT COUNT(*) FROM bookings WHERE desired = 'active' AND state = 'active') + \
         (SELECT COUNT(*) FROM bookings {hint} WHERE next_attempt_at IS NOT NULL \
          AND desired = 'released' AND state = 'active')"
    )
}

/// How long the text of a notification that could not be delivered is kept (for `outbox
/// retry`): it may hold what the user was given, a password or a key. A delivered one is
/// cleared at once.
pub const REPORT_TEXT_KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Clears the text of notifications that failed before `$1` (the index `outbox_kept` finds
/// them).
pub(crate) const FORGET_REPORTS_SQL: &str = "UPDATE outbox SET body = '' \
     WHERE state = 'failed' AND kind = 'notification' AND body <> '' AND updated_at < $1";

/// How many bookings one step of retention deletes: small enough that the deliveries that
/// wait for the ledger meanwhile are not held up.
pub const PRUNE_BATCH: usize = 100;

/// Finds up to `$2` bookings that retention may delete: settled before `$1`, released (or
/// refused and ended) with nothing due, held or waiting to be reported. A booking wanted
/// active, in progress or whose release fails is never among them. The terms before
/// `updated_at` are those of the index `bookings_settled`, which finds them; the index
/// `outbox_booking` finds their reports.
pub(crate) const PRUNABLE_SQL: &str = "SELECT id, resource_id FROM bookings \
     WHERE desired = 'released' AND next_attempt_at IS NULL AND updated_at < $1 \
     AND state IN ('released', 'refused') AND lease_owner IS NULL \
     AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.booking_id = bookings.id \
       AND outbox.state = 'pending') \
     ORDER BY updated_at LIMIT $2";

/// Counts releases that failed past `MAX_ATTEMPTS` and are still being tried: users who keep
/// a resource after their booking ended. Such a booking stays due, so the index of due work
/// finds it (`hint`, as for [`active_bookings_sql`]).
pub(crate) fn failing_releases_sql(hint: &str) -> String {
    format!(
        "SELECT COUNT(*) FROM bookings {hint} WHERE next_attempt_at IS NOT NULL \
         AND desired = 'released' AND state = 'failed'"
    )
}

/// Counts bookings still configured whose end plus the release grace is before `$1` (the
/// cut-off): access that outlives a booking. One not yet swept is found through the sweeper's
/// index, one whose release is due or failing through the index of due work (`hint`, as for
/// [`active_bookings_sql`]).
pub(crate) fn overdue_bookings_sql(hint: &str) -> String {
    format!(
        "SELECT \
         (SELECT COUNT(*) FROM bookings WHERE desired = 'active' AND end_at < $1 \
          AND state IN ('configuring', 'active')) + \
         (SELECT COUNT(*) FROM bookings {hint} WHERE next_attempt_at IS NOT NULL \
          AND desired = 'released' AND end_at < $1 \
          AND state IN ('configuring', 'active', 'releasing', 'failed'))"
    )
}

/// When the oldest report not yet delivered and not failed was stored (NULL if there is
/// none), through the index of pending reports.
pub(crate) fn outbox_oldest_sql(hint: &str) -> String {
    format!("SELECT MIN(created_at) FROM outbox {hint} WHERE state = 'pending'")
}

/// The statements that drop the leases of bookings, then of reports: those of the owner
/// bound as the first parameter, or everyone's when it is NULL. `param` is the store's
/// spelling of that parameter (`?1`, `$1::TEXT`).
///
/// Only a due booking can be claimed and recording the call's result lets go of the lease,
/// and only a pending report is claimed. So the indexes of due work find every lease that
/// holds anything back, however many bookings the ledger keeps.
pub(crate) fn drop_leases_sql(param: &str) -> [String; 2] {
    [
        ("bookings", "next_attempt_at IS NOT NULL"),
        ("outbox", "state = 'pending'"),
    ]
    .map(|(table, due)| {
        format!(
            "UPDATE {table} SET lease_owner = NULL, lease_until = NULL \
             WHERE {due} AND lease_owner IS NOT NULL AND ({param} IS NULL OR lease_owner = {param})"
        )
    })
}

/// What a delivery asks for.
#[derive(Debug, Clone)]
pub struct Intent {
    pub desired: Desired,
    pub booking_id: String,
    pub resource_id: i64,
    pub resource_name: String,
    pub user_id: String,
    pub start: Millis,
    pub end: Millis,
    pub reservation: String,
    pub webhook_id: Option<String>,
    pub event_type: &'static str,
    /// The delivery's body, already cut to the audit log's limit.
    pub body: String,
    /// The key that verified the delivery, if it was signed.
    pub key_id: Option<String>,
    /// `EVENT_UPDATED`: the booking's new data. It changes a known booking (a new end, a move
    /// to another resource, a new owner) and never starts one.
    pub update: bool,
    /// The delivery is answered without waiting for the work it leaves (no
    /// `PROCESSING_BUDGET`): its audit entry is deferred in the same step
    /// ([`Store::defer`] otherwise).
    pub defer_audit: bool,
}

/// What recording a delivery decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// This delivery asked for work: the reconciler is to act.
    Work,
    /// An earlier delivery's work is pending or running: wait for it.
    InProgress,
    /// Nothing to do; answer 200 with this status word and sentence.
    Done {
        status: &'static str,
        message: String,
    },
}

/// A delivery recorded: the decision and the booking as it now stands.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub verdict: Verdict,
    pub booking: Booking,
    /// The claim taken in the same step, when one was asked for and the work could start.
    pub claim: Option<Claim>,
}

/// Who holds a claim, and until when.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    pub owner: &'a str,
    pub until: Millis,
}

/// A booking claimed for one manager call.
#[derive(Debug, Clone)]
pub struct Claim {
    pub op: Op,
    /// The booking after the claim (state, attempt number, lease).
    pub booking: Booking,
}

/// How a manager call ended, as the reconciler records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Done {
        outcome: String,
    },
    Retry {
        error: String,
        at: Millis,
    },
    /// The operation failed for good as far as anyone is told. `retry_at`: a release is tried
    /// again then all the same, since the user keeps the resource until it succeeds.
    Failed {
        error: String,
        transient: bool,
        retry_at: Option<Millis>,
    },
    /// The booking's own input is at fault ([`State::Refused`]).
    Refused {
        error: String,
    },
}

impl Finish {
    /// Whether this ends the operation (no retry follows).
    pub fn is_final(&self) -> bool {
        !matches!(self, Finish::Retry { .. })
    }
}

/// One line of a booking's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Millis,
    pub what: String,
}

/// Where an outbox entry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `NOTIFICATION_ENDPOINT`: a message for the user.
    Notification,
    /// `WEBHOOK_LOG_ENDPOINT`: an audit-log entry.
    WebhookLog,
}
names!(Kind {
    Notification = "notification",
    WebhookLog = "webhook_log"
});

/// A report to store in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub kind: Kind,
    pub booking_id: Option<String>,
    /// The JSON body, sent and signed as it is.
    pub body: String,
}

/// Where an outbox entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    Pending,
    Delivered,
    Failed,
}
names!(EntryState {
    Pending = "pending",
    Delivered = "delivered",
    Failed = "failed"
});

/// An outbox entry and its delivery history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub kind: Kind,
    pub booking_id: Option<String>,
    pub body: String,
    pub state: EntryState,
    pub attempts: u32,
    /// The last attempt's result: an HTTP status and the start of its body, or the error.
    pub last_status: Option<String>,
    pub next_attempt_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// How one delivery attempt of an outbox entry ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered { status: String },
    Retry { status: String, at: Millis },
    Failed { status: String },
}

/// A ledger that cannot be opened or answered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self(format!("ledger (SQLite): {e}"))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let mut text = format!("ledger (PostgreSQL): {e}");
        if let Some(db) = e.as_db_error() {
            text = format!("ledger (PostgreSQL): {}", db.message());
        }
        Self(text)
    }
}

/// Where bookings and reports are kept. Each method is one atomic step.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records what a delivery asks for and decides what it means ([`rules::record`]).
    /// With `lease`, a delivery that asks for work also claims the booking in the same step
    /// when [`Store::claim`] would, which saves the reconciler a step.
    async fn record(
        &self,
        intent: &Intent,
        now: Millis,
        lease: Option<Lease<'_>>,
    ) -> Result<Recorded, StoreError>;

    /// Claims a booking that needs a manager call, if it is due, its lease is free, and no
    /// other booking of its resource forbids it ([`rules::claim`]): `owner` holds it until
    /// `lease_until`.
    async fn claim(
        &self,
        id: &str,
        owner: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<Claim>, StoreError>;

    /// Extends `owner`'s lease; `false` if it holds it no longer.
    async fn renew(&self, id: &str, owner: &str, lease_until: Millis) -> Result<bool, StoreError>;

    /// Records how `owner`'s call ended and stores `reports` with it; `deferred_audit` is
    /// stored too if the delivery was answered 202 and the call was final. `None` if the
    /// lease was lost meanwhile (the result is not recorded).
    async fn finish(
        &self,
        id: &str,
        owner: &str,
        finish: &Finish,
        now: Millis,
        reports: &[NewEntry],
        deferred_audit: Option<&NewEntry>,
    ) -> Result<Option<Booking>, StoreError>;

    /// Notes that the delivery was answered before the work ended; `false` if it has ended
    /// meanwhile (then answer with the result instead).
    async fn defer(&self, id: &str, now: Millis) -> Result<bool, StoreError>;

    async fn booking(&self, id: &str) -> Result<Option<Booking>, StoreError>;

    /// The booking's history, oldest first.
    async fn history(&self, id: &str) -> Result<Vec<Event>, StoreError>;

    /// Bookings due for a call whose lease is free, releases first.
    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Asks for the release of every booking still wanted active whose end plus `grace`
    /// has passed; returns those that now need a call.
    async fn sweep(&self, now: Millis, grace: Millis) -> Result<Vec<String>, StoreError>;

    /// Drops the leases of `owner` (at shutdown) or of everyone (`None`: at the start of
    /// the only process using an embedded ledger), so cut-short work resumes at once.
    async fn drop_leases(&self, owner: Option<&str>) -> Result<u64, StoreError>;

    /// Bookings configured and not released.
    async fn active_bookings(&self) -> Result<u64, StoreError>;

    /// Releases that failed past `MAX_ATTEMPTS` and are still being tried.
    async fn failing_releases(&self) -> Result<u64, StoreError>;

    /// Bookings still configured whose end plus the release grace is before `cutoff`.
    async fn overdue_bookings(&self, cutoff: Millis) -> Result<u64, StoreError>;

    /// The bookings of a resource still wanted active (`RESOURCE_DELETED` releases them).
    async fn bookings_of_resource(&self, resource_id: i64) -> Result<Vec<Booking>, StoreError>;

    /// Stores reports to deliver.
    async fn enqueue(&self, entries: &[NewEntry], now: Millis) -> Result<(), StoreError>;

    /// Claims up to `limit` pending entries that are due and not leased.
    async fn outbox_claim(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Records a delivery attempt of a claimed entry.
    async fn outbox_finish(
        &self,
        id: i64,
        owner: &str,
        attempt: &Attempt,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// The newest entries (`all`) or only those not delivered, newest first.
    async fn outbox_list(&self, all: bool, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// Deletes up to `limit` bookings settled before `before` (see `PRUNABLE_SQL`), with their
    /// history and reports, in one step; answers how many.
    async fn prune(&self, before: Millis, limit: usize) -> Result<u64, StoreError>;

    /// Clears the text of notifications that failed before `before` ([`REPORT_TEXT_KEPT`]);
    /// delivered ones are cleared as they are delivered. Returns how many were cleared.
    async fn forget_reports(&self, before: Millis) -> Result<u64, StoreError>;

    /// Makes a failed entry pending again; `None` if there is no such entry, `Some(false)`
    /// if it is not failed.
    async fn outbox_retry(&self, id: i64, now: Millis) -> Result<Option<bool>, StoreError>;

    /// Entries not yet delivered and not failed.
    async fn outbox_backlog(&self) -> Result<u64, StoreError>;

    /// When the oldest entry not yet delivered and not failed was stored.
    async fn outbox_oldest(&self) -> Result<Option<Millis>, StoreError>;

    /// Whether this process runs the timed polls (due work, the sweeper, the outbox). A
    /// shared ledger lets one replica at a time lead, so that the polls do not grow with the
    /// number of replicas; the others act on their own deliveries and when woken. Leading is
    /// a matter of load only: every step is safe whoever runs it.
    fn leads(&self) -> bool {
        true
    }
}

/// Opens the ledger the configuration names. `serving`: this process runs the service (an
/// embedded ledger is then locked to it); otherwise it is a command-line look.
pub async fn open(config: &Config, serving: bool) -> Result<Arc<dyn Store>, StoreError> {
    match &config.ledger {
        LedgerConfig::Embedded { dir } => Ok(Arc::new(sqlite::Sqlite::open(dir, serving)?)),
        LedgerConfig::Postgres { url } => Ok(Arc::new(
            postgres::Postgres::connect(url.expose_secret()).await?,
        )),
    }
}
