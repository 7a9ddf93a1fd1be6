//! Drives each booking's actual state to its desired state, kube-rs style: claim it (a
//! lease in the ledger), call the manager, record the result; retry transient errors with
//! exponential backoff and jitter; release bookings whose END never came (the sweeper); and
//! resume, at start-up, work a crash cut short.
//!
//! A delivery [kicks](Reconciler::kick) its booking at once; a loop also polls the ledger
//! for due work (retries, bookings another replica left, bookings a neighbour on the same
//! resource held back), so nothing depends on the process that recorded it staying alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::contract::reservation::Reservation;
use crate::engine::ledger::{self, Booking, Claim, Finish, Lease, Op, Store, backoff};
use crate::engine::metrics::Metrics;
use crate::engine::outbox::Outbox;
use crate::engine::report::{Audit, Reports};
use crate::engine::seal::{self, Key, Seal};
use crate::manager::{ManagerError, Outcome, ResourceManager};

/// How long a claim holds a booking; renewed every third of it while the call runs, so a
/// crashed replica's bookings are taken over within this time.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often the ledger is polled for due work when nothing wakes the loop earlier.
const POLL: Duration = Duration::from_secs(1);
/// The shortest time between two looks for due work that finished calls asked for. Under
/// load calls finish thousands of times a second, and each asks: without a gap the look
/// would run back to back on the ledger. A booking held back by a neighbour waits this much
/// longer at most.
const WOKEN_LOOK_GAP: Duration = Duration::from_millis(25);
/// Manager calls running at once in this process; more wait for a slot.
const MAX_CONCURRENT_CALLS: usize = 64;
/// The longest wait between two rounds of retention.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Wakes the deliveries waiting for one booking.
#[derive(Default)]
pub struct Signals(Mutex<HashMap<String, Weak<Notify>>>);

impl Signals {
    /// The signal of booking `id`, shared by everyone waiting for it.
    pub fn subscribe(&self, id: &str) -> Arc<Notify> {
        let mut map = self.0.lock().expect("signals lock");
        if let Some(n) = map.get(id).and_then(Weak::upgrade) {
            return n;
        }
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let n = Arc::new(Notify::new());
        map.insert(id.to_owned(), Arc::downgrade(&n));
        n
    }

    fn notify(&self, id: &str) {
        let n = self
            .0
            .lock()
            .expect("signals lock")
            .get(id)
            .and_then(Weak::upgrade);
        if let Some(n) = n {
            n.notify_waiters();
        }
    }
}

/// A free place for one manager call, taken before a delivery claims its booking, so that no
/// claim's lease runs out while it waits for a place.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// Whether the booking's user has a key that a secret can be sealed to and fit in a message.
fn sealable(r: &Reservation) -> bool {
    Key::parse(r.user.ssh_public_key.as_deref()).is_some_and(|k| k.fits())
}

/// A call cut short by the shutdown deadline.
struct CutShort;

/// The reconciler of this process.
pub struct Reconciler {
    store: Arc<dyn Store>,
    manager: Arc<dyn ResourceManager>,
    metrics: Metrics,
    reports: Reports,
    outbox: Arc<Outbox>,
    /// This process's name in leases.
    owner: String,
    max_attempts: u32,
    retry_backoff: Duration,
    release_grace: Duration,
    /// `LEDGER_RETENTION`.
    retention: Option<Duration>,
    /// `SEAL_CREDENTIALS`.
    seal: Seal,
    pub signals: Signals,
    wake: Notify,
    /// Bookings with a task here; `true` when it was kicked again meanwhile.
    running: Mutex<HashMap<String, bool>>,
    tasks: TaskTracker,
    /// No new claims once cancelled.
    stop: CancellationToken,
    /// Cuts running calls short once cancelled (the shutdown deadline passed).
    abort: CancellationToken,
    slots: Arc<Semaphore>,
}

