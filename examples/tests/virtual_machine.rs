//! `examples/virtual_machine.rs` against a real libvirtd and QEMU, each test with a daemon
//! of its own (see `backends/libvirt.rs`), checked from outside: through a connection of
//! the test's own, `qemu-img`, and the seed's FAT image read back.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::Value;
use virt::connect::Connect;
use virt::domain::Domain;
use webhook::contract::reservation::{Parameters, Reservation, Resource, User};
use webhook::manager::ResourceManager;

use crate::backends::libvirt::{BASE_BYTES, Libvirt, POOL, run};
use crate::helpers::{json, spawn_app_with};

#[allow(dead_code)]
#[path = "../virtual_machine.rs"]
mod example;

use example::{
    BaseFormat, Labels, METADATA_URI, SEED_BYTES, SEED_LABEL, Settings, VirtualMachine, VmNetwork,
    overlay_name, seed_name, vm_name,
};

const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk0bWlkZGxlT2ZUaGVSb2FkRXhhbXBsZUtleTEy alice@laptop";
/// The fixtures' user.
const FIXTURE_USER: &str = "5f0c1e2a-8b7d-4c3e-9a61-2d4f6b8e0a13";
const RESOURCE_TYPE: &str = "Virtual Machine";

/// The daemon's pool and base image, emulated domains, user-mode networking, at most two
/// vCPUs and 256 MiB.
fn settings(libvirt: &Libvirt) -> Settings {
    Settings {
        uri: libvirt.uri.clone(),
        base_image: libvirt.base_image.display().to_string(),
        base_format: BaseFormat::Qcow2,
        pool: POOL.into(),
        disk_bytes: BASE_BYTES,
        domain_type: "qemu".into(),
        network: VmNetwork::User,
        default_vcpus: 1,
        max_vcpus: 2,
        default_memory_mib: 64,
        max_memory_mib: 256,
        address_wait: Duration::from_secs(1),
        access: None,
        kernel: None,
    }
}

fn manager(libvirt: &Libvirt) -> VirtualMachine {
    VirtualMachine::new(settings(libvirt)).unwrap()
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
            name: "vm".into(),
            kind: RESOURCE_TYPE.into(),
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

fn domain(connection: &Connect, name: &str) -> Option<Domain> {
    connection.lookup_domain_by_name(name).ok()
}

/// The `file` of each disk of a domain, in order, as defined (the live XML adds their
/// backing chains).
fn disk_files(domain: &Domain) -> Vec<String> {
    let xml = domain.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).unwrap();
    xml.split("<source file='")
        .skip(1)
        .map(|rest| rest[..rest.find('\'').unwrap()].to_owned())
        .collect()
}

/// What `qemu-img` says of an image, read while QEMU holds it.
fn image_info(path: &str) -> Value {
    let out = run(Command::new("qemu-img").args(["info", "--output=json", "-U", path]));
    serde_json::from_str(&out).unwrap()
}

/// The files of a FAT image and its label.
fn seed_files(path: &str) -> (String, Vec<(String, String)>) {
    use std::io::Read as _;
    let bytes = std::fs::read(path).unwrap();
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(bytes), fatfs::FsOptions::new()).unwrap();
    let label = fs.volume_label();
    let mut files = Vec::new();
    for entry in fs.root_dir().iter() {
        let entry = entry.unwrap();
        if entry.is_file() {
            let mut text = String::new();
            entry.to_file().read_to_string(&mut text).unwrap();
            files.push((entry.file_name(), text));
        }
    }
    files.sort();
    (label, files)
}

/// The user data's cloud-config, as JSON.
fn cloud_config(files: &[(String, String)]) -> Value {
    let (_, text) = files.iter().find(|(name, _)| name == "user-data").unwrap();
    let body = text
        .strip_prefix("#cloud-config\n")
        .expect("a cloud-config");
    serde_json::from_str(body).unwrap()
}

fn metadata(domain: &Domain) -> Labels {
    example::labels(domain)
        .unwrap()
        .expect("the webhook's metadata")
}

/// The fixture START, END and UPDATED of booking 103, made bookings of a VM.
fn event(file: &str, parameters: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&crate::fixture_with(
        file,
        &[
            ("resourceType", RESOURCE_TYPE.into()),
            ("resourceName", "vm".into()),
            ("customParameters", parameters.into()),
        ],
    ))
    .unwrap();
    if body["data"].is_object() {
        body["data"]["resource"]["name"] = "vm".into();
        body["data"]["resource"]["type"]["name"] = RESOURCE_TYPE.into();
        body["data"]["customParameters"] = parameters.into();
    }
    serde_json::to_vec(&body).unwrap()
}

