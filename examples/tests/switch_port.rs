//! `examples/switch_port.rs` against a real Open vSwitch database, read back with
//! `ovs-vsctl` as an operator would.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use webhook::contract::reservation::{Parameters, Reservation, Resource, User};
use webhook::manager::ResourceManager;

use crate::backends::ovs::Ovs;
use crate::helpers::{fixture, json, spawn_app_with};

#[allow(dead_code)]
#[path = "../switch_port.rs"]
mod example;

use example::{
    BOOKING_KEY, PREVIOUS_KEY, PREVIOUS_MODE_KEY, PREVIOUS_TRUNKS_KEY, SwitchPort,
    SwitchPortSettings,
};

/// Settings for `address`: every port and every VLAN offered, exclusive, no default VLAN.
fn settings(address: &str) -> SwitchPortSettings {
    SwitchPortSettings {
        address: address.parse().unwrap(),
        ports: vec!["*".into()],
        vlans: 1..=4094,
        exclusive: true,
        default_vlan: None,
        timeout: Duration::from_secs(5),
    }
}

fn manager(ovs: &Ovs) -> SwitchPort {
    SwitchPort::new(settings(&ovs.unix_address()))
}

/// A booking `id` of `port` asking for `vlan_id`.
fn booking(id: &str, port: &str, vlan_id: &str) -> Reservation {
    Reservation {
        event_id: id.into(),
        user: User {
            id: "user-1".into(),
            username: Some("alice".into()),
            email: None,
            ssh_public_key: None,
        },
        resource: Resource {
            id: 42,
            name: port.into(),
            kind: "Switch Port".into(),
            specs: None,
            location: None,
        },
        site: None,
        title: None,
        description: None,
        start: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
        parameters: Parameters::from_pairs([("vlan_id", vlan_id)]),
    }
}

#[tokio::test]
async fn a_booking_puts_the_port_on_its_vlan_and_release_restores_the_previous_one() {
    // Arrange
    let ovs = Ovs::start();
    ovs.add_port("p1", Some(10));
    let manager = manager(&ovs);
    let booking = booking("101", "p1", "100");

    // Act: configure
    let outcome = manager.configure(&booking).await.unwrap();

    // Assert
    assert_eq!(ovs.tag("p1"), Some(100));
    assert_eq!(ovs.external_id("p1", BOOKING_KEY).as_deref(), Some("101"));
    assert_eq!(ovs.external_id("p1", PREVIOUS_KEY).as_deref(), Some("10"));
    assert_eq!(
        outcome.message,
        "Port p1 is an access port on VLAN 100 until 2026-11-23 12:00 UTC."
    );

    // Act: configure again
    manager.configure(&booking).await.unwrap();

    // Assert: still on VLAN 100, and VLAN 10 is still what it goes back to
    assert_eq!(ovs.tag("p1"), Some(100));
    assert_eq!(ovs.external_id("p1", PREVIOUS_KEY).as_deref(), Some("10"));

    // Act: release
    let outcome = manager.release(&booking).await.unwrap();

    // Assert
    assert_eq!(ovs.tag("p1"), Some(10));
    assert_eq!(ovs.external_id("p1", BOOKING_KEY), None);
    assert_eq!(ovs.external_id("p1", PREVIOUS_KEY), None);
    assert_eq!(outcome.message, "Port p1 is back on VLAN 10.");

    // Act: release again
    let outcome = manager.release(&booking).await.unwrap();

    // Assert
    assert_eq!(ovs.tag("p1"), Some(10));
    assert!(
        outcome.message.contains("nothing to undo"),
        "{}",
        outcome.message
    );
}

