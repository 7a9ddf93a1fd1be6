//! The PostgreSQL ledger over TLS, against a server that takes TLS connections only, with a
//! certificate from a CA made for the test (`openssl`): `require` connects, `verify-full`
//! connects with that CA as `sslrootcert` and is refused, saying why, without it.

use std::path::Path;
use std::process::Command;

use webhook::ledger::postgres::Postgres;

/// A server with `ssl=on` whose `pg_hba.conf` admits TCP clients over TLS only.
struct TlsServer {
    port: u16,
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn run(command: &mut Command) {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.crt`) and a server certificate for localhost and 127.0.0.1 it signed.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509"])
        .args(ec)
        .args(["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"])
        .args(["-subj", "/CN=ledger test CA"]));
    run(Command::new("openssl")
        .current_dir(dir)
        .arg("req")
        .args(ec)
        .args(["-keyout", "server.key", "-out", "server.csr"])
        .args(["-subj", "/CN=localhost"]));
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]));
    // PostgreSQL refuses a key others may read.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

impl TlsServer {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("PostgreSQL is installed: run scripts/install-backends.sh");
        let dir = tempfile::Builder::new()
            .prefix("ledger-tls")
            .tempdir()
            .unwrap();
        certificates(dir.path());
        let mut server = Self { port: 0, dir, bin };
        if is_root() {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(server.dir.path()));
        }
        let data = server.dir.path().join("data");
        run(server.tool("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]));
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        for _ in 0..3 {
            server.port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let d = server.dir.path().display();
            let options = format!(
                "-p {} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on \
                 -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key",
                server.port,
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
                return server;
            }
        }
        let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
        panic!("PostgreSQL did not start:\n{log}");
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

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

#[tokio::test]
async fn the_ledger_connects_over_tls_and_verify_full_checks_the_servers_certificate() {
    let server = TlsServer::start();
    let ca = server.dir.path().join("ca.crt");

    // The server takes no connection in the clear.
    let clear = Postgres::connect(&server.url("127.0.0.1", "sslmode=disable")).await;
    assert!(clear.is_err(), "a connection without TLS was accepted");

    // require: encrypted, the server not authenticated.
    Postgres::connect(&server.url("127.0.0.1", "sslmode=require"))
        .await
        .expect("sslmode=require connects");

    // verify-full with the CA: by name and by address, both in the certificate.
    for host in ["localhost", "127.0.0.1"] {
        let query = format!("sslmode=verify-full&sslrootcert={}", ca.display());
        Postgres::connect(&server.url(host, &query))
            .await
            .unwrap_or_else(|e| panic!("verify-full with the CA, host {host}: {}", e.0));
    }

    // verify-full without it: the system's roots do not know the test CA.
    let refused = match Postgres::connect(&server.url("localhost", "sslmode=verify-full")).await {
        Ok(_) => panic!("verify-full trusted a certificate no known CA issued"),
        Err(e) => e.0,
    };
    assert!(
        refused.contains("sslmode=verify-full") && refused.contains("sslrootcert"),
        "{refused}"
    );

    // The settings accept both modes.
    let config = webhook::config::Config::from_vars([
        (
            "WEBHOOK_SECRET",
            "test-secret-of-at-least-32-bytes-long".to_owned(),
        ),
        (
            "LEDGER_URL",
            server.url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
            ),
        ),
    ]);
    assert!(config.is_ok(), "{:?}", config.err());
}
