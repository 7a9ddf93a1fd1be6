//! The example managers in `examples/`, each against its real backend, which the test
//! starts itself. Each module runs only with its feature: `cargo test --features postgres_database`,
//! or `--all-features` for all of them.

/// The core's test kit, as the tests here call it.
mod helpers {
    // Used only by the modules of the features turned on.
    #[allow(unused_imports)]
    pub use webhook::testing::*;

    use webhook::engine::seal::{self, Seal};
    use webhook::manager::Outcome;

    /// What the user reads of an outcome with `SEAL_CREDENTIALS=off`: its text, then its
    /// secret on a line of its own.
    #[allow(dead_code)]
    pub trait Shown {
        fn shown(&self) -> String;
    }

    impl Shown for Outcome {
        fn shown(&self) -> String {
            seal::message(self, Seal::Off, None).expect("off never refuses")
        }
    }

    /// The secret in what [`Shown::shown`] gives: its last line.
    #[allow(dead_code)]
    pub fn secret(shown: &str) -> String {
        shown.lines().last().unwrap_or_default().to_owned()
    }
}

#[allow(dead_code)]
mod backends;

#[cfg(feature = "postgres_database")]
mod postgres_database;

#[cfg(feature = "api_key")]
mod api_key;

#[cfg(feature = "container")]
mod container;

#[cfg(feature = "switch_port")]
mod switch_port;

#[cfg(feature = "virtual_machine")]
mod virtual_machine;

/// Settings as the `(name, value)` pairs the examples' `from_vars` take.
#[cfg(any(
    feature = "postgres_database",
    feature = "api_key",
    feature = "virtual_machine"
))]
fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A fixture body with some top-level fields replaced, to make the sender's START and END a
/// booking of an example's resource type. The result is re-serialized, so it is signed anew.
#[cfg(any(
    feature = "postgres_database",
    feature = "api_key",
    feature = "container",
    feature = "switch_port",
    feature = "virtual_machine"
))]
fn fixture_with(name: &str, fields: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut body: serde_json::Value = serde_json::from_slice(&helpers::fixture(name)).unwrap();
    for (field, value) in fields {
        body[*field] = value.clone();
    }
    serde_json::to_vec(&body).unwrap()
}