#[tokio::test]
async fn a_port_that_had_no_vlan_is_left_untagged_or_on_the_default_vlan_after_release() {
    // Arrange
    let ovs = Ovs::start();
    ovs.add_port("p1", None);
    ovs.add_port("p2", None);
    let plain = manager(&ovs);
    let with_default = SwitchPort::new(SwitchPortSettings {
        default_vlan: Some(1),
        ..settings(&ovs.unix_address())
    });

    // Act
    plain.configure(&booking("1", "p1", "200")).await.unwrap();
    with_default
        .configure(&booking("2", "p2", "300"))
        .await
        .unwrap();
    assert_eq!(ovs.external_id("p1", PREVIOUS_KEY).as_deref(), Some("none"));
    let cleared = plain.release(&booking("1", "p1", "200")).await.unwrap();
    let defaulted = with_default
        .release(&booking("2", "p2", "300"))
        .await
        .unwrap();

    // Assert
    assert_eq!(ovs.tag("p1"), None);
    assert_eq!(cleared.message, "Port p1 no longer has an access VLAN.");
    assert_eq!(ovs.tag("p2"), Some(1));
    assert_eq!(defaulted.message, "Port p2 is back on VLAN 1.");
}

#[tokio::test]
async fn vlan_ids_that_are_not_offered_are_refused_and_change_nothing() {
    // Arrange
    let ovs = Ovs::start();
    ovs.add_port("p1", Some(10));
    let manager = SwitchPort::new(SwitchPortSettings {
        vlans: 100..=199,
        ..settings(&ovs.unix_address())
    });
    let cases = [
        (
            "abc",
            "\"abc\" is not a VLAN id: give a whole number from 1 to 4094",
        ),
        ("0", "\"0\" is not a VLAN id"),
        ("4095", "\"4095\" is not a VLAN id"),
        ("1.5", "\"1.5\" is not a VLAN id"),
        (
            "250",
            "VLAN 250 is not offered here: choose one from 100 to 199",
        ),
    ];

    for (vlan_id, expected) in cases {
        // Act
        let error = manager
            .configure(&booking("7", "p1", vlan_id))
            .await
            .unwrap_err();

        // Assert
        assert!(!error.is_transient(), "{vlan_id}: {error}");
        let message = error.message();
        assert!(
            message.starts_with("custom parameter vlan_id: "),
            "{message}"
        );
        assert!(message.contains(expected), "{vlan_id}: {message}");
        assert_eq!(ovs.tag("p1"), Some(10), "{vlan_id} changed the port");
        assert_eq!(ovs.external_id("p1", BOOKING_KEY), None);
    }

    // Act: no vlan_id at all
    let mut missing = booking("7", "p1", "100");
    missing.parameters = Parameters::default();
    let error = manager.configure(&missing).await.unwrap_err();

    // Assert
    assert!(error.message().contains("vlan_id: is missing"), "{error}");
    assert_eq!(ovs.tag("p1"), Some(10));
}

#[tokio::test]
async fn a_vlan_any_other_port_carries_is_refused_only_when_vlans_are_exclusive() {
    // Arrange: an unbooked uplink on VLAN 100, an unbooked trunk carrying 300 and 301
    let ovs = Ovs::start();
    ovs.add_port("p1", Some(10));
    ovs.add_port("p2", Some(20));
    ovs.add_port("uplink", Some(100));
    ovs.add_port("trunk", None);
    ovs.vsctl(&["set", "port", "trunk", "trunks=300,301", "vlan_mode=trunk"]);
    let exclusive = manager(&ovs);

    for (vlan, user) in [("100", "on this switch"), ("301", "on this switch")] {
        // Act
        let error = exclusive
            .configure(&booking("1", "p1", vlan))
            .await
            .unwrap_err();

        // Assert: refused, p1 untouched
        assert!(!error.is_transient(), "{vlan}: {error}");
        assert_eq!(
            error.message(),
            format!("custom parameter vlan_id: VLAN {vlan} is in use {user}: choose another VLAN")
        );
        assert_eq!(ovs.tag("p1"), Some(10));
        assert_eq!(ovs.external_id("p1", BOOKING_KEY), None);
    }

    // Act: a free VLAN for booking 1; then booking 2 asks for it, and for the VLAN p1 gets
    // back when booking 1 ends
    exclusive
        .configure(&booking("1", "p1", "200"))
        .await
        .unwrap();
    let on_booked = exclusive
        .configure(&booking("2", "p2", "200"))
        .await
        .unwrap_err();
    let coming_back = exclusive
        .configure(&booking("2", "p2", "10"))
        .await
        .unwrap_err();

    // Assert
    for error in [on_booked, coming_back] {
        assert!(
            error
                .message()
                .ends_with("is in use by another booking: choose another VLAN"),
            "{error}"
        );
    }
    assert_eq!(ovs.tag("p2"), Some(20));
    assert_eq!(ovs.external_id("p2", BOOKING_KEY), None);

    // Act: a manager that shares VLANs
    let shared = SwitchPort::new(SwitchPortSettings {
        exclusive: false,
        ..settings(&ovs.unix_address())
    });
    shared.configure(&booking("2", "p2", "100")).await.unwrap();

    // Assert
    assert_eq!(ovs.tag("p2"), Some(100));
}

