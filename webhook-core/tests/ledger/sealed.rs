//! Sealed credentials (`SEAL_CREDENTIALS`) on the shared ledger: what PostgreSQL keeps of a
//! booking whose secret was sealed holds the sealed text only. The embedded ledger's side is
//! in the API suite (`tests/api/sealed.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use webhook::contract::reservation::Reservation;
use webhook::manager::{ManagerError, Outcome, ResourceManager};

use crate::helpers::{Event, SshKey, sealed_part, spawn_app_with, start_backend, vars};

const SECRET: &str = "Pw4Rt8Yu1Io5Kj9Hg2Fd6Sa3Zx7Cv0Bn";

/// Hands out [`SECRET`].
struct Handing;

#[async_trait]
impl ResourceManager for Handing {
    async fn configure(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
        Ok(Outcome::new("user=booking Password:").with_secret(SECRET))
    }

    async fn release(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
        Ok(Outcome::new("gone"))
    }
}

/// Every row of every table of the database, as text.
async fn every_row(client: &tokio_postgres::Client) -> String {
    let tables = client
        .query(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM \
             information_schema.tables WHERE table_schema NOT IN ('pg_catalog', \
             'information_schema') AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap();
    assert!(!tables.is_empty());
    let mut kept = String::new();
    for table in tables {
        let name: String = table.get(0);
        let rows = client
            .query(&format!("SELECT t::text FROM {name} t"), &[])
            .await
            .unwrap();
        for row in rows {
            kept.push_str(&row.get::<_, String>(0));
        }
    }
    kept
}

#[tokio::test]
async fn the_shared_ledger_keeps_only_the_sealed_secret() {
    // Arrange: the back end is down at first, so the notification waits in the outbox.
    let db = crate::postgres::database().await;
    let key = SshKey::generate("ed25519");
    let backend = start_backend().await;
    backend.answer_with(503);
    let endpoints = backend.endpoints();
    let mut settings = vars(&endpoints);
    settings.extend([
        ("LEDGER_URL", db.url.as_str()),
        ("SEAL_CREDENTIALS", "prefer"),
        ("RETRY_BACKOFF", "50ms"),
    ]);
    let app = spawn_app_with(&settings, Arc::new(Handing)).await;
    let client = db.client().await;

    // Act
    let start = Event::start("401").ssh_public_key(Some(&key.public));
    assert_eq!(app.post_webhook(&start.body()).await.status(), 200);
    app.wait_for_state("401", "active", Duration::from_secs(5))
        .await;
    let waiting = every_row(&client).await;
    backend.answer_with(0);
    let (notifications, _) = backend.wait_for(1).await;
    app.stop().await;

    // Assert: the ledger held the sealed text while the notification waited, never the
    // secret, then or after.
    let message = notifications[0]["message"].as_str().unwrap();
    assert_eq!(key.unseal(message), SECRET);
    assert!(
        !waiting.contains(SECRET),
        "the plain secret is in the ledger"
    );
    assert!(
        waiting.contains(sealed_part(message).unwrap().1),
        "{waiting}"
    );
    assert!(!every_row(&client).await.contains(SECRET));
}