#[tokio::test]
async fn the_webhook_gives_a_booking_a_vm_on_start_updates_its_end_and_removes_it_on_end() {
    // Arrange
    let libvirt = Libvirt::start();
    let connection = libvirt.connect();
    let app = spawn_app_with(
        &[
            ("RESOURCE_TYPE", RESOURCE_TYPE),
            ("PROCESSING_BUDGET", "8s"),
        ],
        Arc::new(manager(&libvirt)),
    )
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let name = vm_name("103");
    let parameters = r#"{"vcpus":"2","memory":"96m"}"#;

    // Act: START
    let started = app
        .post_webhook(&event("event_start.json", parameters))
        .await;

    // Assert: running with the asked vCPUs and memory, labelled
    assert_eq!(started.status(), 200);
    let body = json(started).await;
    assert_eq!(body["status"], "configured", "{body}");
    let vm = domain(&connection, &name).expect("the booking's domain");
    assert!(vm.is_active().unwrap());
    let info = vm.info().unwrap();
    assert_eq!(info.nr_virt_cpu, 2);
    assert_eq!(info.max_mem, 96 * 1024);
    assert_eq!(
        metadata(&vm),
        Labels {
            booking: "103".into(),
            user: FIXTURE_USER.into(),
            end: "2026-11-23T12:00:00Z".into(),
        }
    );
    // Its disk is an overlay in the pool whose backing file is the base image.
    let disks = disk_files(&vm);
    let base = libvirt.base_image.display().to_string();
    let overlay = libvirt.pool_dir().join(overlay_name(&name));
    let seed = libvirt.pool_dir().join(seed_name(&name));
    assert_eq!(
        disks,
        [overlay.display().to_string(), seed.display().to_string()]
    );
    assert!(!disks.contains(&base));
    let info = image_info(&disks[0]);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["backing-filename"], base.as_str(), "{info}");
    assert_eq!(info["backing-filename-format"], "qcow2");
    // The base image itself is untouched: still no backing file, still empty.
    assert!(image_info(&base).get("backing-filename").is_none());
    // The seed is a FAT image labelled cidata that makes the user's account with their key.
    let (label, files) = seed_files(&disks[1]);
    assert_eq!(label, SEED_LABEL);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["meta-data", "user-data"]);
    let config = cloud_config(&files);
    assert_eq!(config["users"][0]["name"], "alice");
    assert_eq!(config["users"][0]["ssh_authorized_keys"][0], SSH_KEY);
    assert_eq!(config["users"][0]["lock_passwd"], true);
    let meta: Value = serde_json::from_str(&files[0].1).unwrap();
    assert_eq!(meta["instance-id"], name.as_str());

    // Act: the user extends the booking by two hours
    let updated = app
        .post_webhook(&event("event_updated_extended.json", parameters))
        .await;

    // Assert: the metadata holds the new end, live and in the persistent definition
    assert!(updated.status().is_success(), "{}", json(updated).await);
    let mut end = String::new();
    for _ in 0..200 {
        end = metadata(&vm).end;
        if end == "2026-11-23T14:00:00Z" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(end, "2026-11-23T14:00:00Z");
    let inactive = vm
        .metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(METADATA_URI),
            virt::sys::VIR_DOMAIN_AFFECT_CONFIG,
        )
        .unwrap();
    assert!(inactive.contains("2026-11-23T14:00:00Z"), "{inactive}");
    assert!(vm.is_active().unwrap(), "the VM kept running");

    // Act: END
    let ended = app.post_webhook(&event("event_end.json", parameters)).await;

    // Assert: nothing of the booking is left
    assert_eq!(ended.status(), 200);
    let body = json(ended).await;
    assert_eq!(body["status"], "released", "{body}");
    assert!(domain(&connection, &name).is_none(), "the domain is left");
    assert!(
        connection.list_all_domains(0).unwrap().is_empty(),
        "a domain is left"
    );
    assert_eq!(libvirt.pool_files(), Vec::<String>::new());
    let pool = connection.lookup_storage_pool_by_name(POOL).unwrap();
    pool.refresh(0).unwrap();
    assert_eq!(pool.list_volumes().unwrap(), Vec::<String>::new());
    assert!(libvirt.base_image.exists(), "the base image is kept");
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_configure_finds_the_running_vm_and_starts_a_stopped_one() {
    // Arrange
    let libvirt = Libvirt::start();
    let connection = libvirt.connect();
    let manager = manager(&libvirt);
    let booking = booking("201", &[("vcpus", "1"), ("memory", "64m")]);
    let name = vm_name("201");
    let first = manager.configure(&booking).await.unwrap();
    let uuid = domain(&connection, &name).unwrap().uuid_string().unwrap();
    assert_eq!(
        first.message,
        format!(
            "Your virtual machine {name} is running until 2026-11-23 12:00 UTC: 1 vCPU, \
             64 MiB of memory. Its address is not known yet. Log in as alice with your SSH key."
        )
    );

    // Act
    let again = manager.configure(&booking).await.unwrap();

    // Assert: the same VM, still running, and the same answer
    let vm = domain(&connection, &name).unwrap();
    assert_eq!(vm.uuid_string().unwrap(), uuid);
    assert!(vm.is_active().unwrap());
    assert_eq!(again.message, first.message);
    assert_eq!(connection.list_all_domains(0).unwrap().len(), 1);

    // Act: the VM was shut off (by its user, or the host's restart); configure again
    vm.destroy().unwrap();
    manager.configure(&booking).await.unwrap();

    // Assert: started again, with its disk
    let vm = domain(&connection, &name).unwrap();
    assert_eq!(vm.uuid_string().unwrap(), uuid);
    assert!(vm.is_active().unwrap());

    // Act: release twice
    let removed = manager.release(&booking).await.unwrap();
    let gone = manager.release(&booking).await.unwrap();

    // Assert
    assert_eq!(
        removed.message,
        format!("Your virtual machine {name} has been removed.")
    );
    assert_eq!(
        gone.message,
        format!("Your virtual machine {name} is gone.")
    );
    assert!(domain(&connection, &name).is_none());
    assert_eq!(libvirt.pool_files(), Vec::<String>::new());
}