#[tokio::test]
async fn a_trunk_port_is_an_access_port_during_the_booking_and_exactly_the_trunk_again_after() {
    // Arrange: with a default VLAN, which a restored trunk must not get
    let ovs = Ovs::start();
    ovs.add_port("t1", None);
    ovs.vsctl(&["set", "port", "t1", "trunks=10,20", "vlan_mode=trunk"]);
    let manager = SwitchPort::new(SwitchPortSettings {
        default_vlan: Some(1),
        ..settings(&ovs.unix_address())
    });
    let booking = booking("1", "t1", "100");

    // Act
    manager.configure(&booking).await.unwrap();

    // Assert: only the user's VLAN, untagged, reaches the port
    assert_eq!(ovs.tag("t1"), Some(100));
    assert_eq!(ovs.column("t1", "vlan_mode"), "access");
    assert_eq!(ovs.column("t1", "trunks"), "[]");
    assert_eq!(ovs.external_id("t1", PREVIOUS_KEY).as_deref(), Some("none"));
    assert_eq!(
        ovs.external_id("t1", PREVIOUS_MODE_KEY).as_deref(),
        Some("trunk")
    );
    assert_eq!(
        ovs.external_id("t1", PREVIOUS_TRUNKS_KEY).as_deref(),
        Some("10,20")
    );

    // Act: configure again, then release
    manager.configure(&booking).await.unwrap();
    let released = manager.release(&booking).await.unwrap();

    // Assert
    assert_eq!(ovs.tag("t1"), None);
    assert_eq!(ovs.column("t1", "vlan_mode"), "trunk");
    assert_eq!(ovs.column("t1", "trunks"), "[10, 20]");
    assert_eq!(ovs.column("t1", "external_ids"), "{}");
    assert_eq!(released.message, "Port t1 is back to trunking VLANs 10,20.");
}

#[tokio::test]
async fn tags_0_and_4095_are_restored_as_they_were() {
    // Arrange: tags the schema allows outside 802.1Q's 1-4094
    let ovs = Ovs::start();
    ovs.add_port("p0", Some(0));
    ovs.add_port("p4095", Some(4095));
    let manager = SwitchPort::new(SwitchPortSettings {
        default_vlan: Some(1),
        ..settings(&ovs.unix_address())
    });

    for (port, tag) in [("p0", 0), ("p4095", 4095)] {
        let booking = booking(port, port, "100");

        // Act
        manager.configure(&booking).await.unwrap();
        let released = manager.release(&booking).await.unwrap();

        // Assert: not taken for an untagged port, which would get the default VLAN
        assert_eq!(ovs.tag(port), Some(tag));
        assert_eq!(
            released.message,
            format!("Port {port} is back on VLAN {tag}.")
        );
    }
}

