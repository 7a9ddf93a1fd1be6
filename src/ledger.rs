//! What this process knows about each booking, so none is configured twice.
//!
//! One entry per booking id, behind its own async lock: a duplicate START waits for the
//! first to finish and then sees the booking active; an END that overtakes a slow START
//! waits for it and then releases. Released bookings are remembered (up to
//! [`RELEASED_KEPT`]) so a START arriving after its END configures nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// Where a booking stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `configure` is running or was cut short.
    Configuring,
    /// `configure` succeeded and `release` has not.
    Active,
    /// `release` is running or was cut short.
    Releasing,
    /// `release` succeeded, or the booking ended before it started.
    Released,
    /// `configure` failed; a repeated START tries again, an END releases what was left.
    Failed,
}

/// How many released bookings are remembered; bounds memory under any event rate while
/// covering a late START by far (START and END of one booking are hours apart, not
/// hundreds of thousands of bookings apart).
pub const RELEASED_KEPT: usize = 100_000;

type Slot = Arc<tokio::sync::Mutex<Option<State>>>;

/// The bookings of this process.
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
    active: AtomicUsize,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    released: VecDeque<String>,
}

/// Exclusive access to one booking's state while it is being acted on.
pub struct Booking {
    id: String,
    guard: OwnedMutexGuard<Option<State>>,
}

impl Booking {
    /// The booking's state; `None` if this process has never seen it.
    pub fn state(&self) -> Option<State> {
        *self.guard
    }
}

impl Ledger {
    /// Waits until no other delivery is acting on booking `id`, then holds it.
    pub async fn lock(&self, id: &str) -> Booking {
        let slot = {
            let mut inner = self.inner.lock().expect("ledger lock poisoned");
            inner.slots.entry(id.to_owned()).or_default().clone()
        };
        Booking {
            id: id.to_owned(),
            guard: slot.lock_owned().await,
        }
    }

    /// Records a booking's new state.
    pub fn set(&self, booking: &mut Booking, state: State) {
        let was_active = booking.state() == Some(State::Active);
        match (was_active, state == State::Active) {
            (false, true) => self.active.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.active.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
        *booking.guard = Some(state);
        if state == State::Released {
            let mut inner = self.inner.lock().expect("ledger lock poisoned");
            inner.released.push_back(booking.id.clone());
            while inner.released.len() > RELEASED_KEPT {
                let oldest = inner.released.pop_front().expect("non-empty");
                inner.slots.remove(&oldest);
            }
        }
    }

    /// How many bookings are configured and not yet released.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_delivery_waits_for_the_first_and_sees_its_result() {
        let ledger = Arc::new(Ledger::default());
        let mut first = ledger.lock("103").await;
        assert_eq!(first.state(), None);

        let l = ledger.clone();
        let second = tokio::spawn(async move { l.lock("103").await.state() });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());

        ledger.set(&mut first, State::Active);
        drop(first);
        assert_eq!(second.await.unwrap(), Some(State::Active));
        assert_eq!(ledger.active(), 1);
    }

    #[tokio::test]
    async fn released_bookings_are_forgotten_oldest_first_beyond_the_bound() {
        let ledger = Ledger::default();
        for i in 0..=RELEASED_KEPT {
            let mut b = ledger.lock(&i.to_string()).await;
            ledger.set(&mut b, State::Released);
        }
        assert_eq!(ledger.lock("0").await.state(), None);
        assert_eq!(ledger.lock("1").await.state(), Some(State::Released));
    }
}
