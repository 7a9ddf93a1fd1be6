//! A local run from `.env.example`, as the README's first command does it: the placeholder
//! secret is refused, and the local run replaces it with a strong one that both the
//! service and `send` then read.

use webhook::testing::config;

fn settings(path: &std::path::Path) -> Vec<(String, String)> {
    dotenvy::from_path_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn env_example_copied_to_env_starts_once_a_local_run_gave_it_a_secret() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example");
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env");
    std::fs::copy(&example, &env).unwrap();

    // As copied, its secret is a placeholder: the service does not start with it.
    let refused = config(settings(&env)).unwrap_err().to_string();
    assert!(
        refused.contains("WEBHOOK_SECRET is a placeholder"),
        "{refused}"
    );

    let secret = webhook::app::local::ensure_secret(&env)
        .unwrap()
        .expect("a new secret for the placeholder");

    let config = config(settings(&env)).expect("the local run's .env is valid");
    let keys = config.keys.expect("events are signed");
    let expected = webhook::contract::signature::Keys::new(vec![secret.clone().into_bytes()]);
    assert_eq!(keys.sign(b"body"), expected.sign(b"body"));
    // Every other line is as it was.
    let before = std::fs::read_to_string(&example).unwrap();
    let after = std::fs::read_to_string(&env).unwrap();
    assert_eq!(
        before.replace(
            "WEBHOOK_SECRET=change-me",
            &format!("WEBHOOK_SECRET={secret}")
        ),
        after
    );
    // A second run keeps it.
    assert!(webhook::app::local::ensure_secret(&env).unwrap().is_none());
}