#[tokio::test]
async fn a_port_configured_by_a_version_that_kept_only_the_tag_is_still_released() {
    // Arrange: a port as that version left it, with a trunk it did not touch
    let ovs = Ovs::start();
    ovs.add_port("p1", Some(100));
    ovs.vsctl(&[
        "set",
        "port",
        "p1",
        "vlan_mode=native-untagged",
        "trunks=30",
        &format!("external_ids:\"{BOOKING_KEY}\"=1"),
        &format!("external_ids:\"{PREVIOUS_KEY}\"=10"),
    ]);

    // Act
    manager(&ovs)
        .release(&booking("1", "p1", "100"))
        .await
        .unwrap();

    // Assert
    assert_eq!(ovs.tag("p1"), Some(10));
    assert_eq!(ovs.column("p1", "vlan_mode"), "native-untagged");
    assert_eq!(ovs.column("p1", "trunks"), "[30]");
    assert_eq!(ovs.column("p1", "external_ids"), "{}");
}

#[tokio::test]
async fn a_port_held_by_another_booking_is_refused() {
    // Arrange
    let ovs = Ovs::start();
    ovs.add_port("p1", Some(10));
    let manager = manager(&ovs);
    manager.configure(&booking("1", "p1", "100")).await.unwrap();

    // Act
    let error = manager
        .configure(&booking("2", "p1", "200"))
        .await
        .unwrap_err();
    let released = manager.release(&booking("2", "p1", "200")).await.unwrap();

    // Assert: neither the configure nor the release of booking 2 touched booking 1's port;
    // the refusal is worth retrying, as booking 1's END may only be late
    assert!(error.is_transient(), "{error}");
    assert!(
        error
            .message()
            .contains("port p1 is still held by another booking"),
        "{error}"
    );
    assert!(released.message.contains("nothing to undo"));
    assert_eq!(ovs.tag("p1"), Some(100));
    assert_eq!(ovs.external_id("p1", BOOKING_KEY).as_deref(), Some("1"));
}

#[tokio::test]
async fn two_bookings_racing_for_one_vlan_on_two_ports_let_exactly_one_through() {
    // Arrange
    let ovs = Ovs::start();
    ovs.add_port("p1", None);
    ovs.add_port("p2", None);
    let manager = manager(&ovs);
    let (a, b) = (booking("1", "p1", "300"), booking("2", "p2", "300"));

    // Act
    let (first, second) = tokio::join!(manager.configure(&a), manager.configure(&b));

    // Assert
    assert!(first.is_ok() != second.is_ok(), "{first:?} / {second:?}");
    let tags = [ovs.tag("p1"), ovs.tag("p2")];
    assert_eq!(
        tags.iter().filter(|t| **t == Some(300)).count(),
        1,
        "{tags:?}"
    );
}

#[tokio::test]
async fn a_release_by_a_restarted_manager_restores_the_vlan_remembered_by_the_switch() {
    // Arrange: configured by one manager, which then goes away
    let ovs = Ovs::start();
    ovs.add_port("p1", Some(10));
    manager(&ovs)
        .configure(&booking("1", "p1", "100"))
        .await
        .unwrap();

    // Act
    manager(&ovs)
        .release(&booking("1", "p1", "100"))
        .await
        .unwrap();

    // Assert
    assert_eq!(ovs.tag("p1"), Some(10));
}

#[tokio::test]
async fn a_port_ovs_ports_does_not_list_is_refused_and_left_as_it_was() {
    // Arrange
    let ovs = Ovs::start();
    ovs.add_port("uplink0", Some(1));
    ovs.add_port("lab-1", Some(10));
    ovs.add_port("sw1-port-3", None);
    let manager = SwitchPort::new(SwitchPortSettings {
        ports: vec!["lab-*".into(), "sw1-port-3".into()],
        ..settings(&ovs.unix_address())
    });

    // Act
    let refused = manager
        .configure(&booking("1", "uplink0", "100"))
        .await
        .unwrap_err();

    // Assert
    assert!(!refused.is_transient());
    assert_eq!(
        refused.message(),
        "port \"uplink0\" is not among the ports this webhook may change (OVS_PORTS)"
    );
    assert_eq!(ovs.tag("uplink0"), Some(1));
    assert_eq!(ovs.external_id("uplink0", BOOKING_KEY), None);

    // Act: a listed prefix and a listed name
    manager
        .configure(&booking("2", "lab-1", "100"))
        .await
        .unwrap();
    manager
        .configure(&booking("3", "sw1-port-3", "101"))
        .await
        .unwrap();

    // Assert
    assert_eq!(ovs.tag("lab-1"), Some(100));
    assert_eq!(ovs.tag("sw1-port-3"), Some(101));
}

