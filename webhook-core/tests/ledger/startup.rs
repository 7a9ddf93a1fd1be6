//! A ledger that cannot be used stops the service at start-up with a message that names
//! `DATA_DIR` and what is wrong.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use webhook::app::startup::Application;

use crate::child::{command, settings};
use crate::helpers::RecordingManager;

async fn start_error(data: &Path) -> String {
    let config = webhook::testing::config([
        (
            "WEBHOOK_SECRET",
            "test-secret-of-at-least-32-bytes-long".to_owned(),
        ),
        ("HOST", "127.0.0.1".into()),
        ("PORT", "0".into()),
        ("DATA_DIR", data.display().to_string()),
    ])
    .unwrap();
    match Application::build(config, RecordingManager::new()).await {
        Ok(_) => panic!("the service started on {}", data.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_ledger_file_that_is_not_a_database_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ledger.db"), "not a database, ".repeat(100)).unwrap();
    let err = start_error(dir.path()).await;
    assert!(
        err.contains("DATA_DIR") && err.contains("not a database"),
        "{err}"
    );
}

#[tokio::test]
async fn a_data_dir_that_is_a_file_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = start_error(&file).await;
    assert!(
        err.contains("DATA_DIR") && err.contains("cannot create"),
        "{err}"
    );
}

#[tokio::test]
async fn a_second_service_on_the_same_data_dir_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let first = crate::helpers::spawn_app_with(
        &[("DATA_DIR", dir.path().to_str().unwrap())],
        RecordingManager::new(),
    )
    .await;
    let err = start_error(dir.path()).await;
    assert!(err.contains("in use by another running service"), "{err}");
    assert!(err.contains("LEDGER_URL"), "{err}");
    first.stop().await;
}

/// Starts a child service on `data` as a user without rights there (root has them all, so
/// a root test drops to `nobody`); returns its exit code and output.
fn child_start_error(dir: &Path, data: &Path) -> (Option<i32>, String) {
    let root = unsafe_free_is_root();
    let user = root.then_some("65534");
    let output = command(dir, &settings(data), user)
        .output()
        .expect("the child runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

fn unsafe_free_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn open_to_all(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
}

#[test]
fn a_read_only_data_dir_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    open_to_all(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();

    let (code, output) = child_start_error(dir.path(), &data);

    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&format!("DATA_DIR {}", data.display())),
        "{output}"
    );
    assert!(output.contains("Permission denied"), "{output}");
    assert!(
        output.contains("must be a directory this process can read and write"),
        "{output}"
    );
}

#[test]
fn an_unreadable_ledger_file_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    open_to_all(dir.path());
    let data = dir.path().join("data");
    drop(webhook::engine::ledger::sqlite::Sqlite::open(&data, true).unwrap());
    open_to_all(&data);
    for file in ["ledger.db", "ledger.lock"] {
        let _ = std::fs::set_permissions(data.join(file), std::fs::Permissions::from_mode(0o666));
    }
    std::fs::set_permissions(
        data.join("ledger.db"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();

    let (code, output) = child_start_error(dir.path(), &data);

    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("cannot open the ledger"), "{output}");
    assert!(output.contains("ledger.db"), "{output}");
    let _ = Arc::new(());
}
