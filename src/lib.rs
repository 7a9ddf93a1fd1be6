//! A reservation webhook: when a booking of this webhook's resource type starts, the
//! reservation system posts a signed `EVENT_START` and the service configures the resource;
//! when it ends (`EVENT_END`) or is deleted (`EVENT_DELETED`), the service releases it.
//! Waldur marketplace orders can drive the same manager (`POST /waldur`), and every other
//! verified event is offered to the manager's hook.
//!
//! # Layout
//! - [`resource`]: **your** [`ResourceManager`](manager::ResourceManager), the one file to edit.
//! - [`manager`]: the trait, its outcome and its error.
//! - [`reservation`]: the booking a manager receives.
//! - [`routes`]: the HTTP endpoints and the gates a delivery passes (size, signature, shape).
//! - [`signature`]: HMAC-SHA256 checking and signing, with presets for other senders.
//! - [`waldur`], [`access`]: Waldur events into bookings; tokens, allow-lists, proxies.
//! - [`hook`]: other events, offered to the manager.
//! - [`payload`]: both wire shapes into one [`reservation::Reservation`], or a reason to ignore.
//! - [`dispatch`]: records what a delivery asks for, waits for the result, replies.
//! - [`ledger`]: every booking's desired and actual state, durable (SQLite or PostgreSQL).
//! - [`ledger_tls`]: TLS of the PostgreSQL ledger, as `sslmode` in `LEDGER_URL` asks.
//! - [`reconcile`]: drives bookings to their desired state: claims, retries, the sweeper.
//! - [`report`], [`outbox`]: notifications and audit-log entries for the reservation
//!   system, stored with the results and delivered with retries.
//! - [`admin`]: `GET /bookings/{id}`, a booking's state and history.
//! - [`limits`]: connections, header and body time and size: what one client may hold.
//! - [`local`]: `.env` for local runs, and a strong secret when it has none.
//! - [`reply`]: the JSON reply format.
//! - [`config`], [`telemetry`], [`metrics`], [`startup`], [`cli`]: settings, logs, metrics,
//!   wiring, and the command line.

pub mod access;
pub mod admin;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod hook;
pub mod ledger;
pub mod ledger_tls;
pub mod limits;
pub mod local;
pub mod manager;
pub mod metrics;
pub mod outbox;
pub mod payload;
pub mod reconcile;
pub mod reply;
pub mod report;
pub mod reservation;
pub mod resource;
pub mod routes;
pub mod signature;
pub mod startup;
pub mod telemetry;
pub mod waldur;

/// Completes on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}
