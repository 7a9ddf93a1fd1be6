//! A Redis server of its own for one test, on a free loopback port, with nothing saved to
//! disk unless the test asks ([`Redis::stop_keeping_data`]). [`Redis::start`] secures it as
//! the API key example asks: an `admin` user, and the `default` user off;
//! [`Redis::start_open`] leaves `default` without a password, as a fresh server has it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The administrator [`Redis::start`] creates.
pub const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-secret";

/// Where [`Redis::stop_keeping_data`] saves the ACL users, in the server's directory.
pub const ACL_FILE: &str = "users.acl";

/// A running server, killed when dropped.
pub struct Redis {
    pub port: u16,
    child: Child,
    dir: TempDir,
}

impl Redis {
    /// Starts the server with an `admin` user and the `default` user off.
    pub fn start() -> Self {
        let redis = Self::start_open();
        let mut con = redis::Client::open(redis.open_url())
            .unwrap()
            .get_connection()
            .expect("the default user connects");
        redis::cmd("ACL")
            .arg(&["SETUSER", ADMIN_USER, "on", &format!(">{ADMIN_PASSWORD}")][..])
            .arg(&["~*", "&*", "+@all"][..])
            .query::<()>(&mut con)
            .expect("the admin user is created");
        redis::cmd("ACL")
            .arg(&["SETUSER", "default", "off"][..])
            .query::<()>(&mut con)
            .expect("the default user is switched off");
        redis
    }

    /// Starts the server, its `default` user open, and waits until it answers `PING`.
    pub fn start_open() -> Self {
        super::require("redis-server", "redis-server");
        let dir = tempfile::Builder::new()
            .prefix("redis")
            .tempdir()
            .expect("a temporary directory");
        // The server refuses to start with an ACL file that does not exist; an empty one
        // leaves `default` as a fresh server has it.
        std::fs::write(dir.path().join(ACL_FILE), "").expect("an empty ACL file");
        // A free port can be taken by someone else before the server binds it: try again.
        for _ in 0..3 {
            let port = super::free_port();
            let mut child = spawn(port, dir.path());
            if wait_until(&mut child, || answers_ping(port)) {
                return Self { port, child, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    /// Saves the keys (`SAVE`) and the ACL users (`ACL SAVE`) to the server's directory,
    /// then kills the server: a backend that goes down and keeps its data, for
    /// [`Redis::restart`].
    pub async fn stop_keeping_data(&mut self) {
        let mut admin = self.admin().await;
        for command in [&["SAVE"][..], &["ACL", "SAVE"]] {
            redis::cmd(command[0])
                .arg(&command[1..])
                .query_async::<()>(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and directory, so it loads the keys and
    /// users [`Redis::stop_keeping_data`] saved, and waits until the administrator can log in
    /// (the `default` user may be off, so `PING` alone is refused).
    pub fn restart(&mut self) {
        let mut child = spawn(self.port, self.dir.path());
        let admin_url = self.admin_url();
        let admin_answers = || {
            redis::Client::open(admin_url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut con| redis::cmd("PING").query::<()>(&mut con))
                .is_ok()
        };
        if !wait_until(&mut child, admin_answers) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server did not start again on port {}", self.port);
        }
        self.child = child;
    }

    /// The server's directory: its saved keys (`dump.rdb`) and users ([`ACL_FILE`]).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The administrator's URL, as `REDIS_ADMIN_URL` takes it.
    pub fn admin_url(&self) -> String {
        format!(
            "redis://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }

    /// The `default` user's URL, without a password.
    pub fn open_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// An administrator's connection, for arranging and checking from outside the manager.
    pub async fn admin(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.admin_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("the administrator connects")
    }

    /// Connects and authenticates as `user`, as a booking's user would.
    pub async fn login(
        &self,
        user: &str,
        key: &str,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        use redis::IntoConnectionInfo as _;
        let info = ("127.0.0.1", self.port)
            .into_connection_info()?
            .set_redis_settings(
                redis::RedisConnectionInfo::default()
                    .set_username(user)
                    .set_password(key),
            );
        redis::Client::open(info)?
            .get_multiplexed_async_connection()
            .await
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `redis-server` on `port` with `dir` as its directory and ACL file's place, saving
/// nothing by itself.
fn spawn(port: u16, dir: &Path) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        // Caps a string at 1 MB, so a command that slips through and writes at a far
        // offset fails with an error instead of taking 512 MB on a shared machine.
        .args(["--proto-max-bulk-len", "1mb"])
        .arg("--dir")
        .arg(dir)
        .arg("--aclfile")
        .arg(dir.join(ACL_FILE))
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server runs")
}

/// Waits up to 10 s until `ready`; `false` when the server exits or the time is up.
fn wait_until(child: &mut Child, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut reply = [0; 7];
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .is_ok()
        && stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
