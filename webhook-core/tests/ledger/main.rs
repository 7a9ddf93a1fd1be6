//! The booking ledger: one suite run against both stores, a storm of deliveries, crashes
//! of a real service process, and start-up errors. PostgreSQL runs in a server the tests
//! start themselves.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod child;
mod crash;
mod logs;
mod postgres;
mod scaling;
mod sealed;
mod startup;
mod storm;
mod suite;
mod tls;

/// The suite on the embedded ledger: two connections to one SQLite file.
mod sqlite_store {
    use std::sync::Arc;

    use webhook::engine::ledger::sqlite::Sqlite;

    async fn open() -> crate::suite::Ledger {
        let dir = tempfile::tempdir().unwrap();
        let serving = Sqlite::open(dir.path(), true).unwrap();
        let other = Sqlite::open(dir.path(), false).unwrap();
        (Arc::new(serving), Arc::new(other), Box::new(dir))
    }

    crate::store_suite!(open);
}

/// The suite on the shared ledger: two pools on one PostgreSQL database.
mod postgres_store {
    use std::sync::Arc;

    use webhook::engine::ledger::postgres::Postgres;

    async fn open() -> crate::suite::Ledger {
        let db = crate::postgres::database().await;
        let a = Postgres::connect(&db.url).await.unwrap();
        let b = Postgres::connect(&db.url).await.unwrap();
        (Arc::new(a), Arc::new(b), Box::new(db))
    }

    crate::store_suite!(open);
}
