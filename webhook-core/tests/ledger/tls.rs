//! The PostgreSQL ledger over TLS, against a server that takes TLS connections only, with a
//! certificate from a CA made for the test (`openssl`): `require` connects, `verify-full`
//! connects with that CA as `sslrootcert` and is refused, saying why, without it.

use std::path::Path;
use std::process::Command;

use webhook::engine::ledger::postgres::Postgres;

use crate::postgres::Server;

fn run(command: &mut Command) {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.crt`) and a server certificate for localhost and 127.0.0.1 it signed, as
/// `server.crt` and `server.key` (PostgreSQL's defaults, in its data directory).
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

/// A server with `ssl=on` whose `pg_hba.conf` admits TCP clients over TLS only, with a
/// certificate from the test's CA (`ca.crt` in its data directory).
fn tls_server() -> Server {
    Server::start_with(
        |data| {
            certificates(data);
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
        },
        "-c ssl=on",
    )
}

fn url(server: &Server, host: &str, query: &str) -> String {
    format!(
        "postgres://postgres@{host}:{}/postgres?{query}",
        server.port
    )
}

#[tokio::test]
async fn the_ledger_connects_over_tls_and_verify_full_checks_the_servers_certificate() {
    let server = tls_server();
    let ca = server.data().join("ca.crt");

    // The server takes no connection in the clear.
    let clear = Postgres::connect(&url(&server, "127.0.0.1", "sslmode=disable")).await;
    assert!(clear.is_err(), "a connection without TLS was accepted");

    // require: encrypted, the server not authenticated.
    Postgres::connect(&url(&server, "127.0.0.1", "sslmode=require"))
        .await
        .expect("sslmode=require connects");

    // verify-full with the CA: by name and by address, both in the certificate.
    for host in ["localhost", "127.0.0.1"] {
        let query = format!("sslmode=verify-full&sslrootcert={}", ca.display());
        Postgres::connect(&url(&server, host, &query))
            .await
            .unwrap_or_else(|e| panic!("verify-full with the CA, host {host}: {}", e.0));
    }

    // verify-full without it: the system's roots do not know the test CA.
    let refused = match Postgres::connect(&url(&server, "localhost", "sslmode=verify-full")).await {
        Ok(_) => panic!("verify-full trusted a certificate no known CA issued"),
        Err(e) => e.0,
    };
    assert!(
        refused.contains("sslmode=verify-full") && refused.contains("sslrootcert"),
        "{refused}"
    );

    // The settings accept both modes.
    let config = webhook::testing::config([
        (
            "WEBHOOK_SECRET",
            "test-secret-of-at-least-32-bytes-long".to_owned(),
        ),
        (
            "LEDGER_URL",
            url(
                &server,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
            ),
        ),
    ]);
    assert!(config.is_ok(), "{:?}", config.err());
}
