//! The booking engine: the ledger of every booking's desired and actual state, the
//! reconciler that drives one to the other, and what is reported back and measured. It
//! knows nothing of HTTP.

pub mod ledger;
pub mod ledger_tls;
pub mod metrics;
pub mod outbox;
pub mod reconcile;
pub mod report;
pub mod seal;
