//! The service over HTTP, started on a free port for each test.

mod bad_input;
mod contract;
mod helpers;
mod lifecycle;
mod outbox;
mod replay;
mod report;
mod retries;
mod status;
