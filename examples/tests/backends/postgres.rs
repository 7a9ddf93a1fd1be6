//! A PostgreSQL server of its own for one test: its data and Unix socket in a temporary
//! directory, TCP on a free loopback port. The superuser `postgres` logs in without a
//! password on the socket only; TCP logins need a password (SCRAM), as in production.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

/// A running server, stopped and deleted when dropped.
pub struct Postgres {
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
    /// Runs the server's tools as `postgres` when the tests run as root, which `initdb`
    /// refuses.
    as_postgres: Vec<String>,
}

impl Postgres {
    /// Creates a cluster and starts it; about a second.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pg")
            .tempdir()
            .expect("a temporary directory");
        let as_postgres = if is_root() {
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
            [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
            ]
            .map(String::from)
            .to_vec()
        } else {
            Vec::new()
        };
        let mut pg = Self {
            port: 0,
            dir,
            bin,
            as_postgres,
        };
        let data = pg.data();
        run(pg
            .tool("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"]));
        // A free port can be taken by someone else before the server binds it: try again.
        for _ in 0..3 {
            pg.port = super::free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                pg.port,
                pg.dir.path().display()
            );
            let started = pg
                .tool("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(pg.dir.path().join("server.log"))
                .args(["-w", "-o", &options, "start"])
                .output()
                .expect("pg_ctl runs");
            if started.status.success() {
                return pg;
            }
        }
        let log = std::fs::read_to_string(pg.dir.path().join("server.log")).unwrap_or_default();
        panic!("PostgreSQL did not start:\n{log}");
    }

    /// The superuser's connection over the Unix socket, as `PG_ADMIN_URL` takes it.
    pub fn admin_url(&self) -> String {
        self.socket_url("postgres", "postgres")
    }

    /// `user`'s connection to `dbname` over the Unix socket, where no password is asked.
    pub fn socket_url(&self, user: &str, dbname: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={dbname}",
            self.dir.path().display(),
            self.port
        )
    }

    /// A superuser session, for arranging and checking from outside the manager.
    pub async fn admin(&self) -> tokio_postgres::Client {
        self.admin_on("postgres").await
    }

    /// A superuser session on `dbname`.
    pub async fn admin_on(&self, dbname: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.socket_url("postgres", dbname), tokio_postgres::NoTls)
                .await
                .expect("the superuser connects");
        tokio::spawn(connection);
        client
    }

    /// Logs in over TCP as `user` with `password`, as a booking's user would.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(dbname)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        match self.as_postgres.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(program);
                command
            }
            None => Command::new(program),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn bin_dir() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .max();
    let dir = PathBuf::from(format!(
        "/usr/lib/postgresql/{}/bin",
        newest.map_or("<version>".into(), |v| v.to_string())
    ));
    super::require(&dir.join("initdb").display().to_string(), "postgresql");
    dir
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn run(command: &mut Command) {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