impl Reconciler {
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        manager: Arc<dyn ResourceManager>,
        metrics: Metrics,
        outbox: Arc<Outbox>,
        owner: String,
    ) -> Self {
        Self {
            store,
            manager,
            metrics,
            reports: Reports::new(config),
            outbox,
            owner,
            max_attempts: config.max_attempts,
            retry_backoff: config.retry_backoff,
            release_grace: config.release_grace,
            retention: config.ledger_retention,
            seal: config.seal_credentials,
            signals: Signals::default(),
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS)),
        }
    }

    /// This process's name in leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// A place for a call a delivery may claim with its record, and the lease to claim it
    /// with; `None` when all places are taken or the service is stopping.
    pub fn slot(&self, now: ledger::Millis) -> Option<(Slot, Lease<'_>)> {
        if self.stop.is_cancelled() {
            return None;
        }
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        let lease = Lease {
            owner: &self.owner,
            until: now + LEASE.as_millis() as i64,
        };
        Some((Slot { _permit: permit }, lease))
    }

    /// Makes, in the background, the call a delivery claimed with its record; the receiver
    /// gets the booking as the recorded result left it. Whatever remains to do (a retry, an
    /// END that came meanwhile) is then reconciled as usual.
    pub fn run_claimed(self: &Arc<Self>, claim: Claim, slot: Slot) -> oneshot::Receiver<Booking> {
        let (done, receiver) = oneshot::channel();
        let this = self.clone();
        self.tasks.spawn(async move {
            let id = claim.booking.id.clone();
            let called = this.call(claim).await;
            drop(slot);
            this.signals.notify(&id);
            this.wake.notify_one();
            if let Ok(b) = called {
                let more = b.as_ref().is_none_or(|b| !b.settled());
                if let Some(b) = b {
                    let _ = done.send(b);
                }
                if more {
                    this.kick(&id);
                }
            }
        });
        receiver
    }

    /// Reconciles booking `id` now, in the background.
    pub fn kick(self: &Arc<Self>, id: &str) {
        if self.stop.is_cancelled() {
            return;
        }
        {
            let mut running = self.running.lock().expect("running lock");
            if let Some(again) = running.get_mut(id) {
                *again = true;
                return;
            }
            running.insert(id.to_owned(), false);
        }
        let this = self.clone();
        let id = id.to_owned();
        self.tasks.spawn(async move { this.reconcile(id).await });
    }

    /// Polls for due work, sweeps ended bookings and prunes settled ones until stopped.
    pub async fn run(self: Arc<Self>) {
        let pruning = self
            .retention
            .map(|retention| tokio::spawn(self.clone().prune(retention)));
        self.clone().poll().await;
        if let Some(pruning) = pruning {
            let _ = pruning.await;
        }
    }

    /// Deletes the bookings settled longer than `retention` ago, on the leading replica, a
    /// batch at a time and resting as long as each batch took, so that deliveries waiting
    /// for the ledger get at least half of it.
    async fn prune(self: Arc<Self>, retention: Duration) {
        let every = (retention / 4).clamp(Duration::from_millis(100), PRUNE_EVERY);
        let kept = retention.as_millis() as i64;
        // The first round waits a round too, so that start-up does not share the ledger
        // with it.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.stop.cancelled() => return,
            }
            let mut deleted = 0;
            while self.store.leads() && !self.stop.is_cancelled() {
                let began = Instant::now();
                let pruned = self.store.prune(ledger::now() - kept, ledger::PRUNE_BATCH);
                let n = match pruned.await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot delete settled bookings");
                        break;
                    }
                };
                deleted += n;
                // A batch short of full was the last.
                if n < ledger::PRUNE_BATCH as u64 {
                    break;
                }
                tokio::time::sleep(began.elapsed()).await;
            }
            if deleted > 0 {
                tracing::info!(
                    deleted,
                    "deleted bookings settled longer ago than LEDGER_RETENTION"
                );
            }
        }
    }

    /// Polls for due work and sweeps ended bookings until stopped.
    async fn poll(self: Arc<Self>) {
        let grace = self.release_grace.as_millis() as i64;
        let sweep_every =
            (self.release_grace.min(Duration::from_secs(60)) / 2).max(Duration::from_millis(100));
        let mut last_sweep: Option<Instant> = None;
        // The timed polls are the leading replica's (`Store::leads`); every replica looks
        // at start-up and when woken, so its own work never waits for the leader.
        let mut woken = true;
        let mut last_look: Option<Instant> = None;
        while !self.stop.is_cancelled() {
            let leads = self.store.leads();
            if leads && last_sweep.is_none_or(|t| t.elapsed() >= sweep_every) {
                last_sweep = Some(Instant::now());
                match self.store.sweep(ledger::now(), grace).await {
                    Ok(ids) => {
                        for id in ids {
                            tracing::warn!(booking = %id, "releasing a booking whose end passed without END or DELETED");
                            self.kick(&id);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "sweep failed"),
                }
                let kept = ledger::REPORT_TEXT_KEPT.as_millis() as i64;
                if let Err(e) = self.store.forget_reports(ledger::now() - kept).await {
                    tracing::warn!(error = %e, "cannot clear old notifications' texts");
                }
            }
            if leads || woken {
                let rest = last_look.map_or(Duration::ZERO, |t| {
                    WOKEN_LOOK_GAP.saturating_sub(t.elapsed())
                });
                if woken && !rest.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(rest) => {}
                        _ = self.stop.cancelled() => break,
                    }
                }
                last_look = Some(Instant::now());
                match self.store.due(ledger::now(), 256).await {
                    Ok(ids) => ids.iter().for_each(|id| self.kick(id)),
                    Err(e) => tracing::warn!(error = %e, "cannot read due bookings"),
                }
            }
            woken = tokio::select! {
                _ = self.wake.notified() => true,
                _ = tokio::time::sleep(POLL.min(sweep_every)) => false,
                _ = self.stop.cancelled() => false,
            };
        }
    }

    /// Stops claiming, lets running calls finish until `deadline`, then cuts the rest short
    /// and gives up this process's leases so their bookings resume at once elsewhere or at
    /// the next start (they stay configuring/releasing).
    pub async fn shutdown(&self, deadline: tokio::time::Instant) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                running = self.tasks.len(),
                "manager calls still running at the shutdown deadline were cut short; they resume at the next start"
            );
            self.abort.cancel();
            self.tasks.wait().await;
        }
        if let Err(e) = self.store.drop_leases(Some(&self.owner)).await {
            tracing::error!(error = %e, "cannot give up leases; they expire in {LEASE:?}");
        }
    }

    async fn reconcile(self: Arc<Self>, id: String) {
        loop {
            let slot = self.slots.acquire().await.expect("never closed");
            let claimed = if self.stop.is_cancelled() {
                Ok(None)
            } else {
                let _slot = slot;
                let now = ledger::now();
                match self
                    .store
                    .claim(&id, &self.owner, now, now + LEASE.as_millis() as i64)
                    .await
                {
                    Ok(Some(claim)) => {
                        let called = self.call(claim).await;
                        self.signals.notify(&id);
                        // Another booking of the resource may have waited for this one.
                        self.wake.notify_one();
                        if let Err(CutShort) = called {
                            break;
                        }
                        continue;
                    }
                    other => other,
                }
            };
            if let Err(e) = claimed {
                tracing::warn!(booking = %id, error = %e, "cannot claim; the poll retries");
            }
            // Settled without a call, or nothing to do: wake waiters, and stop unless
            // kicked again meanwhile.
            self.signals.notify(&id);
            let mut running = self.running.lock().expect("running lock");
            if running.get(&id) == Some(&true) && !self.stop.is_cancelled() {
                running.insert(id.clone(), false);
                continue;
            }
            running.remove(&id);
            return;
        }
        self.running.lock().expect("running lock").remove(&id);
    }

    /// Makes the claimed call and records its result; the booking as it then stands, if the
    /// result could be recorded.
    async fn call(&self, claim: Claim) -> Result<Option<Booking>, CutShort> {
        let Claim { op, booking: b } = claim;
        let span = tracing::info_span!(
            "reconcile",
            booking = %b.id,
            operation = op.as_str(),
            attempt = b.attempts,
            execution_id = %b.execution_id,
        );
        async {
            let started = Instant::now();
            // The outcome becomes the user's message here, sealed as SEAL_CREDENTIALS says,
            // before anything is recorded: no plain secret that is sealed reaches the ledger.
            let result = match serde_json::from_str::<Reservation>(&b.reservation) {
                Ok(r) if op == Op::Configure && r.parameters.error().is_some() => {
                    // Never offered to the manager: the booking's own input cannot be read.
                    Err(ManagerError::invalid_input(
                        r.parameters.error().unwrap_or_default(),
                    ))
                }
                Ok(r) if op == Op::Configure && self.seal == Seal::Require && !sealable(&r) => {
                    // Refused before anything is configured: its secret could reach no one.
                    Err(ManagerError::invalid_input(seal::Unsealed::NoKey.to_string()))
                }
                Ok(r) => {
                    let call = async {
                        let outcome = match op {
                            Op::Configure => self.manager.configure(&r).await,
                            Op::Release => self.manager.release(&r).await,
                            Op::EndChanged => self
                                .manager
                                .end_changed(&r)
                                .await
                                .map(|()| Outcome::new(String::new())),
                        }?;
                        self.deliverable(op, &r, outcome).await
                    };
                    tokio::select! {
                        result = self.with_lease(&b.id, call) => result,
                        _ = self.abort.cancelled() => return Err(CutShort),
                    }
                }
                Err(e) => Err(ManagerError::permanent(format!(
                    "the ledger's copy of booking {} cannot be read: {e}",
                    b.id
                ))),
            };
            self.metrics.call(op.as_str(), started, result.is_ok());
            let finish = match result {
                Ok(outcome) => {
                    tracing::info!("{} succeeded", op.as_str());
                    Finish::Done { outcome }
                }
                Err(e) if e.is_invalid_input() => {
                    tracing::warn!(error.message = %e, "{} refused: the booking's input is not acceptable", op.as_str());
                    Finish::Refused {
                        error: e.message().to_owned(),
                    }
                }
                Err(e) => {
                    let transient = e.is_transient();
                    tracing::error!(
                        error.message = %e,
                        error.cause_chain = ?std::error::Error::source(&e),
                        transient,
                        "{} failed", op.as_str()
                    );
                    // A release is retried whatever the error: until it succeeds, the user
                    // keeps the resource. Past MAX_ATTEMPTS the failure is reported once and
                    // the release goes on, on the capped backoff.
                    let release = op == Op::Release;
                    let wait = backoff(self.retry_backoff, b.attempts);
                    let at = ledger::now() + wait.as_millis() as i64;
                    if (transient || release) && b.attempts < self.max_attempts {
                        self.metrics.retry(op.as_str());
                        Finish::Retry {
                            error: e.message().to_owned(),
                            at,
                        }
                    } else {
                        Finish::Failed {
                            error: e.message().to_owned(),
                            transient,
                            retry_at: release.then_some(at),
                        }
                    }
                }
            };
            Ok(self.record(&b, op, &finish).await)
        }
        .instrument(span)
        .await
    }

    /// The user's message for a call's outcome, its secret sealed as `SEAL_CREDENTIALS` says.
    ///
    /// With `require`, a configure whose secret cannot be sealed (sealed, it is too long for
    /// a message) is undone: the resource is released again at once, so that no credentials
    /// stay valid that nobody received, and the configure fails with the reason. A release's
    /// secret that cannot be sealed is left out of its message.
    async fn deliverable(
        &self,
        op: Op,
        r: &Reservation,
        outcome: Outcome,
    ) -> Result<String, ManagerError> {
        let key = Key::parse(r.user.ssh_public_key.as_deref());
        let why = match seal::message(&outcome, self.seal, key.as_ref()) {
            Ok(message) => return Ok(message),
            Err(why) => why,
        };
        if op != Op::Configure {
            tracing::warn!(reason = %why, "a secret that cannot be sealed was left out of the message");
            return Ok(format!(
                "{}\n(A secret was left out: {why}.)",
                outcome.message.trim_end()
            ));
        }
        drop(outcome);
        tracing::error!(reason = %why, "configured, but its secret cannot be sealed (SEAL_CREDENTIALS=require): releasing it again");
        match self.undo(r).await {
            Ok(()) => Err(ManagerError::permanent(format!(
                "{why}; the resource was released again"
            ))),
            Err(e) => Err(ManagerError::permanent(format!(
                "{why}, and releasing the resource again failed ({e}): it is released when \
                 the booking ends"
            ))),
        }
    }

    /// Releases a resource just configured whose credentials cannot be delivered, retried
    /// (whatever the error, as releases are) up to `MAX_ATTEMPTS` times on the backoff.
    async fn undo(&self, r: &Reservation) -> Result<(), ManagerError> {
        let mut attempt = 1;
        loop {
            match self.manager.release(r).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt >= self.max_attempts => return Err(e),
                Err(e) => {
                    tracing::warn!(error.message = %e, attempt, "releasing it again failed; trying again");
                    tokio::time::sleep(backoff(self.retry_backoff, attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Records a call's result, with the user's notification and, if the delivery was
    /// answered 202, its audit entry; the booking as it now stands, if recorded.
    async fn record(&self, b: &Booking, op: Op, finish: &Finish) -> Option<Booking> {
        // A release still failing after it was reported is not reported again.
        let reported_before = matches!(
            finish,
            Finish::Failed {
                retry_at: Some(_),
                ..
            }
        ) && b.attempts > self.max_attempts;
        let reports: Vec<_> = self
            .reports
            .result(b, op, finish)
            .filter(|_| !reported_before)
            .into_iter()
            .collect();
        let reply = crate::engine::report::final_reply(&b.id, op, finish);
        let deferred = b.webhook_id.as_deref().and_then(|webhook_id| {
            self.reports.audit(Audit {
                webhook_id,
                event_type: &b.event_type,
                booking_id: &b.id,
                resource_id: b.resource_id,
                payload: &b.body,
                reply: &reply,
                retry_count: b.attempts.saturating_sub(1),
            })
        });
        let recorded = self
            .store
            .finish(
                &b.id,
                &self.owner,
                finish,
                ledger::now(),
                &reports,
                deferred.as_ref().filter(|_| finish.is_final()),
            )
            .await;
        match recorded {
            Ok(Some(b)) => {
                if !reports.is_empty() || deferred.is_some() {
                    self.outbox.wake();
                }
                Some(b)
            }
            Ok(None) => {
                tracing::error!(
                    "the lease was lost during the call (it outlasted {LEASE:?} without renewal): result not recorded; the booking is retried"
                );
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record the result; the booking is retried when its lease expires");
                None
            }
        }
    }

    /// Runs `call`, renewing the booking's lease while it runs.
    async fn with_lease<T>(&self, id: &str, call: impl Future<Output = T>) -> T {
        let mut call = std::pin::pin!(call);
        // The first renewal is a third of the lease away. (An interval's first tick, due at
        // once, would still wait for the timer's next millisecond: a delay on every call.)
        let every = LEASE / 3;
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                result = &mut call => return result,
                _ = renew.tick() => {
                    let until = ledger::now() + LEASE.as_millis() as i64;
                    match self.store.renew(id, &self.owner, until).await {
                        Ok(true) => {}
                        Ok(false) => tracing::error!("lease lost: another replica may take the booking over"),
                        Err(e) => tracing::warn!(error = %e, "cannot renew the lease"),
                    }
                }
            }
        }
    }
}
