//! A Redis server of its own for one test, on a free loopback port, with nothing saved to
//! disk. [`Redis::start`] secures it as the API key example asks: an `admin` user, and the
//! `default` user off; [`Redis::start_open`] leaves `default` without a password, as a fresh
//! server has it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The administrator [`Redis::start`] creates.
pub const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-secret";

/// A running server, killed when dropped.
pub struct Redis {
    pub port: u16,
    child: Child,
    _dir: TempDir,
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
        // A free port can be taken by someone else before the server binds it: try again.
        for _ in 0..3 {
            let port = super::free_port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                // Caps a string at 1 MB, so a command that slips through and writes at a far
                // offset fails with an error instead of taking 512 MB on a shared machine.
                .args(["--proto-max-bulk-len", "1mb"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server runs");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if answers_ping(port) {
                    return Self {
                        port,
                        child,
                        _dir: dir,
                    };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
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
