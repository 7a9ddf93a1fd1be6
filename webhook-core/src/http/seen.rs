//! The Standard Webhooks messages whose event the manager's hook has had: a message whose
//! delivery was answered 2xx is not offered to the hook again while it could still be
//! delivered again, one that failed is (decision 17).
//!
//! One replica's memory, bounded twice: an entry is kept until the message's timestamp is
//! outside `REPLAY_TOLERANCE` (after which the signature check refuses the message anyway),
//! and there are never more than [`CAPACITY`] entries, the oldest forgotten first. Entries
//! are named by a SHA-256 of the id, so a long id costs no more memory than a short one.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The most messages remembered at once. Only events that are not bookings reach the hook,
/// and the back end sends few: at 10 000 in the five minutes of the default tolerance, 33 a
/// second, the oldest would be forgotten before their time. About 100 bytes each, 1 MB in
/// all.
pub const CAPACITY: usize = 10_000;

type Key = [u8; 32];

/// The messages offered to the hook, and how their delivery was answered.
pub struct Seen {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Every entry's key in the order it was last changed, with that change's number; a key
    /// whose entry has changed since (or is gone) is skipped when it comes up.
    order: VecDeque<(Key, u64)>,
    next: u64,
}

struct Entry {
    change: u64,
    /// When it is forgotten; `None` while the first delivery is being handled.
    answered_until: Option<Instant>,
}

/// What [`Seen::claim`] found.
pub enum Claim<'a> {
    /// Not seen, or its earlier delivery failed: offer it, and say how it was answered.
    New(Pending<'a>),
    /// An earlier delivery was answered 2xx.
    Answered,
    /// An earlier delivery is still being handled.
    InFlight,
}

/// A message being offered to the hook. Dropped without [`answered`](Self::answered) (the
/// sender hung up before its answer), it is forgotten, so the sender's retry is offered;
/// dropped after, it leaves the answer recorded.
pub struct Pending<'a> {
    seen: &'a Seen,
    key: Key,
    change: u64,
}

impl Seen {
    /// An empty set of at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// Looks message `id` up and, when it is to be offered, records it as being handled.
    pub fn claim(&self, id: &str) -> Claim<'_> {
        let key: Key = Sha256::digest(id.as_bytes()).into();
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("the seen set's lock");
        inner.prune(now, self.capacity);
        match inner.entries.get(&key).map(|e| e.answered_until) {
            Some(None) => return Claim::InFlight,
            Some(Some(until)) if until > now => return Claim::Answered,
            _ => {}
        }
        let change = inner.record(key, None);
        inner.prune(now, self.capacity);
        Claim::New(Pending {
            seen: self,
            key,
            change,
        })
    }

    /// How many messages are remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .expect("the seen set's lock")
            .entries
            .len()
    }

    /// Whether no message is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Pending<'_> {
    /// Records how the delivery was answered: a 2xx is remembered for `keep`, anything else
    /// forgotten at once, so that the sender's retry is offered again.
    pub fn answered(self, success: bool, keep: Duration) {
        let mut inner = self.seen.inner.lock().expect("the seen set's lock");
        if success {
            inner.record(self.key, Some(Instant::now() + keep));
            inner.prune(Instant::now(), self.seen.capacity);
        } else {
            inner.forget(self.key, self.change);
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.seen.inner.lock() {
            inner.forget(self.key, self.change);
        }
    }
}

impl Inner {
    /// Sets `key`'s entry, and returns the change's number.
    fn record(&mut self, key: Key, answered_until: Option<Instant>) -> u64 {
        let change = self.next;
        self.next += 1;
        self.entries.insert(
            key,
            Entry {
                change,
                answered_until,
            },
        );
        self.order.push_back((key, change));
        change
    }

    /// Removes `key`'s entry if it is still the one change `change` made.
    fn forget(&mut self, key: Key, change: u64) {
        if self.entries.get(&key).is_some_and(|e| e.change == change) {
            self.entries.remove(&key);
        }
    }

    /// Drops, oldest first, what is stale or expired, and whatever is beyond `capacity`.
    fn prune(&mut self, now: Instant, capacity: usize) {
        while let Some(&(key, change)) = self.order.front() {
            let current = self.entries.get(&key).filter(|e| e.change == change);
            let expired = current.is_some_and(|e| e.answered_until.is_some_and(|t| t <= now));
            if current.is_some() && !expired && self.order.len() <= capacity {
                break;
            }
            self.order.pop_front();
            if current.is_some() {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Duration = Duration::from_secs(300);

    #[test]
    fn an_answered_message_is_a_duplicate_and_a_failed_one_is_offered_again() {
        let seen = Seen::new(10);
        let Claim::New(first) = seen.claim("msg_1") else {
            panic!("new")
        };
        assert!(matches!(seen.claim("msg_1"), Claim::InFlight));
        first.answered(false, KEEP);
        let Claim::New(retry) = seen.claim("msg_1") else {
            panic!("offered again after a failure")
        };
        retry.answered(true, KEEP);
        assert!(matches!(seen.claim("msg_1"), Claim::Answered));
        assert!(matches!(seen.claim("msg_2"), Claim::New(_)));
    }

    #[test]
    fn a_delivery_cut_short_is_forgotten() {
        let seen = Seen::new(10);
        drop(seen.claim("msg_1"));
        assert!(seen.is_empty());
        assert!(matches!(seen.claim("msg_1"), Claim::New(_)));
    }

    #[test]
    fn entries_expire_and_never_exceed_the_capacity() {
        let seen = Seen::new(3);
        let Claim::New(p) = seen.claim("short-lived") else {
            panic!("new")
        };
        p.answered(true, Duration::ZERO);
        assert!(matches!(seen.claim("short-lived"), Claim::New(_)));
        for n in 0..100 {
            if let Claim::New(p) = seen.claim(&format!("msg_{n}")) {
                p.answered(true, KEEP);
            }
            assert!(seen.len() <= 3);
            assert!(seen.inner.lock().unwrap().order.len() <= 4);
        }
        assert!(matches!(seen.claim("msg_99"), Claim::Answered));
        assert!(matches!(seen.claim("msg_0"), Claim::New(_)));
    }
}
