//! Which replica leads the shared ledger's timed polls ([`Store::leads`](super::Store::leads)):
//! the one holding an advisory lock in a session of its own. The others wait for the lock
//! inside the server, so nobody polls for it, and one takes over when that session ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{LEADER_LOCK, LOCK_SPACE, client};

/// This process's part in the election.
#[derive(Default)]
pub(super) struct Election {
    /// Set while this process holds [`LEADER_LOCK`].
    leading: Arc<AtomicBool>,
    /// Entered by the first [`Election::leads`] (only a serving process asks); left when
    /// this is dropped, which closes the session and so lets go of the lock.
    entered: OnceLock<DropGuard>,
}

impl Election {
    /// Whether this process leads now.
    pub(super) fn leads(&self, pool: &Pool) -> bool {
        self.entered.get_or_init(|| {
            let stop = CancellationToken::new();
            let (pool, leading) = (pool.clone(), self.leading.clone());
            let guard = stop.clone().drop_guard();
            tokio::spawn(async move {
                tokio::select! {
                    _ = elect(pool, leading) => {}
                    _ = stop.cancelled() => {}
                }
            });
            guard
        });
        self.leading.load(Ordering::SeqCst)
    }
}

/// Waits for [`LEADER_LOCK`] on a connection of its own (the server queues the waiters, so
/// nobody polls for it) and leads while that session lives; then waits again.
async fn elect(pool: Pool, leading: Arc<AtomicBool>) {
    loop {
        if let Ok(c) = client(&pool).await {
            // Out of the pool: the lock lives as long as this session, which nobody else uses.
            let session = deadpool_postgres::Object::take(c);
            let locked = session
                .execute(
                    "SELECT pg_advisory_lock($1, $2)",
                    &[&LOCK_SPACE, &LEADER_LOCK],
                )
                .await;
            if locked.is_ok() {
                leading.store(true, Ordering::SeqCst);
                tracing::info!("this replica leads the ledger's polls");
                while !session.is_closed() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                leading.store(false, Ordering::SeqCst);
                tracing::warn!("lost the lead of the ledger's polls: its session ended");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
