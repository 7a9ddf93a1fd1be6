//! An Open vSwitch database of its own for one test: `ovsdb-server` with the
//! `Open_vSwitch` schema in a temporary directory, on a Unix socket there and on a free
//! loopback TCP port, holding one bridge `br0`. No `ovs-vswitchd` runs: the port's `tag`
//! column is what the example manager changes, and `ovs-vsctl --no-wait` reads it back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// A running database server, stopped and deleted when dropped.
pub struct Ovs {
    pub tcp_port: u16,
    dir: TempDir,
    server: Child,
}

impl Ovs {
    /// Creates the database, starts the server and adds `br0`; well under a second.
    pub fn start() -> Self {
        super::require("ovsdb-server", "openvswitch-switch");
        super::require("ovs-vsctl", "openvswitch-switch");
        super::require(SCHEMA, "openvswitch-switch");
        let dir = tempfile::Builder::new()
            .prefix("ovs")
            .tempdir()
            .expect("a temporary directory");
        let path = |name: &str| dir.path().join(name);
        run(Command::new("ovsdb-tool")
            .arg("create")
            .arg(path("conf.db"))
            .arg(SCHEMA));
        let tcp_port = super::free_port();
        let server = Command::new("ovsdb-server")
            .arg(path("conf.db"))
            .arg(format!("--remote=punix:{}", path("db.sock").display()))
            .arg(format!("--remote=ptcp:{tcp_port}:127.0.0.1"))
            .arg(format!("--unixctl={}", path("ovsdb-server.ctl").display()))
            .arg(format!("--log-file={}", path("ovsdb-server.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ovsdb-server starts");
        let ovs = Self {
            tcp_port,
            dir,
            server,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ovs.socket().exists() {
            assert!(Instant::now() < deadline, "ovsdb-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        ovs.vsctl(&["init"]);
        ovs.vsctl(&["add-br", "br0"]);
        ovs
    }

    /// The Unix socket, as `OVSDB_ADDRESS` takes it.
    pub fn unix_address(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// The TCP listener, as `OVSDB_ADDRESS` takes it.
    pub fn tcp_address(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.tcp_port)
    }

    /// Adds a port to `br0`, with an access VLAN or none.
    pub fn add_port(&self, name: &str, tag: Option<u16>) {
        self.vsctl(&["add-port", "br0", name]);
        if let Some(tag) = tag {
            self.vsctl(&["set", "port", name, &format!("tag={tag}")]);
        }
    }

    /// The port's access VLAN as `ovs-vsctl` reads it; `None` when it has none.
    pub fn tag(&self, port: &str) -> Option<u16> {
        let text = self.vsctl(&["get", "port", port, "tag"]);
        match text.trim() {
            "[]" => None,
            tag => Some(tag.parse().expect("a tag is a number")),
        }
    }

    /// One column of the port as `ovs-vsctl get` prints it: `[]` when empty, `[10, 20]`,
    /// `trunk`, `{}`.
    pub fn column(&self, port: &str, column: &str) -> String {
        self.vsctl(&["get", "port", port, column]).trim().to_owned()
    }

    /// One of the port's `external_ids`, or `None`.
    pub fn external_id(&self, port: &str, key: &str) -> Option<String> {
        let text = self.vsctl(&[
            "--format=json",
            "--columns=external_ids",
            "list",
            "port",
            port,
        ]);
        let table: serde_json::Value = serde_json::from_str(&text).expect("ovs-vsctl's JSON");
        // {"data": [[["map", [[key, value], ...]]]], "headings": ["external_ids"]}
        let pairs = table["data"][0][0][1]
            .as_array()
            .cloned()
            .unwrap_or_default();
        pairs
            .iter()
            .find(|pair| pair[0] == key)
            .and_then(|pair| pair[1].as_str().map(String::from))
    }

    /// Runs `ovs-vsctl` on this database and returns its output; panics if it fails.
    pub fn vsctl(&self, args: &[&str]) -> String {
        run(Command::new("ovs-vsctl")
            .arg(format!("--db={}", self.unix_address()))
            .arg("--no-wait")
            .args(args))
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        let control = self.dir.path().join("ovsdb-server.ctl");
        let asked = Command::new("ovs-appctl")
            .arg("-t")
            .arg(&control)
            .arg("exit")
            .output()
            .is_ok_and(|o| o.status.success());
        if !asked {
            let _ = self.server.kill();
        }
        let _ = self.server.wait();
    }
}

/// Runs a command to completion and returns its stdout; panics with its stderr if it fails.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
