//! `examples/container.rs` against real engines: every scenario runs once on dockerd and
//! once on Podman's Docker-compatible service, and checks the containers from outside,
//! through the engine's API and the `docker` command line.

use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::StopContainerOptionsBuilder;
use chrono::{TimeZone, Utc};
use webhook::contract::reservation::{Parameters, Reservation, Resource, User};
use webhook::manager::ResourceManager;

use crate::backends::docker::{Engine, IMAGE, Kind};
use crate::helpers::{json, spawn_app_with};

#[allow(dead_code)]
#[path = "../container.rs"]
mod example;

use example::{
    BOOKING_LABEL, CAPABILITIES, Container, ContainerSettings, DEFAULT_CAPABILITIES, Network,
    USER_LABEL, container_name,
};

const MIB: i64 = 1 << 20;
const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk0bWlkZGxlT2ZUaGVSb2FkRXhhbXBsZUtleTEy alice@laptop";

/// Runs each scenario as a test on dockerd and as a test on Podman.
macro_rules! on_each_engine {
    ($($scenario:ident),* $(,)?) => {
        mod dockerd {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Engine::dockerd()).await
            })*
        }
        mod podman {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Engine::podman()).await
            })*
        }
    };
}

on_each_engine!(
    a_booking_gets_a_running_container_that_release_removes_with_its_volume,
    a_second_configure_starts_the_bookings_stopped_container_again,
    requests_beyond_the_offer_are_refused_and_create_nothing,
    the_webhook_starts_a_container_on_start_and_removes_it_on_end,
    a_container_is_confined_and_on_a_network_of_its_own_that_release_removes,
    one_bookings_container_cannot_reach_anothers,
    spawning_processes_stops_at_the_pids_limit,
    engine_failures_reach_the_user_without_the_engines_words,
);

/// The test image offered, at most 256 MiB and one CPU, no network, the default
/// confinement.
fn settings(engine: &Engine) -> ContainerSettings {
    ContainerSettings {
        docker_host: Some(engine.host.clone()),
        tls_cert_path: None,
        images: vec![IMAGE.into()],
        default_image: IMAGE.into(),
        max_memory: 256 * MIB,
        max_cpus: 1.0,
        network: Network::Mode("none".into()),
        capabilities: DEFAULT_CAPABILITIES.map(String::from).to_vec(),
        pids_limit: 256,
        disk_limit: None,
        // The image's `sleep` ignores SIGTERM as PID 1: keep the wait for it short.
        stop_timeout: Duration::from_secs(1),
    }
}

/// [`settings`] with a network of its own for each booking.
fn own_network(engine: &Engine) -> ContainerSettings {
    ContainerSettings {
        network: Network::PerBooking { internal: true },
        ..settings(engine)
    }
}

/// A booking id no other test uses on the same engine.
fn id(engine: &Engine, test: &str) -> String {
    format!("{:?}-{test}", engine.kind).to_lowercase()
}

fn booking(id: &str, parameters: &[(&str, &str)]) -> Reservation {
    Reservation {
        event_id: id.into(),
        user: User {
            id: "user-1".into(),
            username: Some("alice".into()),
            email: None,
            ssh_public_key: Some(SSH_KEY.into()),
        },
        resource: Resource {
            id: 7,
            name: "container".into(),
            kind: "Container".into(),
            specs: None,
            location: None,
        },
        site: None,
        title: None,
        description: None,
        start: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
        parameters: Parameters::from_pairs(parameters.iter().copied()),
    }
}

/// Whether the engine knows a container of that name.
async fn exists(engine: &Engine, name: &str) -> bool {
    engine
        .client()
        .await
        .inspect_container(name, None)
        .await
        .is_ok()
}

