//! What every request handler shares: the settings, the manager, the ledger and the
//! engine's parts that act on it.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engine::ledger::Store;
use crate::engine::metrics::Metrics;
use crate::engine::outbox::Outbox;
use crate::engine::reconcile::Reconciler;
use crate::engine::report::Reports;
use crate::http::seen::Seen;
use crate::manager::ResourceManager;

/// What every request handler shares.
pub struct AppState {
    pub config: Config,
    pub manager: Arc<dyn ResourceManager>,
    pub store: Arc<dyn Store>,
    pub reconciler: Arc<Reconciler>,
    pub outbox: Arc<Outbox>,
    pub reports: Reports,
    pub metrics: Metrics,
    /// Deliveries in flight; shutdown waits for them.
    pub tasks: TaskTracker,
    /// One permit per delivery being handled, `MAX_CONCURRENT_REQUESTS` in all.
    pub requests: Arc<tokio::sync::Semaphore>,
    /// Standard Webhooks messages the hook has had, so that one is not offered twice.
    pub seen: Seen,
}
