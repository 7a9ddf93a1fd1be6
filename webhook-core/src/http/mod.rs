//! The HTTP surface: the endpoints, the gates a delivery passes (size, time, signature,
//! guard), and the handlers that turn deliveries into the engine's work and answer them.

pub mod access;
pub mod admin;
pub mod dispatch;
pub mod hook;
pub mod limits;
pub mod routes;
pub mod seen;
pub mod state;
pub mod waldur;
