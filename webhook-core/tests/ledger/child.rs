//! A real service process for the crash and start-up tests: this test binary, started again
//! with `WEBHOOK_TEST_CHILD=<dir>`, runs the service (settings from its environment) with a
//! manager whose effects are appended to `<dir>/effects`; a call blocks while
//! `<dir>/block-<operation>` exists. The port it listens on is written to `<dir>/port`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use webhook::app::startup::Application;
use webhook::config::Config;
use webhook::contract::reservation::Reservation;
use webhook::manager::{ManagerError, Outcome, ResourceManager};

/// Set in a child's environment: the directory it reports to.
pub const CHILD: &str = "WEBHOOK_TEST_CHILD";
const ENTRY: &str = "child::a_child_service_runs_when_this_binary_is_started_as_one";

struct FileManager {
    dir: PathBuf,
}

impl FileManager {
    fn effect(&self, line: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("effects"))
            .unwrap();
        file.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    async fn op(&self, op: &str, r: &Reservation) -> Result<Outcome, ManagerError> {
        self.effect(&format!("{op}-start {}", r.event_id));
        while self.dir.join(format!("block-{op}")).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.effect(&format!("{op}-done {}", r.event_id));
        Ok(Outcome::new(format!("{op} done")))
    }
}

#[async_trait]
impl ResourceManager for FileManager {
    async fn configure(&self, r: &Reservation) -> Result<Outcome, ManagerError> {
        self.op("configure", r).await
    }
    async fn release(&self, r: &Reservation) -> Result<Outcome, ManagerError> {
        self.op("release", r).await
    }
}

#[test]
fn a_child_service_runs_when_this_binary_is_started_as_one() {
    let Some(dir) = std::env::var_os(CHILD).map(PathBuf::from) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let config = Config::from_env(webhook::config::Service::CORE).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        });
        webhook::app::telemetry::init(&config.log_level, config.log_format);
        let manager = Arc::new(FileManager { dir: dir.clone() });
        let app = Application::build(config, manager)
            .await
            .unwrap_or_else(|e| {
                eprintln!("{e:#}");
                std::process::exit(1)
            });
        std::fs::write(dir.join("port.new"), app.port().to_string()).unwrap();
        std::fs::rename(dir.join("port.new"), dir.join("port")).unwrap();
        app.run_until_stopped(webhook::app::shutdown_signal())
            .await
            .unwrap();
        std::process::exit(0)
    });
}

/// The settings of a child: fixture secret, ledger in `data`, replay check off.
pub fn settings(data: &Path) -> Vec<(String, String)> {
    [
        ("HOST", "127.0.0.1".to_owned()),
        ("PORT", "0".into()),
        ("RESOURCE_TYPE", "Switch Port".into()),
        ("WEBHOOK_SECRET", crate::helpers::fixture_secret()),
        ("DATA_DIR", data.display().to_string()),
        ("REPLAY_TOLERANCE", "off".into()),
        ("LEDGER_RETENTION", "off".into()),
        ("RELEASE_GRACE", "3650days".into()),
        ("ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN.into()),
        ("PROCESSING_BUDGET", "500ms".into()),
        ("LOG_LEVEL", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The command that starts a child reporting to `dir`, optionally as another user.
pub fn command(dir: &Path, settings: &[(String, String)], as_user: Option<&str>) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut c = match as_user {
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--clear-groups",
            ])
            .arg(exe);
            c
        }
        None => Command::new(exe),
    };
    c.args(["--exact", ENTRY, "--test-threads=1", "--nocapture"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(CHILD, dir)
        .envs(settings.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    c
}

/// A running child service.
pub struct Child {
    pub process: std::process::Child,
    pub address: String,
    dir: PathBuf,
}

impl Child {
    /// Starts a child and waits until it listens.
    pub fn start(dir: &Path, settings: &[(String, String)]) -> Self {
        let _ = std::fs::remove_file(dir.join("port"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("child.log"))
            .unwrap();
        let process = command(dir, settings, None)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the test binary starts again");
        let mut child = Self {
            process,
            address: String::new(),
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(port) = std::fs::read_to_string(dir.join("port")) {
                child.address = format!("http://127.0.0.1:{port}");
                return child;
            }
            if let Ok(Some(status)) = child.process.try_wait() {
                panic!("the child service exited ({status}):\n{}", child.log());
            }
            assert!(
                Instant::now() < deadline,
                "the child did not start:\n{}",
                child.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("child.log")).unwrap_or_default()
    }

    /// `kill -9`: no shutdown, no cleanup.
    pub fn kill(mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The effects recorded so far.
pub fn effects(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("effects"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until `line` is among the effects.
pub async fn wait_for_effect(dir: &Path, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !effects(dir).iter().any(|l| l == line) {
        assert!(
            Instant::now() < deadline,
            "no {line:?} in {:?}",
            effects(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
