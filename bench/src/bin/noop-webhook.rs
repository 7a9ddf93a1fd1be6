//! The webhook as generated, with a manager that does nothing: what the service itself costs.

use async_trait::async_trait;
use webhook::contract::reservation::Reservation;
use webhook::manager::{ManagerError, Outcome, ResourceManager};

struct Noop;

#[async_trait]
impl ResourceManager for Noop {
    async fn configure(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
        Ok(Outcome::new("configured"))
    }
    async fn release(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
        Ok(Outcome::new("released"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    webhook::app::cli::run(webhook::service!("Switch Port"), async { Ok(Noop) }).await
}