async fn a_booking_gets_a_running_container_that_release_removes_with_its_volume(
    engine: Arc<Engine>,
) {
    // Arrange
    let docker = engine.client().await;
    let manager = Container::new(settings(&engine)).unwrap();
    let booking = booking(
        &id(&engine, "lifecycle"),
        &[("memory", "64m"), ("cpus", "0.5")],
    );
    let name = container_name(&booking.event_id);

    // Act: configure
    let outcome = manager.configure(&booking).await.unwrap();

    // Assert: running, with the limits, labels and key asked for
    let container = docker.inspect_container(&name, None).await.unwrap();
    assert_eq!(container.state.unwrap().running, Some(true));
    let host = container.host_config.unwrap();
    assert_eq!(host.memory, Some(64 * MIB));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    let config = container.config.unwrap();
    let labels = config.labels.unwrap();
    assert_eq!(labels[BOOKING_LABEL], booking.event_id);
    assert_eq!(labels[USER_LABEL], "user-1");
    let printed = engine.cli(&["exec", &name, "sh", "-c", "echo \"$SSH_PUBLIC_KEY\""]);
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        SSH_KEY,
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    assert_eq!(
        outcome.message,
        format!(
            "Your container {name} is running until 2026-11-23 12:00 UTC: image {IMAGE}, \
             memory 64 MiB, CPU limit 0.5. It has no network address of its own. \
             Your SSH public key is in its SSH_PUBLIC_KEY variable."
        )
    );
    let volume = container
        .mounts
        .unwrap()
        .into_iter()
        .find(|m| m.destination.as_deref() == Some("/data"))
        .and_then(|m| m.name)
        .expect("the image's anonymous volume");

    // Act: configure again
    manager.configure(&booking).await.unwrap();

    // Assert: the same container, still running
    let again = docker.inspect_container(&name, None).await.unwrap();
    assert_eq!(again.id, container.id);
    assert_eq!(again.state.unwrap().running, Some(true));

    // Act: release
    let outcome = manager.release(&booking).await.unwrap();

    // Assert: the container and its volume are gone
    assert_eq!(
        outcome.message,
        format!("Your container {name} has been removed.")
    );
    assert!(!exists(&engine, &name).await);
    assert!(
        docker.inspect_volume(&volume).await.is_err(),
        "{volume} is left"
    );

    // Act: release again
    let outcome = manager.release(&booking).await.unwrap();

    // Assert
    assert_eq!(outcome.message, format!("Your container {name} is gone."));
}

async fn a_second_configure_starts_the_bookings_stopped_container_again(engine: Arc<Engine>) {
    // Arrange: a configured container that someone stopped
    let docker = engine.client().await;
    let manager = Container::new(settings(&engine)).unwrap();
    let booking = booking(&id(&engine, "restart"), &[]);
    let name = container_name(&booking.event_id);
    manager.configure(&booking).await.unwrap();
    let stop = StopContainerOptionsBuilder::new().t(0).build();
    docker.stop_container(&name, Some(stop)).await.unwrap();

    // Act
    let outcome = manager.configure(&booking).await.unwrap();

    // Assert: running again, with the defaults (the maxima)
    let container = docker.inspect_container(&name, None).await.unwrap();
    assert_eq!(container.state.unwrap().running, Some(true));
    assert!(
        outcome.message.contains("memory 256 MiB, CPU limit 1."),
        "{}",
        outcome.message
    );
    manager.release(&booking).await.unwrap();
    assert!(!exists(&engine, &name).await);
}

async fn requests_beyond_the_offer_are_refused_and_create_nothing(engine: Arc<Engine>) {
    // Arrange
    let manager = Container::new(settings(&engine)).unwrap();
    let id = id(&engine, "refused");
    let cases = [
        (
            ("image", "docker.io/library/ubuntu:latest"),
            "custom parameter image: \"docker.io/library/ubuntu:latest\" is not offered; choose one of: localhost/tiny:latest",
        ),
        (
            ("memory", "10g"),
            "custom parameter memory: \"10g\" is outside what is offered: from 6m to 256 MiB",
        ),
        (
            ("memory", "1m"),
            "custom parameter memory: \"1m\" is outside what is offered",
        ),
        (
            ("memory", "lots"),
            "custom parameter memory: \"lots\" is not a size such as 256m or 1g (from 6m to 256 MiB)",
        ),
        (
            ("cpus", "4"),
            "custom parameter cpus: \"4\" is outside what is offered: from 0.01 to 1",
        ),
        (
            ("cpus", "-1"),
            "custom parameter cpus: \"-1\" is not a number of CPUs",
        ),
    ];

    for ((key, value), expected) in cases {
        // Act
        let error = manager
            .configure(&booking(&id, &[(key, value)]))
            .await
            .unwrap_err();

        // Assert
        assert!(!error.is_transient(), "{key}={value}: {error}");
        assert!(
            error.message().starts_with(expected),
            "{key}={value}: {error}"
        );
        assert!(
            !exists(&engine, &container_name(&id)).await,
            "{key}={value}"
        );
    }

    // Act: a key that is not one OpenSSH line
    let mut bad_key = booking(&id, &[]);
    bad_key.user.ssh_public_key = Some("ssh-ed25519 AAAA\nrm -rf /".into());
    let error = manager.configure(&bad_key).await.unwrap_err();

    // Assert
    assert!(
        error
            .message()
            .starts_with("your SSH public key is not one OpenSSH public key line")
    );
    assert!(!exists(&engine, &container_name(&id)).await);
}

