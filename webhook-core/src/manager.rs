//! The one trait a webhook implements, and what its methods return.
//!
//! The service calls [`ResourceManager::configure`] when a booking of its resource type
//! starts and [`ResourceManager::release`] when it ends or is deleted, and offers every other
//! verified event to [`ResourceManager::on_event`]. Everything around those calls
//! (signatures, parsing, routing, never configuring twice, reporting back) is done before
//! and after them.

use std::error::Error as StdError;
use std::fmt;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use crate::contract::event::OtherEvent;
use crate::contract::reservation::Reservation;

/// Sets up and tears down one kind of resource for a booking.
///
/// Both methods must be **idempotent**: converge to the desired state and treat
/// "already exists" (configure) or "already gone" (release) as success. The service
/// records every booking in its ledger and never calls `configure` again for a booking
/// that was configured, but a call can be cut short (a crash, `kill -9`, a shutdown
/// deadline) and is then made again when the service resumes, possibly by another
/// replica:
///
/// - `configure` may be called again for a booking whose previous `configure` was cut
///   short or failed, so it must finish what a half-done call left;
/// - `release` must be **safe to repeat** and may be called after a crash for a booking
///   that is already released, was only partly configured, or whose `configure` failed;
///   the sweeper also calls it, without an END, for bookings past their end.
///
/// Errors marked [`ManagerError::transient`] are retried with backoff (`MAX_ATTEMPTS`);
/// [`ManagerError::permanent`] ones are not. Neither method is ever called for a booking
/// while another call on the same resource is running (across replicas too), and a
/// pending release of a resource goes before a configure of another booking on it.
///
/// Implementations are shared between requests (`Arc<dyn ResourceManager>`), so keep
/// connection pools and clients in `self` and build them once in the constructor.
#[async_trait]
pub trait ResourceManager: Send + Sync + 'static {
    /// A booking started: make the resource usable by `reservation.user`.
    ///
    /// The outcome's message is shown to the user by the reservation system, so put in
    /// it what they need to use the resource (address, user name), and the password or key
    /// with [`Outcome::with_secret`], which `SEAL_CREDENTIALS` can seal to the user's SSH key.
    async fn configure(&self, reservation: &Reservation) -> Result<Outcome, ManagerError>;

    /// A booking ended, was deleted, or outlived its end: undo what `configure` did.
    ///
    /// Safe to repeat: "already gone" is success, and it may find a half-configured
    /// resource (a `configure` cut short or failed) to clean up.
    async fn release(&self, reservation: &Reservation) -> Result<Outcome, ManagerError>;

    /// The end of a configured booking moved (the user extended or shortened it) and nothing
    /// else changed: `reservation.end` is the new end. Implement it where the resource carries
    /// the end itself (an API key's expiry, a role's `VALID UNTIL`); the default does nothing.
    ///
    /// The service keeps the booking configured until the new end either way: an extension is
    /// never cut short, and a shortened booking is released by END or, without END, by the
    /// sweeper at the new end plus `RELEASE_GRACE`. It is called under the same rules as
    /// `configure` (one call per resource at a time, retried when transient) and must be
    /// safe to repeat.
    async fn end_changed(&self, reservation: &Reservation) -> Result<(), ManagerError> {
        let _ = reservation;
        Ok(())
    }

    /// Whether the backend can take work now; `GET /readyz` answers 503 while it cannot.
    async fn ready(&self) -> Result<(), ManagerError> {
        Ok(())
    }

    /// Any other verified event: `EVENT_CREATED`, `RESOURCE_*` but `RESOURCE_DELETED`, the
    /// `ALL` test ping, event types newer than this service, and Waldur events that neither
    /// configure nor release; never START, END, DELETED or UPDATED nor `RESOURCE_DELETED`
    /// (the service acts on those), nor a booking of another resource type. Use it to trigger a workflow on, say, `RESOURCE_STATUS_CHANGED`.
    ///
    /// `event.body` is the raw JSON; [`OtherEvent::parse`] reads it. `EVENT_*` and
    /// `RESOURCE_*` events come for every resource type: [`OtherEvent::is_ours`] tells.
    ///
    /// Return `Ok(None)` for events you do not handle (the reply stays 200 `ignored`, as
    /// without this method), `Ok(Some(outcome))` for 200 `handled`, an error for 5xx
    /// `failed`. There is no user to notify, so the outcome's message (cut to 500
    /// characters) is the reply's message and lands in the sender's webhook log: like an
    /// error's, it must hold no secret (an [`Outcome::with_secret`]'s secret is dropped).
    ///
    /// The call is not recorded in the ledger: it is made once per delivery, never retried,
    /// and a repeated delivery calls it again. With `SIGNATURE_PRESET=standard-webhooks` a
    /// message (`webhook-id`) answered 2xx is not offered again by the same replica while it
    /// may still arrive; with several replicas, or after a restart, still expect an event
    /// twice. It should finish within `PROCESSING_BUDGET`; a longer call is answered 202 and
    /// finishes in the background.
    async fn on_event(&self, event: &OtherEvent<'_>) -> Result<Option<Outcome>, ManagerError> {
        let _ = event;
        Ok(None)
    }
}

