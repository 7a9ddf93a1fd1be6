//! The core of a reservation webhook: when a booking of the webhook's resource type
//! starts, the reservation system posts a signed `EVENT_START` and the service configures
//! the resource through a [`ResourceManager`](manager::ResourceManager); when it ends
//! (`EVENT_END`) or is deleted (`EVENT_DELETED`), the service releases it. Waldur
//! marketplace events can drive the same manager (`POST /waldur`), and every other verified
//! event is offered to the manager's hook.
//!
//! A webhook is a crate of its own that implements [`ResourceManager`](manager::ResourceManager)
//! and hands it to [`app::cli::run`] with the project's [`Service`](config::Service):
//!
//! ```no_run
//! # use webhook::manager::{ManagerError, Outcome, ResourceManager};
//! # use webhook::contract::reservation::Reservation;
//! struct Manager;
//!
//! #[async_trait::async_trait]
//! impl ResourceManager for Manager {
//!     async fn configure(&self, r: &Reservation) -> Result<Outcome, ManagerError> {
//!         Ok(Outcome::new(format!("{} is yours until {}", r.resource.name, r.end)))
//!     }
//!     async fn release(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
//!         Ok(Outcome::new("released"))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     webhook::app::cli::run(webhook::service!("Switch Port"), async { Ok(Manager) }).await
//! }
//! ```
//!
//! # Layers
//! - [`manager`]: the trait a webhook implements, its outcome and its error.
//! - [`contract`]: the wire contract: the reservation a manager receives, both payload
//!   shapes, signatures, replies, other events.
//! - [`config`]: the settings, from the environment.
//! - `engine` (not API): the ledger, the reconciler, reports and the outbox, metrics.
//! - `http` (not API): the endpoints, the gates a delivery passes, the handlers.
//! - [`app`]: the command line, start-up and shutdown, logs, and `conformance`, which checks
//!   a webhook in any language against the senders' contract.
//! - [`testing`] (feature `testing`): the application on a free port, signed fixtures and
//!   events, for a manager's tests.

#![warn(missing_docs)]

pub mod app;
pub mod config;
pub mod contract;
#[doc(hidden)]
pub mod engine;
#[doc(hidden)]
pub mod http;
pub mod manager;
#[cfg(feature = "testing")]
pub mod testing;