async fn the_webhook_starts_a_container_on_start_and_removes_it_on_end(engine: Arc<Engine>) {
    // Arrange: the fixture events, made a booking of the Container type
    let booking_id = id(&engine, "webhook");
    let name = container_name(&booking_id);
    let event = |file: &str| {
        crate::fixture_with(
            file,
            &[
                ("eventId", booking_id.clone().into()),
                ("resourceType", "Container".into()),
                ("resourceName", "container".into()),
                (
                    "customParameters",
                    r#"{"memory":"32m","cpus":"0.25"}"#.into(),
                ),
            ],
        )
    };
    let manager = Container::new(settings(&engine)).unwrap();
    // The answers below are the final results: wait for them whatever the default budget.
    let app = spawn_app_with(
        &[("RESOURCE_TYPE", "Container"), ("PROCESSING_BUDGET", "5s")],
        Arc::new(manager),
    )
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    // Act
    let started = app.post_webhook(&event("event_start.json")).await;

    // Assert
    assert_eq!(started.status(), 200);
    assert_eq!(json(started).await["status"], "configured");
    let container = engine
        .client()
        .await
        .inspect_container(&name, None)
        .await
        .unwrap();
    assert_eq!(container.state.unwrap().running, Some(true));
    assert_eq!(container.host_config.unwrap().memory, Some(32 * MIB));

    // Act
    let ended = app.post_webhook(&event("event_end.json")).await;

    // Assert
    assert_eq!(ended.status(), 200);
    assert_eq!(json(ended).await["status"], "released");
    assert!(!exists(&engine, &name).await);
    app.stop().await;
}