/// What a successful `configure` or `release` did, in words for the user, and the secret
/// handed out, if any (a password, a key).
///
/// Give the secret with [`Outcome::with_secret`], never in the text: the service then puts it
/// in the user's notification on a line of its own after the text, in plain text or, as
/// `SEAL_CREDENTIALS` says, sealed to the user's SSH key, so that only the user can read it
/// (decision 18). End the text with what the secret is, e.g. `… Password:`. The message,
/// secret included, is at most 500 characters: the secret is never cut, the text is shortened
/// (ending in `…`) to make room for it, and sealed it takes about 430 characters, so put
/// what matters most first in the text.
///
/// ```
/// use webhook::manager::Outcome;
///
/// let outcome = Outcome::new("host=db.example.org user=booking_103 Password:")
///     .with_secret(secrecy::SecretString::from("kX9…"));
/// // Debug output never shows the secret.
/// assert!(!format!("{outcome:?}").contains("kX9"));
/// ```
///
/// The secret is never logged nor kept in the ledger, and the outcome of
/// [`ResourceManager::on_event`], which goes to the sender, never carries it.
#[derive(Clone)]
pub struct Outcome {
    /// Shown to the user. The reservation system keeps at most 500 characters;
    /// a longer message is cut at a character boundary.
    pub message: String,
    secret: Option<SecretString>,
}

impl Outcome {
    /// An outcome whose message is shown to the user.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            secret: None,
        }
    }

    /// The secret handed out, shown after the message on a line of its own, plain or sealed
    /// (see [`Outcome`]).
    pub fn with_secret(mut self, secret: impl Into<SecretString>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// The secret handed out, if any.
    pub fn secret(&self) -> Option<&SecretString> {
        self.secret.as_ref()
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outcome")
            .field("message", &self.message)
            .field("secret", &self.secret.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
            && self.secret.as_ref().map(ExposeSecret::expose_secret)
                == other.secret.as_ref().map(ExposeSecret::expose_secret)
    }
}

impl Eq for Outcome {}

/// Whether trying the same call again later can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A passing fault: a timeout, a backend restarting, a lock held elsewhere.
    Transient,
    /// Trying again gives the same answer: bad parameters, a refused request.
    Permanent,
}

/// Why `configure`, `release` or `ready` failed.
///
/// The message is shown to the user and returned to the sender, so it must say what
/// went wrong in a sentence and never contain a secret. The source, if any, is only
/// logged.
#[derive(Debug)]
pub struct ManagerError {
    retry: Retry,
    /// The booking's own input (a custom parameter) is at fault, not the sender or the backend.
    user_input: bool,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ManagerError {
    /// A failure that may go away: the service may try again.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            retry: Retry::Transient,
            user_input: false,
            message: message.into(),
            source: None,
        }
    }

    /// A failure that will not go away by trying again.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retry: Retry::Permanent,
            user_input: false,
            message: message.into(),
            source: None,
        }
    }

    /// A custom parameter the booking carries is missing or not acceptable: a permanent
    /// failure that is the user's to fix. The user is told (an `ERROR` notification naming the
    /// parameter) and the sender gets a 2xx, since the delivery itself was fine.
    pub fn invalid_parameter(name: &str, problem: impl fmt::Display) -> Self {
        Self::invalid_input(format!("custom parameter {name}: {problem}"))
    }

    /// The booking's own input is not acceptable, said in `message` (which names what is
    /// wrong): like [`ManagerError::invalid_parameter`], for input that is not one parameter.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self {
            user_input: true,
            ..Self::permanent(message)
        }
    }

    /// Attaches the underlying error, which is logged but never shown.
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// How the service retries the call that failed.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// Whether the failure may pass, so the call is tried again.
    pub fn is_transient(&self) -> bool {
        self.retry == Retry::Transient
    }

    /// Whether the booking's own input is at fault ([`ManagerError::invalid_parameter`]).
    pub fn is_invalid_input(&self) -> bool {
        self.user_input
    }

    /// The user-facing message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ManagerError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
