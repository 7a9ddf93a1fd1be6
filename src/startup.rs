//! Builds the application from its settings and a manager, binds, and serves until told to stop.

use std::future::Future;
use std::sync::Arc;

use poem::Server;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::ledger::Ledger;
use crate::manager::ResourceManager;
use crate::metrics::Metrics;
use crate::report::Reporter;
use crate::routes::routes;

/// What every request handler shares.
pub struct AppState {
    pub config: Config,
    pub manager: Arc<dyn ResourceManager>,
    pub ledger: Ledger,
    pub reporter: Reporter,
    pub metrics: Metrics,
    /// Booking work in flight; shutdown waits for it.
    pub tasks: TaskTracker,
}

/// A bound, ready-to-run service.
pub struct Application {
    acceptor: TcpAcceptor,
    port: u16,
    state: Arc<AppState>,
}

impl Application {
    /// Binds `config.listen` (port 0 picks a free port) and wires the state.
    pub async fn build(
        config: Config,
        manager: Arc<dyn ResourceManager>,
    ) -> Result<Self, std::io::Error> {
        let acceptor = TcpListener::bind(config.listen).into_acceptor().await?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().map(|a| a.port()))
            .expect("a TCP acceptor has a socket address");
        if config.keys.is_none() {
            tracing::warn!("ALLOW_UNSIGNED is set: events are accepted without a signature");
        }
        let metrics = Metrics::default();
        let state = Arc::new(AppState {
            reporter: Reporter::new(&config, metrics.clone()),
            config,
            manager,
            ledger: Ledger::default(),
            metrics,
            tasks: TaskTracker::new(),
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

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight deliveries
    /// and reports finish within `SHUTDOWN_TIMEOUT`, and returns.
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
        Server::new_with_acceptor(self.acceptor)
            .name(env!("CARGO_PKG_NAME"))
            .run_with_graceful_shutdown(routes(state.clone()), shutdown, Some(timeout))
            .await?;
        state.tasks.close();
        if tokio::time::timeout(timeout, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!("booking work still running at the shutdown deadline was cut short");
        }
        state.reporter.close(timeout).await;
        tracing::info!("stopped");
        Ok(())
    }
}
