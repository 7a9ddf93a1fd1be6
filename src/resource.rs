//! **Your resource manager: the one file to edit.**
//!
//! The service calls [`Manager::configure`] when a booking of this webhook's resource type
//! starts and [`Manager::release`] when it ends or is deleted, whether the booking came from
//! the reservation system or from a Waldur order (`docs/sources.md`). Everything else
//! (signatures, parsing, filtering by resource type, never configuring a booking twice,
//! reporting back, health, metrics) is done for you.
//!
//! This default implementation changes nothing: it logs what it would do and keeps the
//! bookings it would have configured in memory. To make it real:
//!
//! 1. Put the clients your backend needs (a connection pool, an HTTP client) in [`Manager`]
//!    and build them in [`Manager::from_env`], reading your own settings from the environment
//!    with [`settings_from_env`](webhook::config::settings_from_env) (errors name the variable).
//! 2. In `configure`, read what you need from the [`Reservation`]: the user, the resource's
//!    name, the times, `reservation.parameters` (user input: validate every value and return
//!    [`ManagerError::invalid_parameter`] when one is wrong).
//! 3. Make the change so that running it twice is harmless: derive names from
//!    `reservation.event_id`, and treat "already exists" as done.
//! 4. Return an [`Outcome`] whose message tells the user how to use the resource; it is shown
//!    to them (500 characters at most). Return [`ManagerError::transient`] for failures that
//!    may pass (a timeout) and [`ManagerError::permanent`] for the rest.
//! 5. In `release`, undo the change; "already gone" is success. It may be called again after
//!    a crash, or for a booking whose `configure` was cut short or failed: clean up whatever
//!    is there.
//! 6. Optionally, make `ready` check that the backend answers, for `GET /readyz`.
//! 7. Optionally, implement `on_event` to act on the other events (`RESOURCE_STATUS_CHANGED`,
//!    the `ALL` ping, Waldur events that neither configure nor release); by default they are
//!    acknowledged as ignored.
//!
//! `examples/` has complete managers for PostgreSQL, containers, API keys and switch ports.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use webhook::contract::reservation::Reservation;
use webhook::manager::{ManagerError, Outcome, ResourceManager};

/// The manager this service runs.
#[derive(Default)]
pub struct Manager {
    /// Bookings "configured" so far, by booking id, with the resource's name.
    configured: Mutex<HashMap<String, String>>,
}

impl Manager {
    /// Builds the manager at start-up; an error here stops the service with its message.
    pub async fn from_env() -> anyhow::Result<Self> {
        Ok(Self::default())
    }

    /// How many bookings this manager holds configured.
    pub fn configured(&self) -> usize {
        self.configured.lock().expect("lock poisoned").len()
    }
}

#[async_trait]
impl ResourceManager for Manager {
    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id))]
    async fn configure(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let resource = &reservation.resource.name;
        tracing::info!(
            user = %reservation.user.id,
            %resource,
            start = %reservation.start,
            end = %reservation.end,
            parameters = ?reservation.parameters.values(),
            "would configure the resource for the user"
        );
        self.configured
            .lock()
            .expect("lock poisoned")
            .insert(reservation.event_id.clone(), resource.clone());
        Ok(Outcome::new(format!(
            "{resource} is yours until {}.",
            reservation.end.format("%Y-%m-%d %H:%M UTC")
        )))
    }

    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id))]
    async fn release(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let resource = &reservation.resource.name;
        let was_configured = self
            .configured
            .lock()
            .expect("lock poisoned")
            .remove(&reservation.event_id)
            .is_some();
        tracing::info!(%resource, was_configured, "would release the resource");
        Ok(Outcome::new(format!("{resource} has been released.")))
    }
}