#[tokio::test]
async fn an_unknown_port_is_a_permanent_error_naming_it() {
    // Arrange
    let ovs = Ovs::start();
    let manager = manager(&ovs);

    // Act
    let configure = manager
        .configure(&booking("1", "nope", "100"))
        .await
        .unwrap_err();
    let release = manager
        .release(&booking("1", "nope", "100"))
        .await
        .unwrap_err();

    // Assert
    for error in [configure, release] {
        assert!(!error.is_transient());
        assert_eq!(error.message(), "the switch has no port named \"nope\"");
    }
}

#[tokio::test]
async fn the_manager_works_over_tcp_and_is_not_ready_without_a_database() {
    // Arrange
    let ovs = Ovs::start();
    ovs.add_port("p1", None);
    let over_tcp = SwitchPort::new(settings(&ovs.tcp_address()));
    let nowhere = SwitchPort::new(settings("unix:/nonexistent/db.sock"));

    // Act
    let ready = over_tcp.ready().await;
    over_tcp.configure(&booking("1", "p1", "42")).await.unwrap();
    let not_ready = nowhere.ready().await.unwrap_err();
    let not_configured = nowhere
        .configure(&booking("1", "p1", "42"))
        .await
        .unwrap_err();

    // Assert
    assert!(ready.is_ok(), "{ready:?}");
    assert_eq!(ovs.tag("p1"), Some(42));
    for error in [not_ready, not_configured] {
        assert!(error.is_transient());
        assert_eq!(error.message(), "the switch database is not reachable");
    }
}

#[tokio::test]
async fn the_webhook_moves_the_fixture_port_to_vlan_100_on_start_and_back_on_end() {
    // Arrange: the fixture books sw1-port-3 with vlan_id 100
    let ovs = Ovs::start();
    ovs.add_port("sw1-port-3", Some(5));
    let settings = [
        ("RESOURCE_TYPE", "Switch Port"),
        ("PROCESSING_BUDGET", "5s"),
    ];
    let app = spawn_app_with(&settings, Arc::new(manager(&ovs))).await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    // Act
    let started = app.post_webhook(&fixture("event_start.json")).await;

    // Assert
    assert_eq!(started.status(), 200);
    assert_eq!(json(started).await["status"], "configured");
    assert_eq!(ovs.tag("sw1-port-3"), Some(100));

    // Act
    let ended = app.post_webhook(&fixture("event_end.json")).await;

    // Assert
    assert_eq!(ended.status(), 200);
    assert_eq!(json(ended).await["status"], "released");
    assert_eq!(ovs.tag("sw1-port-3"), Some(5));
    assert_eq!(ovs.external_id("sw1-port-3", BOOKING_KEY), None);
    app.stop().await;
}