#[tokio::test]
async fn bad_parameters_are_refused_with_the_reason_and_make_nothing() {
    // Arrange
    let libvirt = Libvirt::start();
    let connection = libvirt.connect();
    let manager = manager(&libvirt);
    let cases: &[(&str, &str, &str)] = &[
        ("vcpus", "0", "is outside what is offered: from 1 to 2"),
        ("vcpus", "3", "is outside what is offered: from 1 to 2"),
        ("vcpus", "two", "is not a whole number of vCPUs"),
        (
            "vcpus",
            "1</vcpu><vcpu>64",
            "is not a whole number of vCPUs",
        ),
        (
            "memory",
            "1g",
            "is outside what is offered: from 64m to 256m",
        ),
        (
            "memory",
            "32m",
            "is outside what is offered: from 64m to 256m",
        ),
        ("memory", "-1", "is not a size such as 512m or 2g"),
        ("memory", "64m'/><x", "is not a size such as 512m or 2g"),
        (
            "memory",
            "99999999999999999999g",
            "is not a size such as 512m or 2g",
        ),
    ];

    for (parameter, value, problem) in cases {
        // Act
        let error = manager
            .configure(&booking("301", &[(parameter, value)]))
            .await
            .unwrap_err();

        // Assert
        assert!(error.is_invalid_input(), "{parameter}={value}: {error}");
        assert!(!error.is_transient());
        assert!(
            error
                .message()
                .starts_with(&format!("custom parameter {parameter}: ")),
            "{error}"
        );
        assert!(error.message().contains(problem), "{error}");
    }
    // A key that is not one OpenSSH line is the user's to correct, too.
    let mut bad_key = booking("301", &[]);
    bad_key.user.ssh_public_key = Some("ssh-ed25519 AAAA\nssh-rsa BBBB".into());
    let error = manager.configure(&bad_key).await.unwrap_err();
    assert!(error.is_invalid_input(), "{error}");

    // Over the webhook, the sender is answered 2xx and the booking is refused.
    let app = spawn_app_with(
        &[
            ("RESOURCE_TYPE", RESOURCE_TYPE),
            ("PROCESSING_BUDGET", "8s"),
        ],
        Arc::new(manager),
    )
    .await;
    let started = app
        .post_webhook(&event("event_start.json", r#"{"vcpus":"16"}"#))
        .await;
    assert_eq!(started.status(), 200);
    let body = json(started).await;
    assert_eq!(body["status"], "refused", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("custom parameter vcpus"),
        "{body}"
    );
    app.stop().await;

    // Nothing was made.
    assert!(connection.list_all_domains(0).unwrap().is_empty());
    assert_eq!(libvirt.pool_files(), Vec::<String>::new());
}

#[tokio::test]
async fn release_of_an_unknown_booking_succeeds_and_a_half_made_one_is_cleaned_up() {
    // Arrange
    let libvirt = Libvirt::start();
    let connection = libvirt.connect();
    let manager = manager(&libvirt);

    // Act
    let outcome = manager.release(&booking("401", &[])).await.unwrap();

    // Assert
    assert_eq!(
        outcome.message,
        format!("Your virtual machine {} is gone.", vm_name("401"))
    );

    // Arrange: a configure cut short after it made the disks, before the domain
    let name = vm_name("402");
    let pool = connection.lookup_storage_pool_by_name(POOL).unwrap();
    overlay_volume(
        &pool,
        &name,
        Some(&libvirt.base_image.display().to_string()),
    );
    virt::storage_vol::StorageVol::create_xml(
        &pool,
        &format!(
            "<volume><name>{}</name><capacity unit='bytes'>{SEED_BYTES}</capacity>\
             <target><format type='raw'/></target></volume>",
            seed_name(&name)
        ),
        0,
    )
    .unwrap();

    // Act
    let outcome = manager.release(&booking("402", &[])).await.unwrap();

    // Assert
    assert_eq!(
        outcome.message,
        format!("Your virtual machine {name} has been removed.")
    );
    assert_eq!(libvirt.pool_files(), Vec::<String>::new());
}

#[tokio::test]
async fn a_vm_without_the_webhooks_metadata_survives_a_release_and_a_configure_that_name_it() {
    // Arrange: the operator's VM, named as booking 501's would be, with a disk in the pool
    // named as its overlay would be, and no metadata; and one labelled for another booking
    let libvirt = Libvirt::start();
    let connection = libvirt.connect();
    let manager = manager(&libvirt);
    let pool = connection.lookup_storage_pool_by_name(POOL).unwrap();
    let mut uuids = Vec::new();
    for (id, metadata) in [
        ("501", String::new()),
        (
            "502",
            format!(
                "<metadata><b:booking xmlns:b='{METADATA_URI}'><b:id>999</b:id>\
                 <b:user>x</b:user><b:end>2030-01-01T00:00:00Z</b:end></b:booking></metadata>"
            ),
        ),
    ] {
        let name = vm_name(id);
        let disk = overlay_volume(&pool, &name, None);
        let vm = connection
            .define_domain_xml(&format!(
                "<domain type='qemu'><name>{name}</name>{metadata}<memory unit='MiB'>64</memory>\
                 <vcpu>1</vcpu><os><type>hvm</type></os><devices>\
                 <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
                 <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
                disk.path().unwrap()
            ))
            .unwrap();
        vm.create().unwrap();
        uuids.push((id, name, vm.uuid_string().unwrap()));
    }

    for (id, name, uuid) in &uuids {
        // Act
        let released = manager.release(&booking(id, &[])).await.unwrap_err();
        let configured = manager.configure(&booking(id, &[])).await.unwrap_err();
        let extended = manager.end_changed(&booking(id, &[])).await.unwrap_err();

        // Assert: refused, and the VM and its disk are as they were
        for error in [&released, &configured, &extended] {
            assert!(!error.is_transient());
            assert_eq!(
                error.message(),
                format!(
                    "a virtual machine named {name} exists that is not this booking's; \
                     it was left as it is: ask the operator"
                )
            );
        }
        let vm = domain(&connection, name).expect("the VM is kept");
        assert_eq!(&vm.uuid_string().unwrap(), uuid);
        assert!(vm.is_active().unwrap(), "{name} was stopped");
        assert!(
            libvirt.pool_dir().join(overlay_name(name)).exists(),
            "{name}'s disk was deleted"
        );
        assert!(!libvirt.pool_dir().join(seed_name(name)).exists());
    }

    // Arrange: no domain, but a disk in the pool named as booking 503's overlay would be
    // that is not an overlay on the base image
    let name = vm_name("503");
    overlay_volume(&pool, &name, None);

    // Act
    let released = manager.release(&booking("503", &[])).await.unwrap_err();
    let configured = manager.configure(&booking("503", &[])).await.unwrap_err();

    // Assert: refused, the disk kept, no domain made
    for error in [&released, &configured] {
        assert_eq!(
            error.message(),
            format!(
                "a disk named {} is in the storage pool that is not this booking's; \
                 it was left as it is: ask the operator",
                overlay_name(&name)
            )
        );
    }
    assert!(libvirt.pool_dir().join(overlay_name(&name)).exists());
    assert!(domain(&connection, &name).is_none());
}

/// A qcow2 volume named as the booking's overlay, on `backing` or on nothing.
fn overlay_volume(
    pool: &virt::storage_pool::StoragePool,
    vm: &str,
    backing: Option<&str>,
) -> virt::storage_vol::StorageVol {
    let backing = backing
        .map(|path| {
            format!("<backingStore><path>{path}</path><format type='qcow2'/></backingStore>")
        })
        .unwrap_or_default();
    virt::storage_vol::StorageVol::create_xml(
        pool,
        &format!(
            "<volume><name>{}</name><capacity unit='bytes'>{BASE_BYTES}</capacity>\
             <target><format type='qcow2'/></target>{backing}</volume>",
            overlay_name(vm)
        ),
        0,
    )
    .unwrap()
}

#[tokio::test]
async fn hostile_ids_reach_the_metadata_as_text_and_a_vm_without_a_key_says_so() {
    // Arrange: ids that would close elements and open others if they reached XML as they are
    let libvirt = Libvirt::start();
    let connection = libvirt.connect();
    let manager = manager(&libvirt);
    let id = "7'/><name>evil</name><x a='&amp;";
    let mut booking = booking(id, &[]);
    booking.user.id = "</user><id>103</id>\"".into();
    booking.user.username = Some("Root@Example.org".into());
    booking.user.ssh_public_key = None;
    let name = vm_name(id);
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        "{name}"
    );

    // Act
    let outcome = manager.configure(&booking).await.unwrap();

    // Assert: one domain, with the ids as they were sent
    let domains = connection.list_all_domains(0).unwrap();
    assert_eq!(domains.len(), 1);
    assert_eq!(domains[0].name().unwrap(), name);
    let labels = metadata(&domains[0]);
    assert_eq!(labels.booking, id);
    assert_eq!(labels.user, "</user><id>103</id>\"");
    assert!(
        outcome
            .message
            .ends_with("No SSH public key is in your profile, so no account was made on it: add a key and book again."),
        "{}",
        outcome.message
    );
    let (_, files) = seed_files(
        &libvirt
            .pool_dir()
            .join(seed_name(&name))
            .display()
            .to_string(),
    );
    assert_eq!(cloud_config(&files)["users"], serde_json::json!([]));
    // end_changed finds it by its labels
    booking.end = Utc.with_ymd_and_hms(2026, 11, 24, 8, 30, 0).unwrap();
    manager.end_changed(&booking).await.unwrap();
    assert_eq!(metadata(&domains[0]).end, "2026-11-24T08:30:00Z");

    // Act
    manager.release(&booking).await.unwrap();

    // Assert
    assert!(connection.list_all_domains(0).unwrap().is_empty());
    assert_eq!(libvirt.pool_files(), Vec::<String>::new());
}

#[tokio::test]
async fn a_booked_vm_boots_and_reads_the_users_key_from_its_seed() {
    // Arrange: the VM boots a Debian kernel whose initramfs prints the seed's user data
    let libvirt = Libvirt::start();
    let (kernel, initrd) = libvirt.seed_printer();
    let manager = VirtualMachine::new(Settings {
        kernel: Some(example::Kernel {
            path: kernel.display().to_string(),
            initrd: Some(initrd.display().to_string()),
            args: Some("console=ttyS0 panic=-1 quiet".into()),
        }),
        ..settings(&libvirt)
    })
    .unwrap();
    let booking = booking("601", &[("memory", "256m")]);

    // Act
    manager.configure(&booking).await.unwrap();

    // Assert: the guest found the disk labelled cidata, mounted it as FAT, and read the key
    let vm = domain(&libvirt.connect(), &vm_name("601")).unwrap();
    let xml = vm.xml_desc(0).unwrap();
    let serial = xml
        .split("<serial type='pty'>")
        .nth(1)
        .and_then(|rest| rest.split("<source path='").nth(1))
        .map(|rest| rest[..rest.find('\'').unwrap()].to_owned())
        .expect("the serial console's pty");
    let printed = read_until(&serial, "SEED-END", Duration::from_secs(180));
    let seed = printed
        .rsplit("SEED-BEGIN")
        .next()
        .and_then(|rest| rest.split("SEED-END").next())
        .unwrap_or_default();
    assert!(seed.contains(SSH_KEY), "{printed}");
    assert!(seed.contains("#cloud-config"), "{printed}");
    manager.release(&booking).await.unwrap();
}

/// What a pty shows until `marker` follows a `SEED-BEGIN`, or all of it at `within`.
fn read_until(pty: &str, marker: &str, within: Duration) -> String {
    use std::io::Read as _;
    let (tx, rx) = std::sync::mpsc::channel();
    let path = pty.to_owned();
    std::thread::spawn(move || {
        let Ok(mut tty) = std::fs::File::open(&path) else {
            return;
        };
        let mut buf = [0u8; 4096];
        while let Ok(n) = tty.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + within;
    let mut text = String::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => break,
        }
        if text
            .split_once("SEED-BEGIN")
            .is_some_and(|(_, after)| after.contains(marker))
        {
            break;
        }
    }
    text
}

#[tokio::test]
async fn ready_answers_while_libvirt_does_and_not_after_it_stops() {
    // Arrange
    let libvirt = Libvirt::start();
    let manager = manager(&libvirt);

    // Act, Assert
    manager.ready().await.unwrap();
    drop(libvirt);
    let error = manager.ready().await.unwrap_err();
    assert!(error.is_transient());
    assert_eq!(
        error.message(),
        "libvirt failed to connect; it is tried again"
    );
}

#[test]
fn settings_refuse_what_could_not_work_or_would_pass_the_offer() {
    let base = [("VM_BASE_IMAGE", "/var/lib/libvirt/images/base.qcow2")];
    let with = |extra: &[(&str, &str)]| {
        let mut pairs = base.to_vec();
        pairs.extend_from_slice(extra);
        Settings::from_vars(crate::vars(&pairs))
    };
    let defaults = with(&[]).unwrap();
    assert_eq!(defaults.uri, "qemu:///system");
    assert_eq!(defaults.pool, "default");
    assert_eq!(defaults.network, VmNetwork::Libvirt("default".into()));
    assert_eq!((defaults.default_vcpus, defaults.max_vcpus), (1, 4));
    assert_eq!(
        (defaults.default_memory_mib, defaults.max_memory_mib),
        (1024, 4096)
    );
    assert_eq!(defaults.disk_bytes, 10 << 30);
    for (variable, value) in [
        ("VM_BASE_IMAGE", "base.qcow2"),
        ("VM_BASE_FORMAT", "vmdk"),
        ("VM_DOMAIN_TYPE", "xen"),
        ("VM_STORAGE_POOL", "a'b"),
        ("VM_NETWORK", "net</source>"),
        ("VM_DEFAULT_VCPUS", "8"),
        ("VM_MAX_VCPUS", "0"),
        ("VM_DEFAULT_MEMORY", "8g"),
        ("VM_MAX_MEMORY", "lots"),
        ("VM_ADDRESS_WAIT", "soon"),
        ("VM_ACCESS", "line\nbreak"),
        ("VM_KERNEL", "vmlinuz"),
        ("VM_INITRD", "/boot/initrd.img"),
        ("VM_KERNEL_ARGS", "console=ttyS0"),
    ] {
        assert!(
            with(&[(variable, value)]).is_err(),
            "{variable}={value} was taken"
        );
    }
    let missing = Settings::from_vars(crate::vars(&[])).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "invalid configuration: VM_BASE_IMAGE is not set"
    );
}

#[test]
fn account_names_are_linux_names_and_never_a_systems_own() {
    let user = |name: Option<&str>| User {
        id: "u".into(),
        username: name.map(String::from),
        email: None,
        ssh_public_key: None,
    };
    for (username, account) in [
        (Some("alice"), "alice"),
        (Some("Alice.Smith@example.org"), "alice-smith"),
        (Some("root"), "user"),
        (Some("Root@example.org"), "user"),
        (Some("sudo"), "user"),
        (Some("9lives"), "user"),
        (Some("$(reboot)"), "reboot"),
        (Some("bob\n- name: root"), "bob---name--root"),
        (None, "user"),
    ] {
        assert_eq!(
            example::account_name(&user(username)),
            account,
            "{username:?}"
        );
    }
}
