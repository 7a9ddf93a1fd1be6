//! Your manager through the service, as the reservation system drives it: the real
//! application on a free port, signed events, the reports the user would get.

use std::sync::Arc;
use std::time::Duration;

use resource::Manager;
use webhook::testing::{Event, TestApp, json, spawn_app_with, start_backend, vars};

/// The service with your manager, reporting to a stand-in for the reservation system.
async fn app(manager: Arc<Manager>, backend: &webhook::testing::Backend) -> TestApp {
    spawn_app_with(&vars(&backend.endpoints()), manager).await
}

#[tokio::test]
async fn a_start_configures_once_and_an_end_releases() {
    let backend = start_backend().await;
    let manager = Arc::new(Manager::from_env().await.unwrap());
    let app = app(manager.clone(), &backend).await;

    let start = Event::start("103").body();
    assert_eq!(
        json(app.post_webhook(&start).await).await["status"],
        "configured"
    );
    assert_eq!(manager.configured(), 1);
    // The sender may deliver it again: the booking is not configured twice.
    assert_eq!(
        json(app.post_webhook(&start).await).await["status"],
        "duplicate"
    );

    let end = Event::end("103").body();
    assert_eq!(
        json(app.post_webhook(&end).await).await["status"],
        "released"
    );
    assert_eq!(manager.configured(), 0);
    // The user was told both times.
    let (notifications, _) = backend.wait_for(2).await;
    assert_eq!(notifications[0]["type"], "SUCCESS");
    app.stop().await;
}

#[tokio::test]
async fn custom_parameters_that_cannot_be_read_are_refused_and_the_user_told_why() {
    let backend = start_backend().await;
    let manager = Arc::new(Manager::from_env().await.unwrap());
    let app = app(manager.clone(), &backend).await;

    let start = Event::start("104").raw_parameters("{not json").body();
    assert_eq!(
        json(app.post_webhook(&start).await).await["status"],
        "refused"
    );

    assert_eq!(manager.configured(), 0);
    let (notifications, _) = backend.wait_for(1).await;
    assert_eq!(notifications[0]["type"], "ERROR");
    let message = notifications[0]["message"].as_str().unwrap();
    assert!(message.contains("customParameters"), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn a_booking_that_ended_meanwhile_is_released_by_the_sweeper() {
    let manager = Arc::new(Manager::from_env().await.unwrap());
    let app = spawn_app_with(&[("RELEASE_GRACE", "1s")], manager.clone()).await;
    let now = chrono::Utc::now();
    let start = Event::start("105").window(now, now + chrono::Duration::seconds(1));
    assert_eq!(
        json(app.post_webhook(&start.body()).await).await["status"],
        "configured"
    );

    // No END comes: the booking is released after its end plus RELEASE_GRACE.
    app.wait_for_state("105", "released", Duration::from_secs(10))
        .await;
    assert_eq!(manager.configured(), 0);
    app.stop().await;
}