#[tokio::test]
async fn a_start_that_comes_before_the_previous_bookings_late_end_succeeds_once_the_port_is_free() {
    // Arrange: booking 103 holds the port; booking 104 of the same port asks for VLAN 200
    let ovs = Ovs::start();
    ovs.add_port("sw1-port-3", Some(5));
    let settings = [
        ("RESOURCE_TYPE", "Switch Port"),
        ("RETRY_BACKOFF", "100ms"),
        ("MAX_ATTEMPTS", "8"),
    ];
    let app = spawn_app_with(&settings, Arc::new(manager(&ovs))).await;
    app.post_webhook(&fixture("event_start.json")).await;
    let first = app.settled("103", Duration::from_secs(10)).await;
    assert_eq!(first["state"], "active", "{first}");
    let next = crate::fixture_with(
        "event_start.json",
        &[
            ("eventId", serde_json::json!("104")),
            ("eventStart", serde_json::json!("2026-11-23T12:00:00Z")),
            ("eventEnd", serde_json::json!("2026-11-23T14:00:00Z")),
            (
                "customParameters",
                serde_json::json!("{\"vlan_id\":\"200\"}"),
            ),
        ],
    );

    // Act: 104's START, and once it has found the port held, 103's END
    let late_end = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, status) = app.status("104").await;
            if status["history"]
                .to_string()
                .contains("held by another booking")
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        app.post_webhook(&fixture("event_end.json")).await
    };
    let (started, ended) = tokio::join!(app.post_webhook(&next), late_end);

    // Assert
    assert!(started.status().is_success(), "{}", started.status());
    assert!(ended.status().is_success(), "{}", ended.status());
    let status = app.settled("104", Duration::from_secs(20)).await;
    assert_eq!(status["state"], "active", "{status}");
    assert_eq!(
        app.settled("103", Duration::from_secs(5)).await["state"],
        "released"
    );
    assert_eq!(ovs.tag("sw1-port-3"), Some(200));
    assert_eq!(
        ovs.external_id("sw1-port-3", BOOKING_KEY).as_deref(),
        Some("104")
    );
    assert_eq!(
        ovs.external_id("sw1-port-3", PREVIOUS_KEY).as_deref(),
        Some("5")
    );
    app.stop().await;
}

#[test]
fn settings_errors_name_the_variable() {
    const REQUIRED: [(&str, &str); 2] = [("OVS_PORTS", "lab-*"), ("OVS_VLAN_RANGE", "100-199")];
    let read = |pairs: &[(&str, &str)]| {
        let mut all: Vec<(String, String)> = REQUIRED
            .iter()
            .filter(|(k, _)| pairs.iter().all(|(name, _)| name != k))
            .chain(pairs)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.retain(|(_, v)| v != "<unset>");
        SwitchPortSettings::from_vars(all)
    };
    let defaults = read(&[]).unwrap();
    assert_eq!(defaults.vlans, 100..=199);
    assert_eq!(defaults.ports, ["lab-*"]);
    assert!(defaults.exclusive);
    assert_eq!(
        defaults.address.to_string(),
        "unix:/var/run/openvswitch/db.sock"
    );
    let listed = read(&[("OVS_PORTS", " sw1-port-*, lab-7 ,")]).unwrap();
    assert_eq!(listed.ports, ["sw1-port-*", "lab-7"]);

    for (name, fix) in [
        ("OVS_PORTS", "list the ports bookings may change"),
        ("OVS_VLAN_RANGE", "give the VLANs users may ask for"),
    ] {
        let error = read(&[(name, "<unset>")]).unwrap_err();
        assert_eq!(
            format!("{error:#}").split_once(": ").map(|(head, _)| head),
            Some(format!("{name} is not set").as_str()),
            "{error:#}"
        );
        assert!(format!("{error:#}").contains(fix), "{error:#}");
    }

    for (name, value) in [
        ("OVS_PORTS", "sw*-port"),
        ("OVS_PORTS", "lab-**"),
        ("OVS_PORTS", " , "),
        ("OVS_VLAN_RANGE", "200-100"),
        ("OVS_VLAN_RANGE", "0-10"),
        ("OVS_DEFAULT_VLAN", "4095"),
        ("OVS_EXCLUSIVE_VLANS", "yes"),
        ("OVSDB_ADDRESS", "ssl:1.2.3.4:6640"),
        ("OVSDB_TIMEOUT", "soon"),
    ] {
        let error = read(&[(name, value)]).unwrap_err();
        assert!(format!("{error:#}").starts_with(name), "{name}: {error:#}");
    }
}
