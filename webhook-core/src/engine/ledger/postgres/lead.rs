//! Which replica leads the shared ledger's timed polls ([`Store::leads`](super::Store::leads)):
//! the one holding an advisory lock in a session of its own. The others try to take it
//! every [`TRY_EVERY`], and one takes over within that once the leader's session ends.
//!
//! They try rather than wait: a statement waiting for a lock holds its snapshot for as long
//! as it waits, and while it does no vacuum removes any row that died after it began, in
//! any table of the database (decision 20).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{LEADER_LOCK, LOCK_SPACE, client};

/// How often a replica that does not lead tries to: a statement that answers at once, one
/// every five seconds for each replica but the leader.
const TRY_EVERY: Duration = Duration::from_secs(5);

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

/// Tries to take [`LEADER_LOCK`] on a connection of its own, every [`TRY_EVERY`], and leads
/// while that session lives; then tries again.
async fn elect(pool: Pool, leading: Arc<AtomicBool>) {
    loop {
        if let Ok(c) = client(&pool).await {
            // Out of the pool: the lock lives as long as this session, which nobody else uses.
            let session = deadpool_postgres::Object::take(c);
            if take(&session).await {
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

/// Tries to take the lock on `session` until it does (true) or the session fails (false).
async fn take(session: &tokio_postgres::Client) -> bool {
    loop {
        let taken = session
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LOCK_SPACE, &LEADER_LOCK],
            )
            .await
            .and_then(|row| row.try_get::<_, bool>(0));
        match taken {
            Ok(true) => return true,
            Ok(false) => tokio::time::sleep(TRY_EVERY).await,
            Err(_) => return false,
        }
    }
}
