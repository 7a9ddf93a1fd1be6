//! The service over HTTP, started on a free port for each test.

mod bad_input;
mod conformance;
mod contract;
mod helpers;
mod hook;
mod lifecycle;
mod limits;
mod outbox;
mod presets;
mod replay;
mod report;
mod retries;
mod sealed;
mod senders;
mod standard_webhooks;
mod status;
mod waldur;
