//! Builds the application from its settings and a manager: opens the ledger, binds, starts
//! the reconciler and the outbox, serves until told to stop, and shuts down in order.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use poem::Server;
use poem::listener::{Acceptor, Listener, TcpListener};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::config::{Config, LedgerConfig};
use crate::engine::ledger;
use crate::engine::metrics::Metrics;
use crate::engine::outbox::Outbox;
use crate::engine::reconcile::Reconciler;
use crate::engine::report::Reports;
use crate::http::limits::LimitedAcceptor;
use crate::http::routes::routes;
use crate::http::state::AppState;
use crate::manager::ResourceManager;

/// A bound, ready-to-run service.
pub struct Application {
    acceptor: LimitedAcceptor,
    port: u16,
    state: Arc<AppState>,
}

/// This process's name in the ledger's leases: the pod's name where there is one.
fn owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!(
        "{host}/{}/{:04x}",
        std::process::id(),
        ledger::random() & 0xffff
    )
}

impl Application {
    /// Opens the ledger (a clear error if it cannot be), binds `config.listen` (port 0
    /// picks a free port) and wires the state.
    pub async fn build(config: Config, manager: Arc<dyn ResourceManager>) -> anyhow::Result<Self> {
        let store = ledger::open(&config, true).await?;
        if let LedgerConfig::Embedded { .. } = config.ledger {
            // This process is the ledger's only user (it holds its lock): work a crash cut
            // short is resumed now rather than when its lease expires.
            let resumed = store.drop_leases(None).await?;
            if resumed > 0 {
                tracing::warn!(resumed, "resuming bookings a previous run left in progress");
            }
        }
        let acceptor = TcpListener::bind(config.listen)
            .into_acceptor()
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().map(|a| a.port()))
            .expect("a TCP acceptor has a socket address");
        if config.keys.is_none() {
            tracing::warn!("ALLOW_UNSIGNED is set: events are accepted without a signature");
        }
        let acceptor =
            LimitedAcceptor::new(acceptor, config.max_connections, config.header_timeout);
        let metrics = Metrics::default();
        let owner = owner();
        let outbox = Arc::new(Outbox::new(
            &config,
            store.clone(),
            metrics.clone(),
            owner.clone(),
        ));
        let reconciler = Arc::new(Reconciler::new(
            &config,
            store.clone(),
            manager.clone(),
            metrics.clone(),
            outbox.clone(),
            owner,
        ));
        let requests = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests));
        let state = Arc::new(AppState {
            reports: Reports::new(&config),
            config,
            manager,
            store,
            reconciler,
            outbox,
            metrics,
            tasks: TaskTracker::new(),
            requests,
            seen: crate::http::seen::Seen::new(crate::http::seen::CAPACITY),
        });
        Ok(Self {
            acceptor,
            port,
            state,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` completes, then stops accepting and, within
    /// `SHUTDOWN_TIMEOUT` of the signal, lets deliveries, manager calls and report
    /// deliveries in flight finish. Work cut short stays in the ledger and resumes.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), std::io::Error> {
        let state = self.state;
        let timeout = state.config.shutdown_timeout;
        tracing::info!(
            port = self.port,
            resource_type = %state.config.resource_type,
            "listening"
        );
        let reconciling = tokio::spawn(state.reconciler.clone().run());
        let mut reporting = tokio::spawn(state.outbox.clone().run());
        let deadline = Arc::new(OnceLock::new());
        let signalled = deadline.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = signalled.set(Instant::now() + timeout);
        };
        let served = Server::new_with_acceptor(self.acceptor)
            .name(state.config.service.name)
            .idle_timeout(state.config.idle_timeout)
            .run_with_graceful_shutdown(routes(state.clone()), shutdown, Some(timeout))
            .await;
        let deadline = *deadline.get_or_init(|| Instant::now() + timeout);
        state.tasks.close();
        if tokio::time::timeout_at(deadline, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!("deliveries still running at the shutdown deadline were cut short");
        }
        state.reconciler.shutdown(deadline).await;
        let _ = reconciling.await;
        state.outbox.stop();
        if tokio::time::timeout_at(deadline, &mut reporting)
            .await
            .is_err()
        {
            reporting.abort();
            tracing::warn!("reports still being sent at the shutdown deadline are sent later");
        }
        let _ = state
            .store
            .drop_leases(Some(state.reconciler.owner()))
            .await;
        tracing::info!("stopped");
        served
    }
}
