//! The shared ledger's cost per booking and per replica, counted by the PostgreSQL server
//! itself (`pg_stat_statements`): the statements and commits a new booking takes, and the
//! timed polls of replicas that have nothing to do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use webhook::engine::ledger::postgres::Postgres;
use webhook::engine::ledger::{Desired, Store, Verdict};

use crate::helpers::{RecordingManager, TestApp, json, spawn_app_with};

/// A signed START of a new booking of its own resource.
fn start(id: u64) -> Vec<u8> {
    let now = chrono::Utc::now();
    json!({
        "eventType": "EVENT_START", "timestamp": now.to_rfc3339(), "eventId": id.to_string(),
        "webhookId": 7, "userId": "u", "eventStart": now.to_rfc3339(),
        "eventEnd": (now + chrono::Duration::hours(1)).to_rfc3339(), "resourceId": id,
        "resourceName": format!("port-{id}"), "resourceType": "Switch Port",
    })
    .to_string()
    .into_bytes()
}

async fn replica(url: &str) -> TestApp {
    let vars = [
        ("LEDGER_URL", url),
        ("PROCESSING_BUDGET", "5s"),
        ("LOG_LEVEL", "error"),
    ];
    spawn_app_with(&vars, RecordingManager::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_booking_takes_at_most_six_statements_and_two_commits() {
    // Arrange: one replica, its statements prepared by a first booking.
    let db = crate::postgres::database().await;
    let app = replica(&db.url).await;
    let configured = |id| {
        let app = &app;
        async move {
            let body = json(app.post_webhook(&start(id)).await).await;
            assert_eq!(body["status"], "configured", "{body}");
        }
    };
    configured(1).await;
    let before = db.statements().await;
    let steps_before = ledger_steps(&db).await;

    // Act
    const BOOKINGS: i64 = 50;
    for id in 0..BOOKINGS as u64 {
        configured(100 + id).await;
    }
    let after = db.statements().await;
    let steps = (ledger_steps(&db).await - steps_before) as f64 / BOOKINGS as f64;

    // Assert: the count includes the timed polls that ran meanwhile, and the first sweep
    // of the new leader (one sweep and one clearing of old reports) may fall in it too.
    const UPKEEP: i64 = 2;
    let statements = (after.0 - before.0) as f64 / BOOKINGS as f64;
    let commits = (after.1 - before.1 - UPKEEP).max(0) as f64 / BOOKINGS as f64;
    eprintln!(
        "per new booking: {statements:.2} statements ({steps:.2} reads and writes), \
         {commits:.2} that may commit"
    );
    for (calls, query) in db.statement_counts().await.iter().take(12) {
        eprintln!("{calls:>6}  {}", &query[..query.len().min(110)]);
    }
    assert!(statements <= 6.0, "{statements:.2} statements per booking");
    assert!(commits <= 2.0, "{commits:.2} commits per booking");
    // The record with its claim (a read and a write), then the result, written on the row
    // as the claim left it, without reading it again.
    assert!(steps <= 3.0, "{steps:.2} reads and writes per booking");
    app.stop().await;
}

/// The ledger steps' reads and writes run in `db` so far (not the looks for due work nor
/// the timed polls).
async fn ledger_steps(db: &crate::postgres::Database) -> i64 {
    db.statement_counts()
        .await
        .iter()
        .filter(|(_, query)| query.starts_with("SELECT i.n,") || query.starts_with("WITH input AS"))
        .map(|(calls, _)| calls)
        .sum()
}

/// Statements run in `db` over `window` while nothing is delivered.
async fn idle_statements(db: &crate::postgres::Database, window: Duration) -> i64 {
    let before = db.statements().await.0;
    tokio::time::sleep(window).await;
    db.statements().await.0 - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timed_polls_do_not_grow_with_the_number_of_replicas() {
    // Arrange
    let db = crate::postgres::database().await;
    let window = Duration::from_secs(3);
    let mut apps = vec![replica(&db.url).await];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let one = idle_statements(&db, window).await;

    // Act
    for _ in 0..3 {
        apps.push(replica(&db.url).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let four = idle_statements(&db, window).await;

    // Assert
    eprintln!("idle statements in {window:?}: one replica {one}, four replicas {four}");
    assert!(one > 0, "the leader polls");
    assert!(
        four <= one + one / 2 + 2,
        "four replicas ran {four} statements where one ran {one}"
    );
    for app in apps {
        app.stop().await;
    }
}

/// Two stores on `db` that both asked to lead: the one that leads, then the other, once one
/// does (within 10 s).
async fn leader_and_standby(db: &crate::postgres::Database) -> (Arc<dyn Store>, Arc<dyn Store>) {
    let a: Arc<dyn Store> = Arc::new(Postgres::connect(&db.url).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(Postgres::connect(&db.url).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match (a.leads(), b.leads()) {
            (true, true) => panic!("two replicas lead at once"),
            (true, false) => return (a, b),
            (false, true) => return (b, a),
            (false, false) => {}
        }
        assert!(Instant::now() < deadline, "nobody leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_at_a_time_and_another_takes_over_when_it_goes() {
    let db = crate::postgres::database().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (gone, stays) = leader_and_standby(&db).await;
    // A while later it still leads alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gone.leads() && !stays.leads());

    drop(gone);
    while !stays.leads() {
        assert!(Instant::now() < deadline, "nobody took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waiting_for_the_lead_keeps_no_row_from_vacuum() {
    // Arrange: two replicas, one leading and one waiting to.
    let db = crate::postgres::database().await;
    let _replicas = leader_and_standby(&db).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE scratch (n INT); INSERT INTO scratch VALUES (0)")
        .await
        .unwrap();

    // Act: rows left dead by updates, then a vacuum.
    for _ in 0..10 {
        c.batch_execute("UPDATE scratch SET n = n + 1")
            .await
            .unwrap();
    }
    c.batch_execute("VACUUM scratch").await.unwrap();

    // Assert: it removed them all. A session of the ledger that holds a snapshot (one
    // waiting inside a statement for a lock, say) keeps every row that died after it
    // began, in every table of the database, for as long as it waits.
    let dead: i64 = c
        .query_one(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'scratch'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let held = c
        .query(
            "SELECT left(query, 60) FROM pg_stat_activity \
             WHERE datname = current_database() AND backend_xmin IS NOT NULL \
             AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let held: Vec<String> = held.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        dead, 0,
        "vacuum kept {dead} dead rows; sessions holding a snapshot: {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_that_wait_at_the_same_time_share_one_commit() {
    // Arrange
    let db = crate::postgres::database().await;
    let store = Arc::new(Postgres::connect(&db.url).await.unwrap());
    const STEPS: usize = 64;
    let now = webhook::engine::ledger::now();

    // Act: as many new bookings recorded at once, each of its own resource.
    let mut steps = tokio::task::JoinSet::new();
    for i in 0..STEPS {
        let store = store.clone();
        steps.spawn(async move {
            let intent = crate::suite::intent(&format!("b{i}"), i as i64, Desired::Active);
            store.record(&intent, now, None).await.unwrap().verdict
        });
    }
    let verdicts = steps.join_all().await;

    // Assert: each booking is recorded, and the rows of one transaction carry its id
    // (`xmin`), so the distinct ids count the commits.
    assert!(verdicts.iter().all(|v| *v == Verdict::Work), "{verdicts:?}");
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT COUNT(*), COUNT(DISTINCT xmin::text) FROM bookings",
            &[],
        )
        .await
        .unwrap();
    let (rows, commits): (i64, i64) = (row.get(0), row.get(1));
    eprintln!("{STEPS} steps at once: {commits} commits");
    assert_eq!(rows, STEPS as i64);
    assert!(
        commits <= STEPS as i64 / 2,
        "{STEPS} steps waiting together took {commits} commits"
    );
}
