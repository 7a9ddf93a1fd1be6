//! A PostgreSQL server for the ledger tests: started on first use in a temporary directory
//! on a free port, shared by the tests running at the same time, stopped and deleted when
//! the last of them is done. Each test gets a database of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tempfile::TempDir;

/// The command that installs PostgreSQL (and the other test backends).
pub const INSTALL: &str = "scripts/install-backends.sh";

/// A running server.
pub struct Server {
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
}

static SHARED: Mutex<Weak<Server>> = Mutex::new(Weak::new());
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A database of its own on the shared server; keep it while the test runs.
pub struct Database {
    pub url: String,
    pub name: String,
    server: Arc<Server>,
}

/// Creates a fresh database, starting the server if none is running.
pub async fn database() -> Database {
    let server = {
        let mut shared = SHARED.lock().unwrap();
        match shared.upgrade() {
            Some(server) => server,
            None => {
                let server = Arc::new(Server::start());
                *shared = Arc::downgrade(&server);
                server
            }
        }
    };
    let name = format!(
        "ledger_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::SeqCst)
    );
    server
        .admin()
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    Database {
        url: format!("postgres://postgres@127.0.0.1:{}/{name}", server.port),
        name,
        server,
    }
}

impl Database {
    /// Statements the server has run in this database (BEGIN and COMMIT included), and how
    /// many of them may have ended in a durable commit: a COMMIT, or a statement that
    /// changes rows (alone, it commits by itself). `pg_stat_statements` counts them; the
    /// count is read from another database, so reading it adds nothing.
    pub async fn statements(&self) -> (i64, i64) {
        let admin = self.server.admin().await;
        let row = admin
            .query_one(
                "SELECT COALESCE(SUM(calls), 0)::BIGINT, \
                        COALESCE(SUM(calls) FILTER (WHERE query ~* '^\\s*(COMMIT|END)\\M' \
                          OR query ~* '\\m(INSERT|UPDATE|DELETE)\\M'), 0)::BIGINT \
                 FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)",
                &[&self.name],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    /// A connection of the test's own to this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// Each statement run in this database with its count, most run first.
    pub async fn statement_counts(&self) -> Vec<(i64, String)> {
        let admin = self.server.admin().await;
        let rows = admin
            .query(
                "SELECT calls, query FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) \
                 ORDER BY calls DESC",
                &[&self.name],
            )
            .await
            .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }
}

/// A connection to `url` on the test server, its I/O driven by a task of its own.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the test server accepts connections");
    tokio::spawn(connection);
    client
}

/// Gives `path` and what is in it to the server's user, when the tests run as root (the
/// server refuses to).
fn chown_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .arg("-R")
            .arg("postgres:")
            .arg(path)
            .status();
        assert!(status.is_ok_and(|s| s.success()), "chown postgres: failed");
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Server {
    /// A connection to the server's `postgres` database, where `pg_stat_statements` is.
    async fn admin(&self) -> tokio_postgres::Client {
        connect(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.port
        ))
        .await
    }

    fn start() -> Self {
        Self::start_with(|_| {}, "")
    }

    /// Starts a server in a temporary directory: `prepare` gets the data directory once
    /// `initdb` made it (files to add, a `pg_hba.conf` to write), and `options` go to
    /// `postgres` after the usual ones.
    pub fn start_with(prepare: impl FnOnce(&Path), options: &str) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .unwrap_or_else(|| {
                panic!("PostgreSQL is not installed: run `{INSTALL}` (or `apt-get install -y postgresql`)")
            });
        let dir = tempfile::Builder::new()
            .prefix("ledger-pg")
            .tempdir()
            .unwrap();
        chown_to_postgres(dir.path());
        let mut server = Self { port: 0, dir, bin };
        let data = server.dir.path().join("data");
        let out = server
            .tool("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        prepare(&data);
        chown_to_postgres(&data);
        for _ in 0..3 {
            server.port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 \
                 -c shared_preload_libraries=pg_stat_statements {options}",
                server.port,
                server.dir.path().display()
            );
            let started = server
                .tool("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(server.dir.path().join("server.log"))
                .args(["-w", "-o", &options, "start"])
                .output()
                .expect("pg_ctl runs");
            if started.status.success() {
                let created = server
                    .tool("psql")
                    // Over the socket: the server may take TCP clients over TLS only.
                    .arg("-h")
                    .arg(server.dir.path())
                    .args(["-p", &server.port.to_string()])
                    .args(["-U", "postgres", "-d", "postgres", "-q", "-c"])
                    .arg("CREATE EXTENSION pg_stat_statements")
                    .output()
                    .expect("psql runs");
                assert!(
                    created.status.success(),
                    "pg_stat_statements: {}",
                    String::from_utf8_lossy(&created.stderr)
                );
                return server;
            }
        }
        let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
        panic!("PostgreSQL did not start:\n{log}");
    }

    /// The server's data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
                .arg(program);
            c
        } else {
            Command::new(program)
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