/// Runs `script` with busybox `sh` in a container; its output, stdout then stderr.
fn sh(engine: &Engine, container: &str, script: &str) -> (bool, String, String) {
    let out = engine.cli(&["exec", container, "sh", "-c", script]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The network the container is on, and its address there.
async fn network_and_address(engine: &Engine, container: &str) -> (String, String) {
    let inspected = engine
        .client()
        .await
        .inspect_container(container, None)
        .await
        .unwrap();
    let networks = inspected.network_settings.unwrap().networks.unwrap();
    let [(network, endpoint)] = Vec::from_iter(networks)
        .try_into()
        .unwrap_or_else(|n| panic!("{container} is not on one network: {n:?}"));
    let address = endpoint.ip_address.unwrap_or_default();
    assert!(
        !address.is_empty(),
        "{container} has no address on {network}"
    );
    (network, address)
}

/// Whether the engine knows a network of that name.
async fn network_exists(engine: &Engine, name: &str) -> bool {
    engine
        .client()
        .await
        .inspect_network(name, None)
        .await
        .is_ok()
}

async fn a_container_is_confined_and_on_a_network_of_its_own_that_release_removes(
    engine: Arc<Engine>,
) {
    // Arrange: the defaults, with a disk limit asked for whatever the storage driver
    let docker = engine.client().await;
    let manager = Container::new(ContainerSettings {
        pids_limit: 48,
        disk_limit: Some(1 << 30),
        ..own_network(&engine)
    })
    .unwrap();
    let booking = booking(&id(&engine, "confined"), &[]);
    let name = container_name(&booking.event_id);

    // Act
    let outcome = manager.configure(&booking).await.unwrap();

    // Assert: no capability beyond the documented ones, in the engine's words and in
    // the kernel's
    let container = docker.inspect_container(&name, None).await.unwrap();
    let host = container.host_config.clone().unwrap();
    let documented: Vec<String> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    match engine.kind {
        Kind::Dockerd => {
            assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
            assert_eq!(host.cap_add.as_deref(), Some(&documented[..]));
        }
        // Podman reports the capabilities dropped from its own default set.
        Kind::Podman => {
            let dropped = host.cap_drop.clone().unwrap_or_default();
            for capability in ["DAC_OVERRIDE", "FOWNER", "FSETID", "SETPCAP", "SETFCAP"] {
                assert!(
                    dropped.iter().any(|d| d.ends_with(capability)),
                    "{dropped:?}"
                );
            }
            assert!(host.cap_add.unwrap_or_default().is_empty());
        }
    }
    let expected: u64 = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| 1 << CAPABILITIES.iter().position(|k| k == c).unwrap())
        .sum();
    let (_, status, _) = sh(&engine, &name, "cat /proc/1/status");
    for set in ["CapEff", "CapBnd"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_eq!(mask, expected, "{line}");
    }
    assert_eq!(host.pids_limit, Some(48));
    let security = host.security_opt.clone().unwrap_or_default();
    assert!(
        security
            .iter()
            .any(|o| o == "no-new-privileges" || o == "no-new-privileges:true")
    );
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");

    // Assert: the disk limit where the storage driver can, else a container without it
    let info = docker.info().await.unwrap();
    let backing = info
        .driver_status
        .unwrap_or_default()
        .into_iter()
        .find(|p| p[0] == "Backing Filesystem")
        .map(|p| p[1].clone());
    let storage = host.storage_opt.unwrap_or_default();
    if backing.as_deref() == Some("xfs") {
        assert_eq!(storage.get("size").map(String::as_str), Some("1073741824"));
    } else {
        assert!(!storage.contains_key("size"), "{storage:?} on {backing:?}");
    }

    // Assert: on the booking's own network, labelled, internal, with no one else on it
    let networks = container.network_settings.unwrap().networks.unwrap();
    assert_eq!(networks.keys().collect::<Vec<_>>(), [&name]);
    let network = docker.inspect_network(&name, None).await.unwrap();
    assert_eq!(network.labels.unwrap()[BOOKING_LABEL], booking.event_id);
    assert_eq!(network.internal, Some(true));
    let members = network.containers.unwrap_or_default();
    assert!(members.len() <= 1, "{members:?}");
    let (_, address) = network_and_address(&engine, &name).await;
    assert!(
        outcome.message.contains(&format!("Address: {address}.")),
        "{}",
        outcome.message
    );

    // Act: released after the operator turned per-booking networks off
    let changed = Container::new(settings(&engine)).unwrap();
    changed.release(&booking).await.unwrap();

    // Assert: container and network gone; a second release finds nothing to do
    assert!(!exists(&engine, &name).await);
    assert!(!network_exists(&engine, &name).await);
    let again = manager.release(&booking).await.unwrap();
    assert_eq!(again.message, format!("Your container {name} is gone."));
}

async fn one_bookings_container_cannot_reach_anothers(engine: Arc<Engine>) {
    // Arrange: two bookings; the second serves HTTP on port 8080
    let manager = Container::new(own_network(&engine)).unwrap();
    let attacker = booking(&id(&engine, "reach-from"), &[]);
    let target = booking(&id(&engine, "reach-to"), &[]);
    let (from, to) = (
        container_name(&attacker.event_id),
        container_name(&target.event_id),
    );
    manager.configure(&attacker).await.unwrap();
    manager.configure(&target).await.unwrap();
    let served = engine.cli(&["exec", "--detach", &to, "httpd", "-f", "-p", "8080"]);
    assert!(served.status.success(), "{served:?}");
    let (network, address) = network_and_address(&engine, &to).await;
    let connect = format!("echo | nc -w 2 {address} 8080");

    // Assert: the server answers to a container on its network (the test's own)
    let mut answered = false;
    for _ in 0..20 {
        let probe = engine.cli(&[
            "run",
            "--rm",
            "--network",
            &network,
            IMAGE,
            "sh",
            "-c",
            &connect,
        ]);
        answered = probe.status.success();
        if answered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        answered,
        "{to}'s server at {address} never answered on its network"
    );

    // Act: the other booking's user tries
    let (reached, out, err) = sh(&engine, &from, &connect);

    // Assert
    assert!(!reached, "{from} reached {to} at {address}: {out} {err}");
    manager.release(&attacker).await.unwrap();
    manager.release(&target).await.unwrap();
}

async fn spawning_processes_stops_at_the_pids_limit(engine: Arc<Engine>) {
    // Arrange
    let manager = Container::new(ContainerSettings {
        pids_limit: 16,
        ..settings(&engine)
    })
    .unwrap();
    let booking = booking(&id(&engine, "pids"), &[]);
    let name = container_name(&booking.event_id);
    manager.configure(&booking).await.unwrap();

    // Act: the user starts processes in a loop, as a fork bomb would
    let (finished, out, err) = sh(
        &engine,
        &name,
        "i=0; while [ $i -lt 64 ]; do sleep 60 & i=$((i+1)); done; echo started $i",
    );

    // Assert: the kernel refused the processes beyond the limit
    assert!(!finished && !out.contains("started 64"), "{out} {err}");
    assert!(err.contains("can't fork"), "{err}");
    manager.release(&booking).await.unwrap();
    assert!(!exists(&engine, &name).await);
}

async fn engine_failures_reach_the_user_without_the_engines_words(engine: Arc<Engine>) {
    // Arrange: an offered image the engine does not have, and a shared network that
    // does not exist
    let missing = "localhost/missing:latest";
    let offers_missing = Container::new(ContainerSettings {
        images: vec![IMAGE.into(), missing.into()],
        ..own_network(&engine)
    })
    .unwrap();
    let no_network = Container::new(ContainerSettings {
        network: Network::Mode("no-such-network".into()),
        ..settings(&engine)
    })
    .unwrap();
    let wants_missing = booking(&id(&engine, "engine-words"), &[("image", missing)]);
    let name = container_name(&wants_missing.event_id);
    let engine_words = ["no such", "not known", "not found", "No such", "image not"];

    // Act
    let error = offers_missing.configure(&wants_missing).await.unwrap_err();

    // Assert: the user is told what is missing, in words of ours
    assert!(!error.is_transient(), "{error}");
    assert_eq!(
        error.message(),
        "the image localhost/missing:latest is not on the container engine; an operator must load it"
    );
    let source = std::error::Error::source(&error).map(ToString::to_string);
    assert!(
        source.is_some_and(|s| s.contains("missing")),
        "the engine's words are kept for the log"
    );
    offers_missing.release(&wants_missing).await.unwrap();
    assert!(!network_exists(&engine, &name).await);

    // Act
    let error = no_network
        .configure(&booking(&id(&engine, "engine-words-2"), &[]))
        .await
        .unwrap_err();

    // Assert
    assert!(
        error.message().starts_with("the container engine ")
            && engine_words.iter().all(|w| !error.message().contains(w))
            && !error.message().contains("no-such-network"),
        "{error}"
    );
}

#[tokio::test]
async fn an_engine_over_tcp_is_spoken_to_with_tls_from_docker_cert_path() {
    // Arrange: a dockerd that answers only TLS clients with its certificate on loopback
    let engine = Engine::dockerd_over_tls();
    let tls = engine.tls.as_ref().unwrap();
    let vars = [
        ("DOCKER_HOST", tls.host.as_str()),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", tls.cert_path.to_str().unwrap()),
        ("CONTAINER_IMAGES", IMAGE),
        // In the host's network namespace: no bridge of the test's making there.
        ("CONTAINER_NETWORK", "none"),
    ];
    let settings =
        ContainerSettings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .unwrap();
    let manager = Container::new(settings.clone()).unwrap();
    let plain = Container::new(ContainerSettings {
        tls_cert_path: None,
        ..settings
    })
    .unwrap();
    let booking = booking("tls", &[]);
    let name = container_name(&booking.event_id);

    // Act
    manager.ready().await.unwrap();
    manager.configure(&booking).await.unwrap();

    // Assert: made through TLS (the engine refuses anything else on that port), with the
    // default disk limit dropped where the storage driver cannot enforce it
    assert!(exists(&engine, &name).await);
    assert!(
        plain.ready().await.is_err(),
        "the engine answered plain HTTP"
    );
    manager.release(&booking).await.unwrap();
    assert!(!exists(&engine, &name).await);
}

#[tokio::test]
async fn an_unreachable_engine_is_a_transient_error() {
    // Arrange
    let manager = Container::new(ContainerSettings {
        docker_host: Some("unix:///nonexistent/docker.sock".into()),
        tls_cert_path: None,
        images: vec![IMAGE.into()],
        default_image: IMAGE.into(),
        max_memory: 256 * MIB,
        max_cpus: 1.0,
        network: Network::PerBooking { internal: true },
        capabilities: Vec::new(),
        pids_limit: 256,
        disk_limit: None,
        stop_timeout: Duration::from_secs(1),
    })
    .unwrap();

    // Act
    let ready = manager.ready().await.unwrap_err();
    let configure = manager.configure(&booking("1", &[])).await.unwrap_err();

    // Assert
    for error in [ready, configure] {
        assert!(error.is_transient());
        assert!(
            error
                .message()
                .starts_with("the container engine is not reachable"),
            "{error}"
        );
    }
}

#[test]
fn container_names_are_valid_and_distinct_for_any_booking_id() {
    let valid = |name: &str| {
        name.len() >= 2
            && name.chars().next().unwrap().is_ascii_alphanumeric()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    };
    let ids = [
        "103",
        "a/b",
        "ab",
        "",
        "ünïcode",
        "../../etc",
        &"x".repeat(500),
    ];
    let names: Vec<String> = ids.iter().map(|id| container_name(id)).collect();
    assert_eq!(names[0], "booking-103");
    for name in &names {
        assert!(valid(name) && name.len() <= 128, "{name}");
    }
    let distinct: std::collections::HashSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
}

#[test]
fn settings_errors_name_the_variable() {
    let read = |pairs: &[(&str, &str)]| {
        ContainerSettings::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    };
    let ok = read(&[("CONTAINER_IMAGES", "a:1, b:2")]).unwrap();
    assert_eq!(ok.images, ["a:1", "b:2"]);
    assert_eq!(ok.default_image, "a:1");
    assert_eq!(ok.max_memory, 512 * MIB);

    for (name, vars) in [
        ("CONTAINER_IMAGES", vec![]),
        (
            "CONTAINER_DEFAULT_IMAGE",
            vec![("CONTAINER_IMAGES", "a"), ("CONTAINER_DEFAULT_IMAGE", "b")],
        ),
        (
            "CONTAINER_MAX_MEMORY",
            vec![("CONTAINER_IMAGES", "a"), ("CONTAINER_MAX_MEMORY", "huge")],
        ),
        (
            "CONTAINER_MAX_CPUS",
            vec![("CONTAINER_IMAGES", "a"), ("CONTAINER_MAX_CPUS", "0")],
        ),
        (
            "CONTAINER_STOP_TIMEOUT",
            vec![
                ("CONTAINER_IMAGES", "a"),
                ("CONTAINER_STOP_TIMEOUT", "10 parsecs"),
            ],
        ),
    ] {
        let error = read(&vars).unwrap_err();
        assert!(format!("{error:#}").starts_with(name), "{name}: {error:#}");
    }
}

#[test]
fn settings_that_would_hand_users_the_host_are_refused_at_start_up() {
    let read = |pairs: &[(&str, &str)]| {
        let mut vars = vec![("CONTAINER_IMAGES".to_owned(), IMAGE.to_owned())];
        vars.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ContainerSettings::from_vars(vars)
    };
    let defaults = read(&[]).unwrap();
    assert_eq!(defaults.network, Network::PerBooking { internal: true });
    assert_eq!(defaults.pids_limit, 256);
    assert_eq!(defaults.capabilities, DEFAULT_CAPABILITIES);
    assert_eq!(defaults.disk_limit, Some(10 << 30));

    let certs = tempfile::tempdir().unwrap();
    let cert_path = certs.path().to_str().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let empty_path = empty.path().to_str().unwrap();
    for name in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::write(certs.path().join(name), "").unwrap();
    }
    fn tls<'a>(host: &'a str, cert_path: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("DOCKER_HOST", host),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", cert_path),
        ]
    }

    for (refused, vars) in [
        ("CONTAINER_NETWORK", vec![("CONTAINER_NETWORK", "host")]),
        ("CONTAINER_NETWORK", vec![("CONTAINER_NETWORK", "HOST")]),
        (
            "CONTAINER_NETWORK",
            vec![("CONTAINER_NETWORK", "container:booking-1")],
        ),
        (
            "CONTAINER_NETWORK",
            vec![("CONTAINER_NETWORK", "Container:booking-1")],
        ),
        (
            "CONTAINER_NETWORK",
            vec![("CONTAINER_NETWORK", "ns:/proc/1/ns/net")],
        ),
        ("DOCKER_HOST", vec![("DOCKER_HOST", "tcp://10.1.2.3:2375")]),
        (
            "DOCKER_HOST",
            vec![("DOCKER_HOST", "tcp://docker.example.org:2375")],
        ),
        (
            "DOCKER_HOST",
            vec![("DOCKER_HOST", "tcp://127.0.0.1.example.org:2375")],
        ),
        (
            "DOCKER_HOST",
            vec![("DOCKER_HOST", "http://192.0.2.7:2375")],
        ),
        (
            "DOCKER_HOST",
            vec![("DOCKER_HOST", "https://127.0.0.1:2376")],
        ),
        ("DOCKER_HOST", vec![("DOCKER_HOST", "ssh://me@host")]),
        ("DOCKER_CERT_PATH", tls("tcp://10.1.2.3:2376", empty_path)),
        (
            "CONTAINER_CAPABILITIES",
            vec![("CONTAINER_CAPABILITIES", "CHOWN,SYS_ADMN")],
        ),
        ("CONTAINER_PIDS_LIMIT", vec![("CONTAINER_PIDS_LIMIT", "0")]),
        ("CONTAINER_PIDS_LIMIT", vec![("CONTAINER_PIDS_LIMIT", "-1")]),
        (
            "CONTAINER_DISK_LIMIT",
            vec![("CONTAINER_DISK_LIMIT", "lots")],
        ),
        (
            "CONTAINER_NETWORK_INTERNAL",
            vec![("CONTAINER_NETWORK_INTERNAL", "maybe")],
        ),
    ] {
        let error = read(&vars).unwrap_err();
        assert!(
            format!("{error:#}").starts_with(refused),
            "{vars:?}: {error:#}"
        );
    }

    for vars in [
        vec![("DOCKER_HOST", "tcp://127.0.0.1:2375")],
        vec![("DOCKER_HOST", "tcp://localhost:2375")],
        vec![("DOCKER_HOST", "tcp://[::1]:2375")],
        vec![("DOCKER_HOST", "unix:///run/podman/podman.sock")],
        vec![("CONTAINER_NETWORK", "none")],
        vec![("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", empty_path)],
        vec![("CONTAINER_NETWORK", "lab-network")],
        vec![
            ("CONTAINER_CAPABILITIES", "none"),
            ("CONTAINER_DISK_LIMIT", "none"),
        ],
        tls("tcp://10.1.2.3:2376", cert_path),
        tls("https://docker.example.org:2376", cert_path),
    ] {
        read(&vars).unwrap_or_else(|e| panic!("{vars:?}: {e:#}"));
    }

    // Settings built in code are checked too.
    let built = ContainerSettings {
        network: Network::Mode("host".into()),
        ..defaults.clone()
    };
    let error = Container::new(built)
        .err()
        .expect("host networking is refused");
    assert!(
        format!("{error:#}").contains("CONTAINER_NETWORK"),
        "{error:#}"
    );
    let built = ContainerSettings {
        docker_host: Some("tcp://10.1.2.3:2375".into()),
        ..defaults
    };
    assert!(Container::new(built).is_err());
}
