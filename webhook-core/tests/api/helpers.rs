//! Test managers for the core's suites, on top of [`webhook::testing`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use webhook::contract::event::{OtherEvent, Source};
use webhook::contract::reservation::Reservation;
use webhook::manager::{ManagerError, Outcome, ResourceManager};
pub use webhook::testing::*;

/// One call a [`RecordingManager`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Configure(String),
    Release(String),
    EndChanged(String),
}

/// An event the manager's hook received, as it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    pub source: Source,
    pub event_type: String,
    pub body: Vec<u8>,
    /// What [`OtherEvent::is_ours`] said.
    pub ours: Option<bool>,
}

/// How a [`RecordingManager`]'s hook answers.
#[derive(Debug, Clone)]
pub enum HookAnswer {
    /// Does not handle the event (the default method's answer).
    Pass,
    Handled(String),
    /// Fails with (transient?, message).
    Fail(bool, String),
    /// Takes this long, then handles it.
    Slow(Duration),
}

/// A manager that records its calls and behaves as told: the test double for the trait.
#[derive(Default)]
pub struct RecordingManager {
    /// Events the hook received, in order.
    pub events: Mutex<Vec<SeenEvent>>,
    /// Hook calls that have returned.
    pub events_done: Mutex<usize>,
    hook_answer: Mutex<Option<HookAnswer>>,
    calls: Mutex<Vec<Call>>,
    /// When set, every call fails with this (transient?, message).
    failure: Mutex<Option<(bool, String)>>,
    /// The next calls that fail: (how many, transient?, message).
    failing: Mutex<Option<(usize, bool, String)>>,
    /// How long each call takes.
    delay: Mutex<Duration>,
    /// Reservations received, in order.
    pub reservations: Mutex<Vec<Reservation>>,
}

impl RecordingManager {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn fail_with(&self, transient: bool, message: &str) {
        *self.failure.lock().unwrap() = Some((transient, message.to_owned()));
    }

    /// The next `n` calls fail, then calls succeed again.
    pub fn fail_next(&self, n: usize, transient: bool, message: &str) {
        *self.failing.lock().unwrap() = Some((n, transient, message.to_owned()));
    }

    pub fn delay_each_call(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// How the hook answers from now on.
    pub fn answer_events(&self, answer: HookAnswer) {
        *self.hook_answer.lock().unwrap() = Some(answer);
    }

    pub fn events(&self) -> Vec<SeenEvent> {
        self.events.lock().unwrap().clone()
    }

    async fn call(&self, call: Call, r: &Reservation) -> Result<Outcome, ManagerError> {
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.calls.lock().unwrap().push(call.clone());
        self.reservations.lock().unwrap().push(r.clone());
        let next = {
            let mut failing = self.failing.lock().unwrap();
            match failing.as_mut() {
                Some((n, transient, m)) if *n > 0 => {
                    *n -= 1;
                    Some((*transient, m.clone()))
                }
                _ => None,
            }
        };
        match next.or_else(|| self.failure.lock().unwrap().clone()) {
            Some((true, m)) => Err(ManagerError::transient(m)),
            Some((false, m)) => Err(ManagerError::permanent(m)),
            None => Ok(Outcome::new(format!("{call:?} done for {}", r.user.id))),
        }
    }
}

#[async_trait]
impl ResourceManager for RecordingManager {
    async fn configure(&self, r: &Reservation) -> Result<Outcome, ManagerError> {
        self.call(Call::Configure(r.event_id.clone()), r).await
    }

    async fn release(&self, r: &Reservation) -> Result<Outcome, ManagerError> {
        self.call(Call::Release(r.event_id.clone()), r).await
    }

    async fn end_changed(&self, r: &Reservation) -> Result<(), ManagerError> {
        self.call(Call::EndChanged(r.event_id.clone()), r)
            .await
            .map(drop)
    }

    async fn ready(&self) -> Result<(), ManagerError> {
        match self.failure.lock().unwrap().clone() {
            Some((_, m)) => Err(ManagerError::transient(m)),
            None => Ok(()),
        }
    }

    async fn on_event(&self, event: &OtherEvent<'_>) -> Result<Option<Outcome>, ManagerError> {
        self.events.lock().unwrap().push(SeenEvent {
            source: event.source,
            event_type: event.event_type.to_owned(),
            body: event.body.to_vec(),
            ours: event.is_ours(),
        });
        let answer = self.hook_answer.lock().unwrap().clone();
        let result = match answer.unwrap_or(HookAnswer::Pass) {
            HookAnswer::Pass => Ok(None),
            HookAnswer::Handled(m) => Ok(Some(Outcome::new(m))),
            HookAnswer::Fail(true, m) => Err(ManagerError::transient(m)),
            HookAnswer::Fail(false, m) => Err(ManagerError::permanent(m)),
            HookAnswer::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(Some(Outcome::new("done slowly")))
            }
        };
        *self.events_done.lock().unwrap() += 1;
        result
    }
}
