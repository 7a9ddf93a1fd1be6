//! Starts real backends for the example tests: each in a temporary directory, on a free
//! loopback port, stopped when its guard is dropped. A missing binary fails the test with
//! the command that installs it.

use std::net::TcpListener;
use std::path::Path;

#[cfg(feature = "container")]
pub mod docker;
#[cfg(feature = "virtual_machine")]
pub mod libvirt;
#[cfg(feature = "switch_port")]
pub mod ovs;
#[cfg(feature = "postgres_database")]
pub mod postgres;
#[cfg(feature = "api_key")]
pub mod redis;

/// Installs every backend the examples need.
pub const INSTALL: &str = "scripts/install-backends.sh";

/// A free TCP port on 127.0.0.1 (the OS picks it; it is released for the backend to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Panics with the install command when `binary` is missing.
pub fn require(binary: &str, package: &str) {
    let found = if binary.contains('/') {
        Path::new(binary).exists()
    } else {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).exists()))
            .unwrap_or(false)
    };
    assert!(
        found,
        "{binary} is not installed: run `{INSTALL}` (or `apt-get install -y {package}`)"
    );
}
