//! The example managers in `examples/`, each against its real backend, which the test
//! starts itself. Each module runs only with its feature: `cargo test --features postgres`,
//! or `--all-features` for all of them.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

#[allow(dead_code)]
mod backends;

#[cfg(feature = "postgres")]
mod postgres_database;

#[cfg(feature = "redis")]
mod api_key;

#[cfg(feature = "docker")]
mod container;

#[cfg(feature = "ovs")]
mod switch_port;

#[cfg(feature = "libvirt")]
mod virtual_machine;

/// Settings as the `(name, value)` pairs the examples' `from_vars` take.
#[cfg(any(feature = "postgres", feature = "redis", feature = "libvirt"))]
fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A fixture body with some top-level fields replaced, to make the sender's START and END a
/// booking of an example's resource type. The result is re-serialized, so it is signed anew.
#[cfg(any(
    feature = "postgres",
    feature = "redis",
    feature = "docker",
    feature = "ovs",
    feature = "libvirt"
))]
fn fixture_with(name: &str, fields: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut body: serde_json::Value = serde_json::from_slice(&helpers::fixture(name)).unwrap();
    for (field, value) in fields {
        body[*field] = value.clone();
    }
    serde_json::to_vec(&body).unwrap()
}
