//! A virtual machine of one's own for the length of a booking, on libvirt and QEMU.
//!
//! When a booking starts, the user gets a VM named after the booking (`booking-103`),
//! defined and started through libvirt's API: its disk a copy-on-write qcow2 overlay on the
//! operator's base image (never the base image itself), the vCPUs and memory the booking
//! asks for within the offer, a cloud-init NoCloud seed that makes the user an account
//! holding their SSH public key, and a network interface on the configured network. The
//! message tells the user the VM's address (its DHCP lease, awaited for a bounded time) or
//! how the operator says to reach it, and until when it is theirs. When the booking ends,
//! the VM is destroyed and undefined with its NVRAM and snapshot metadata, and its overlay
//! and seed are deleted.
//!
//! The overlay and the seed are storage volumes of a libvirt storage pool, made, filled
//! and deleted through libvirt's API, so the webhook needs no access to the host's files
//! and works with a remote libvirtd. The seed is a FAT image labelled `cidata`, written in
//! memory (no `mkfs`, no `genisoimage`), which cloud-init's NoCloud source reads.
//!
//! # Who it guards against
//! The user chooses the custom parameters and gets a shell, with `sudo`, in the VM:
//! - every parameter is parsed and checked against the settings' maxima before anything
//!   is made; a bad one is the user's error, named in the message;
//! - nothing the booking carries reaches libvirt's XML unescaped: the VM's name is made
//!   from the booking id's safe characters (and a hash of it when it has others), and the
//!   booking id, user id and end in the metadata are escaped text; the user's name and SSH
//!   key go only into the seed, as JSON (which YAML reads), after the key is checked to be
//!   one OpenSSH public key line;
//! - the domain's `<metadata>` holds the booking id, user id and end; `release`,
//!   `end_changed` and a repeated `configure` touch a domain only when its metadata names
//!   the booking, so a VM that is not this webhook's is never stopped or deleted;
//! - the VM is confined by the hypervisor: give the host KVM for real use (`VM_DOMAIN_TYPE=kvm`,
//!   the default), and keep users' VMs on a network that does not reach the host's own
//!   services (libvirt's NAT network `default` does reach the host: firewall it).
//!
//! # Custom parameters (all optional)
//! | name | example | meaning |
//! |---|---|---|
//! | `vcpus` | `2` | virtual CPUs, from 1 to `VM_MAX_VCPUS`; default `VM_DEFAULT_VCPUS` |
//! | `memory` | `512m`, `2g` | memory, from 64 MiB to `VM_MAX_MEMORY`; default `VM_DEFAULT_MEMORY` |
//!
//! # Settings
//! | variable | default | meaning |
//! |---|---|---|
//! | `LIBVIRT_URI` | `qemu:///system` | the libvirt connection, e.g. `qemu+ssh://root@host/system` or `qemu+unix:///session?socket=/path` |
//! | `VM_BASE_IMAGE` | required | absolute path, on the libvirt host, of the image every VM's disk is an overlay on; it is only read |
//! | `VM_BASE_FORMAT` | `qcow2` | the base image's format, `qcow2` or `raw` |
//! | `VM_STORAGE_POOL` | `default` | the libvirt storage pool (a directory pool) where the overlays and seeds are made |
//! | `VM_DISK_SIZE` | `10g` | the overlay's virtual size, at least the base image's |
//! | `VM_DOMAIN_TYPE` | `kvm` | `kvm`, or `qemu` for QEMU's emulation (TCG) where there is no KVM: slow, for tests |
//! | `VM_NETWORK` | `default` | the libvirt network the VM is on, or `user` for QEMU's user-mode network (no address the user can reach from outside) |
//! | `VM_DEFAULT_VCPUS` | `1` | vCPUs of a booking that asks for none |
//! | `VM_MAX_VCPUS` | `4` | most vCPUs a booking may ask for |
//! | `VM_DEFAULT_MEMORY` | `1g` | memory of a booking that asks for none |
//! | `VM_MAX_MEMORY` | `4g` | most memory a booking may ask for |
//! | `VM_ADDRESS_WAIT` | `30s` | how long `configure` waits for the VM's DHCP lease on a libvirt network before it answers without the address |
//! | `VM_ACCESS` | unset | how users reach the VMs, told to them as it is, e.g. `ssh -J jump.example.org` (at most 200 characters) |
//! | `VM_KERNEL` | unset | absolute path of a kernel on the libvirt host to boot directly, for base images without a boot loader; else the disk boots |
//! | `VM_INITRD` | unset | with `VM_KERNEL`: absolute path of its initramfs |
//! | `VM_KERNEL_ARGS` | unset | with `VM_KERNEL`: its command line, e.g. `root=/dev/vda1 console=ttyS0` |
//!
//! # The host
//! - The account the webhook runs as needs the libvirt connection: on `qemu:///system`
//!   that is membership of the `libvirt` group (or root), else a session daemon's socket.
//! - Use KVM (`/dev/kvm`, readable and writable by QEMU) for VMs that are to be used;
//!   `VM_DOMAIN_TYPE=qemu` runs them emulated, tens of times slower.
//! - The base image must have cloud-init (Debian's and Ubuntu's cloud images do) and be
//!   readable by QEMU; the pool must be a directory pool (`virsh pool-define-as
//!   vms dir --target /var/lib/libvirt/images/vms`).
//! - The service's image (`Dockerfile`) is one static binary without libvirt: run this
//!   example from a build on a base that has libvirt's library (Debian: `libvirt0`).
//! - The pool's volumes named `booking-*` are the webhook's: a volume of such a name that
//!   is not an overlay on `VM_BASE_IMAGE` (or not a seed) is refused and left as it is.
//! - The user's account is made with `sudo` rights and password login locked: only
//!   their key logs in. Without a key in their profile no account is made, and the message
//!   says so.
//!
//! # What the user receives
//! `Your virtual machine booking-103 is running until 2026-11-23 12:00 UTC: 2 vCPUs,
//! 1024 MiB of memory. Address: 192.168.122.57. Log in as alice with your SSH key.`
//!
//! # Repeated calls
//! A repeated `configure` finds the booking's VM (starting it if it was defined but not
//! running) and answers its details again; one cut short finishes what it left (a
//! leftover overlay is used, the seed is written anew). `release` of a booking whose VM is
//! gone succeeds, and deletes its overlay and seed if they are left.
//!
//! Start a project with it: `cargo generate ... -d manager=virtual_machine` makes this file
//! its `src/resource.rs`; building needs libvirt's C library and headers (Debian:
//! `libvirt-dev`).

use std::io::{Cursor, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::enumutil::Enum;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virt::sys;
use webhook::contract::reservation::{Reservation, User};
use webhook::manager::{ManagerError, Outcome, ResourceManager};

/// The XML namespace of the webhook's element in a domain's `<metadata>`.
pub const METADATA_URI: &str = "https://reservation-webhook.invalid/virtual-machine/1";
/// The prefix that element is written with.
pub const METADATA_PREFIX: &str = "booking";
/// The seed's FAT volume label, which cloud-init's NoCloud source looks for.
pub const SEED_LABEL: &str = "cidata";
/// The seed image's size: FAT12 with room for a 16 KiB key many times over.
pub const SEED_BYTES: u64 = 1 << 20;
/// Smallest memory a booking may ask for, in MiB.
pub const MIN_MEMORY_MIB: u64 = 64;
/// Longest `VM_ACCESS`, so the message stays within 500 characters.
const MAX_ACCESS_CHARS: usize = 200;
/// How often the DHCP lease is looked for while `configure` waits for it.
const LEASE_POLL: Duration = Duration::from_millis(500);
/// Account names cloud-init must not be asked to change: the system's own.
const RESERVED_ACCOUNTS: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "_apt",
    "sshd",
    "messagebus",
    "polkitd",
    "admin",
    "sudo",
    "wheel",
    "adm",
    "staff",
    "users",
    "debian",
    "ubuntu",
    "cloud-user",
];

/// The manager `src/main.rs` runs when this example is the project's `src/resource.rs`.
pub type Manager = VirtualMachine;

/// The format of the base image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseFormat {
    Qcow2,
    Raw,
}

impl BaseFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Raw => "raw",
        }
    }
}

/// The network a VM's interface is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmNetwork {
    /// A libvirt network, by name: the VM gets a DHCP lease on it.
    Libvirt(String),
    /// QEMU's user-mode network: outbound only, no address to tell.
    User,
}

/// This manager's settings, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub uri: String,
    pub base_image: String,
    pub base_format: BaseFormat,
    pub pool: String,
    /// The overlay's virtual size in bytes.
    pub disk_bytes: u64,
    /// `kvm` or `qemu`.
    pub domain_type: String,
    pub network: VmNetwork,
    pub default_vcpus: u32,
    pub max_vcpus: u32,
    pub default_memory_mib: u64,
    pub max_memory_mib: u64,
    pub address_wait: Duration,
    pub access: Option<String>,
    /// Direct kernel boot: the kernel, its initramfs and command line.
    pub kernel: Option<Kernel>,
}

/// A kernel QEMU boots directly, instead of the disk's boot loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub path: String,
    pub initrd: Option<String>,
    pub args: Option<String>,
}

/// The settings as the environment spells them.
#[derive(Debug, Deserialize)]
struct Vars {
    #[serde(default = "default_uri")]
    libvirt_uri: String,
    vm_base_image: String,
    #[serde(default = "default_format")]
    vm_base_format: String,
    #[serde(default = "default_name")]
    vm_storage_pool: String,
    #[serde(default = "default_disk")]
    vm_disk_size: String,
    #[serde(default = "default_domain_type")]
    vm_domain_type: String,
    #[serde(default = "default_name")]
    vm_network: String,
    #[serde(default = "default_vcpus")]
    vm_default_vcpus: String,
    #[serde(default = "default_max_vcpus")]
    vm_max_vcpus: String,
    #[serde(default = "default_memory")]
    vm_default_memory: String,
    #[serde(default = "default_max_memory")]
    vm_max_memory: String,
    #[serde(default = "default_wait")]
    vm_address_wait: String,
    #[serde(default)]
    vm_access: Option<String>,
    #[serde(default)]
    vm_kernel: Option<String>,
    #[serde(default)]
    vm_initrd: Option<String>,
    #[serde(default)]
    vm_kernel_args: Option<String>,
}

fn default_uri() -> String {
    "qemu:///system".into()
}
fn default_format() -> String {
    "qcow2".into()
}
fn default_name() -> String {
    "default".into()
}
fn default_disk() -> String {
    "10g".into()
}
fn default_domain_type() -> String {
    "kvm".into()
}
fn default_vcpus() -> String {
    "1".into()
}
fn default_max_vcpus() -> String {
    "4".into()
}
fn default_memory() -> String {
    "1g".into()
}
fn default_max_memory() -> String {
    "4g".into()
}
fn default_wait() -> String {
    "30s".into()
}

impl Settings {
    /// Reads the settings from `(name, value)` pairs; errors name the variable.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let v: Vars = webhook::config::settings_from_vars(vars)?;
        let base_format = match v.vm_base_format.as_str() {
            "qcow2" => BaseFormat::Qcow2,
            "raw" => BaseFormat::Raw,
            _ => anyhow::bail!("VM_BASE_FORMAT must be qcow2 or raw"),
        };
        let disk_mib = parse_mib(&v.vm_disk_size)
            .ok_or_else(|| anyhow::anyhow!("VM_DISK_SIZE must be a size such as 10g or 512m"))?;
        let vcpus = |name: &str, text: &str| {
            text.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| anyhow::anyhow!("{name} must be a whole number of vCPUs, 1 or more"))
        };
        let memory = |name: &str, text: &str| {
            parse_mib(text)
                .ok_or_else(|| anyhow::anyhow!("{name} must be a size such as 1g or 512m"))
        };
        let network = match v.vm_network.trim() {
            "user" => VmNetwork::User,
            name => VmNetwork::Libvirt(name.to_owned()),
        };
        let settings = Self {
            uri: v.libvirt_uri,
            base_image: v.vm_base_image,
            base_format,
            pool: v.vm_storage_pool,
            disk_bytes: disk_mib << 20,
            domain_type: v.vm_domain_type,
            network,
            default_vcpus: vcpus("VM_DEFAULT_VCPUS", &v.vm_default_vcpus)?,
            max_vcpus: vcpus("VM_MAX_VCPUS", &v.vm_max_vcpus)?,
            default_memory_mib: memory("VM_DEFAULT_MEMORY", &v.vm_default_memory)?,
            max_memory_mib: memory("VM_MAX_MEMORY", &v.vm_max_memory)?,
            address_wait: humantime::parse_duration(v.vm_address_wait.trim())
                .map_err(|_| anyhow::anyhow!("VM_ADDRESS_WAIT must be a duration such as 30s"))?,
            access: v.vm_access.filter(|a| !a.trim().is_empty()),
            kernel: match (
                v.vm_kernel.filter(|k| !k.is_empty()),
                v.vm_initrd,
                v.vm_kernel_args,
            ) {
                (Some(path), initrd, args) => Some(Kernel {
                    path,
                    initrd: initrd.filter(|i| !i.is_empty()),
                    args: args.filter(|a| !a.is_empty()),
                }),
                (None, None, None) => None,
                (None, _, _) => anyhow::bail!("VM_INITRD and VM_KERNEL_ARGS need VM_KERNEL"),
            },
        };
        settings.check()?;
        Ok(settings)
    }

    /// Refuses settings that cannot work or that would let a booking past the offer.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.base_image.starts_with('/') && !self.base_image.chars().any(char::is_control),
            "VM_BASE_IMAGE must be an absolute path"
        );
        anyhow::ensure!(
            matches!(self.domain_type.as_str(), "kvm" | "qemu"),
            "VM_DOMAIN_TYPE must be kvm or qemu"
        );
        anyhow::ensure!(
            valid_libvirt_name(&self.pool),
            "VM_STORAGE_POOL must be the name of a libvirt storage pool"
        );
        if let VmNetwork::Libvirt(name) = &self.network {
            anyhow::ensure!(
                valid_libvirt_name(name),
                "VM_NETWORK must be the name of a libvirt network, or user"
            );
        }
        anyhow::ensure!(
            (1..=self.max_vcpus).contains(&self.default_vcpus),
            "VM_DEFAULT_VCPUS must be at most VM_MAX_VCPUS"
        );
        anyhow::ensure!(
            self.max_memory_mib >= MIN_MEMORY_MIB
                && (MIN_MEMORY_MIB..=self.max_memory_mib).contains(&self.default_memory_mib),
            "VM_DEFAULT_MEMORY must be from 64m to VM_MAX_MEMORY"
        );
        anyhow::ensure!(self.disk_bytes > 0, "VM_DISK_SIZE must be more than 0");
        if let Some(kernel) = &self.kernel {
            let path = |p: &str| p.starts_with('/') && !p.chars().any(char::is_control);
            anyhow::ensure!(path(&kernel.path), "VM_KERNEL must be an absolute path");
            anyhow::ensure!(
                kernel.initrd.as_deref().is_none_or(path),
                "VM_INITRD must be an absolute path"
            );
            anyhow::ensure!(
                kernel
                    .args
                    .as_deref()
                    .is_none_or(|a| !a.chars().any(char::is_control)),
                "VM_KERNEL_ARGS must be one line"
            );
        }
        if let Some(access) = &self.access {
            anyhow::ensure!(
                access.chars().count() <= MAX_ACCESS_CHARS && !access.chars().any(char::is_control),
                "VM_ACCESS must be one line of at most {MAX_ACCESS_CHARS} characters"
            );
        }
        Ok(())
    }
}

/// Whether `name` is a plain pool or network name, safe anywhere.
fn valid_libvirt_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !name.starts_with(['.', '-'])
}

/// A size in MiB: `512m`, `512MiB`, `2g`, `2GiB`, or a bare number of MiB.
pub fn parse_mib(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text.as_str(), ""),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        _ => return None,
    };
    n.checked_mul(scale)
        .filter(|mib| *mib > 0 && *mib <= 1 << 30)
}

/// The domain's name for a booking: `booking-<id>` when the id is made of safe characters,
/// else its safe characters and a hash of the whole id, so any id gives a distinct name
/// that needs no escaping anywhere.
pub fn vm_name(booking: &str) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if !booking.is_empty() && booking.len() <= 48 && booking.chars().all(valid) {
        return format!("booking-{booking}");
    }
    let kept: String = booking.chars().filter(|c| valid(*c)).take(32).collect();
    let hash = hex::encode(&Sha256::digest(booking.as_bytes())[..4]);
    format!("booking-{kept}-{hash}")
}

/// The overlay volume's name in the pool.
pub fn overlay_name(vm: &str) -> String {
    format!("{vm}.qcow2")
}

/// The seed volume's name in the pool.
pub fn seed_name(vm: &str) -> String {
    format!("{vm}-seed.img")
}

/// `text` as XML character data or attribute value: the five special characters escaped,
/// and characters XML cannot hold at all replaced.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// What [`xml_escape`] keeps of `text` once read back.
fn xml_kept(text: &str) -> String {
    xml_unescape(&xml_escape(text))
}

/// Character data as an XML writer escapes it, read back.
fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else {
            break;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text of the first `<tag>...</tag>` (or `""` for `<tag/>`) in a small XML document
/// this manager wrote.
fn element_text(xml: &str, tag: &str) -> Option<String> {
    if xml.contains(&format!("<{tag}/>")) {
        return Some(String::new());
    }
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml_unescape(&xml[start..end]))
}

/// The labels the webhook puts in a domain's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub booking: String,
    pub user: String,
    pub end: String,
}

impl Labels {
    fn of(reservation: &Reservation) -> Self {
        Self {
            booking: reservation.event_id.clone(),
            user: reservation.user.id.clone(),
            end: end_label(reservation.end),
        }
    }

    /// The element, without its namespace (libvirt adds it).
    fn xml(&self) -> String {
        format!(
            "<booking><id>{}</id><user>{}</user><end>{}</end></booking>",
            xml_escape(&self.booking),
            xml_escape(&self.user),
            xml_escape(&self.end)
        )
    }

    /// Reads the element libvirt gives back.
    pub fn parse(xml: &str) -> Option<Self> {
        Some(Self {
            booking: element_text(xml, "id")?,
            user: element_text(xml, "user")?,
            end: element_text(xml, "end")?,
        })
    }

    /// Whether these labels are `booking`'s.
    fn are_of(&self, booking: &str) -> bool {
        self.booking == xml_kept(booking)
    }
}

/// The end as the metadata holds it.
pub fn end_label(end: DateTime<Utc>) -> String {
    end.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What a booking asks for, checked.
#[derive(Debug, Clone)]
struct Request {
    vcpus: u32,
    memory_mib: u64,
    account: Option<Account>,
}

/// The account cloud-init makes for the user.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    key: String,
}

/// The user's Linux account name: their user name, or the part of it before an `@`,
/// lowercased with other characters made `-`; `user` when that is no valid or a system
/// account name.
pub fn account_name(user: &User) -> String {
    let raw = user.username.as_deref().unwrap_or_default();
    let local = raw.split('@').next().unwrap_or_default().to_lowercase();
    let mut name: String = local
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    name = name.trim_matches('-').to_owned();
    let starts_well = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_');
    if !starts_well || RESERVED_ACCOUNTS.contains(&name.as_str()) {
        return "user".into();
    }
    name
}

/// The user's SSH public key, if they have one, as one OpenSSH `authorized_keys` line.
fn ssh_key(user: &User) -> Result<Option<String>, ManagerError> {
    let Some(key) = user.ssh_public_key.as_deref().map(str::trim) else {
        return Ok(None);
    };
    if key.is_empty() {
        return Ok(None);
    }
    let mut fields = key.split(' ');
    let kind = fields.next().unwrap_or_default();
    let blob = fields.next().unwrap_or_default();
    let known_kind = ["ssh-", "ecdsa-sha2-", "sk-"]
        .iter()
        .any(|prefix| kind.starts_with(prefix));
    let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if key.len() > 16 * 1024
        || key.chars().any(char::is_control)
        || !known_kind
        || blob.is_empty()
        || !blob.chars().all(base64)
    {
        return Err(ManagerError::invalid_input(
            "your SSH public key is not one OpenSSH public key line (such as \"ssh-ed25519 AAAA... you@laptop\"); correct it in your profile",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// A parameter's text, cut for a message.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(32).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

impl Settings {
    /// The booking's custom parameters and account, checked.
    fn request(&self, reservation: &Reservation) -> Result<Request, ManagerError> {
        let parameters = &reservation.parameters;
        let vcpus = match parameters.get("vcpus") {
            None => self.default_vcpus,
            Some(text) => match text.trim().parse::<u32>() {
                Ok(n) if (1..=self.max_vcpus).contains(&n) => n,
                Ok(_) => {
                    return Err(ManagerError::invalid_parameter(
                        "vcpus",
                        format!(
                            "{} is outside what is offered: from 1 to {}",
                            quoted(&text),
                            self.max_vcpus
                        ),
                    ));
                }
                Err(_) => {
                    return Err(ManagerError::invalid_parameter(
                        "vcpus",
                        format!(
                            "{} is not a whole number of vCPUs (from 1 to {})",
                            quoted(&text),
                            self.max_vcpus
                        ),
                    ));
                }
            },
        };
        let memory_mib = match parameters.get("memory") {
            None => self.default_memory_mib,
            Some(text) => {
                let offer = format!("from 64m to {}m", self.max_memory_mib);
                match parse_mib(&text) {
                    Some(mib) if (MIN_MEMORY_MIB..=self.max_memory_mib).contains(&mib) => mib,
                    Some(_) => {
                        return Err(ManagerError::invalid_parameter(
                            "memory",
                            format!("{} is outside what is offered: {offer}", quoted(&text)),
                        ));
                    }
                    None => {
                        return Err(ManagerError::invalid_parameter(
                            "memory",
                            format!(
                                "{} is not a size such as 512m or 2g ({offer})",
                                quoted(&text)
                            ),
                        ));
                    }
                }
            }
        };
        let account = ssh_key(&reservation.user)?.map(|key| Account {
            name: account_name(&reservation.user),
            key,
        });
        Ok(Request {
            vcpus,
            memory_mib,
            account,
        })
    }

    /// The domain's XML: every value from outside escaped.
    fn domain_xml(
        &self,
        name: &str,
        labels: &Labels,
        request: &Request,
        overlay: &str,
        seed: &str,
    ) -> String {
        let interface = match &self.network {
            VmNetwork::User => "<interface type='user'><model type='virtio'/></interface>".into(),
            VmNetwork::Libvirt(network) => format!(
                "<interface type='network'><source network='{}'/><model type='virtio'/></interface>",
                xml_escape(network)
            ),
        };
        format!(
            "<domain type='{domain_type}'>
  <name>{name}</name>
  <metadata><{prefix}:booking xmlns:{prefix}='{uri}'><{prefix}:id>{id}</{prefix}:id><{prefix}:user>{user}</{prefix}:user><{prefix}:end>{end}</{prefix}:end></{prefix}:booking></metadata>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type>hvm</type>{boot}</os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{overlay}'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{seed}'/><target dev='vdb' bus='virtio'/><readonly/></disk>
    {interface}
    <serial type='pty'/>
    <console type='pty'/>
  </devices>
</domain>",
            domain_type = xml_escape(&self.domain_type),
            name = xml_escape(name),
            prefix = METADATA_PREFIX,
            uri = xml_escape(METADATA_URI),
            id = xml_escape(&labels.booking),
            user = xml_escape(&labels.user),
            end = xml_escape(&labels.end),
            memory = request.memory_mib,
            vcpus = request.vcpus,
            overlay = xml_escape(overlay),
            seed = xml_escape(seed),
            boot = self.boot_xml(),
        )
    }

    /// How the VM boots: from its disk, or a kernel given to QEMU.
    fn boot_xml(&self) -> String {
        let Some(kernel) = &self.kernel else {
            return "<boot dev='hd'/>".into();
        };
        let mut xml = format!("<kernel>{}</kernel>", xml_escape(&kernel.path));
        if let Some(initrd) = &kernel.initrd {
            xml.push_str(&format!("<initrd>{}</initrd>", xml_escape(initrd)));
        }
        if let Some(args) = &kernel.args {
            xml.push_str(&format!("<cmdline>{}</cmdline>", xml_escape(args)));
        }
        xml
    }

    /// The overlay volume's XML: a qcow2 whose backing store is the base image.
    fn overlay_xml(&self, name: &str) -> String {
        format!(
            "<volume><name>{}</name><capacity unit='bytes'>{}</capacity>\
             <target><format type='qcow2'/></target>\
             <backingStore><path>{}</path><format type='{}'/></backingStore></volume>",
            xml_escape(&overlay_name(name)),
            self.disk_bytes,
            xml_escape(&self.base_image),
            self.base_format.name()
        )
    }
}

/// The seed volume's XML: a raw image of [`SEED_BYTES`].
fn seed_xml(name: &str) -> String {
    format!(
        "<volume><name>{}</name><capacity unit='bytes'>{SEED_BYTES}</capacity>\
         <target><format type='raw'/></target></volume>",
        xml_escape(&seed_name(name))
    )
}

/// cloud-init's user data: `#cloud-config` and a JSON document, which YAML reads, so no
/// value the user chose can change its structure.
pub fn user_data(account: Option<(&str, &str)>) -> String {
    let users = match account {
        Some((name, key)) => serde_json::json!([{
            "name": name,
            "ssh_authorized_keys": [key],
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "lock_passwd": true,
        }]),
        None => serde_json::json!([]),
    };
    let config = serde_json::json!({
        "users": users,
        "ssh_pwauth": false,
        "disable_root": true,
    });
    format!("#cloud-config\n{config}\n")
}

/// cloud-init's meta data: the instance id and host name are the VM's name.
pub fn meta_data(vm: &str) -> String {
    let meta = serde_json::json!({ "instance-id": vm, "local-hostname": vm });
    format!("{meta}\n")
}

/// A NoCloud seed: a FAT image labelled `cidata` holding `user-data` and `meta-data`.
pub fn seed_image(user_data: &str, meta_data: &str) -> std::io::Result<Vec<u8>> {
    let mut label = [b' '; 11];
    label[..SEED_LABEL.len()].copy_from_slice(SEED_LABEL.as_bytes());
    let mut disk = Cursor::new(vec![0u8; SEED_BYTES as usize]);
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new().volume_label(label),
    )?;
    disk.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        for (name, text) in [("user-data", user_data), ("meta-data", meta_data)] {
            let mut file = fs.root_dir().create_file(name)?;
            file.truncate()?;
            file.write_all(text.as_bytes())?;
            file.flush()?;
        }
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

/// A libvirt failure in words for the user, without libvirt's own text (it names the
/// host's paths and versions): that goes to the log, as the error's source.
fn virt_error(action: &str, e: VirtError) -> ManagerError {
    ManagerError::transient(format!("libvirt failed to {action}; it is tried again")).with_source(e)
}

/// Whether a libvirt error says that the object is not there.
fn is_missing(e: &VirtError) -> bool {
    matches!(
        e.code(),
        Enum::Known(
            ErrorNumber::NoDomain | ErrorNumber::NoStorageVolume | ErrorNumber::NoDomainMetadata
        )
    )
}

/// Gives each booking a virtual machine on libvirt.
pub struct VirtualMachine {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    /// The connection, opened on first use and again when it drops, so the service starts
    /// (and `/readyz` says why not) while libvirtd is down.
    connection: Mutex<Option<Connect>>,
}

/// What `configure` found or made.
struct Running {
    vcpus: u32,
    memory_mib: u64,
}

impl VirtualMachine {
    /// Builds the manager from settings; does not contact libvirt yet.
    /// Builds the manager at start-up from the environment's settings.
    pub async fn from_env() -> anyhow::Result<Self> {
        Self::new(Settings::from_vars(std::env::vars())?)
    }

    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        settings.check()?;
        // libvirt prints every error to stderr by default; they are returned and logged.
        virt::error::clear_error_callback();
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                connection: Mutex::new(None),
            }),
        })
    }

    /// Runs blocking libvirt calls off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, ManagerError> + Send + 'static,
    ) -> Result<T, ManagerError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| ManagerError::transient("the libvirt call failed").with_source(e))?
    }

    /// Waits, up to `VM_ADDRESS_WAIT`, for the VM's DHCP lease on its libvirt network.
    async fn address(&self, name: &str) -> Option<String> {
        if self.inner.settings.network == VmNetwork::User {
            return None;
        }
        let deadline = Instant::now() + self.inner.settings.address_wait;
        loop {
            let vm = name.to_owned();
            let found = self
                .blocking(move |inner| Ok(inner.lease(&vm)))
                .await
                .ok()
                .flatten();
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }
}

impl Inner {
    /// The connection, opened anew when there is none or it has dropped.
    fn connect(&self) -> Result<Connect, ManagerError> {
        let mut cached = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(connection) = cached.as_ref() {
            // A round trip: a connection whose daemon went away is only found out by one.
            if connection.is_alive().unwrap_or(false) && connection.hyp_version().is_ok() {
                return Ok(connection.clone());
            }
        }
        *cached = None;
        let connection =
            Connect::open(Some(&self.settings.uri)).map_err(|e| virt_error("connect", e))?;
        *cached = Some(connection.clone());
        Ok(connection)
    }

    /// The booking's domain, if there is one; an error if the name is taken by a domain
    /// that is not this booking's.
    fn find(
        &self,
        connection: &Connect,
        name: &str,
        booking: &str,
    ) -> Result<Option<Domain>, ManagerError> {
        let domain = match connection.lookup_domain_by_name(name) {
            Ok(domain) => domain,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(virt_error("look the virtual machine up", e)),
        };
        match labels(&domain)? {
            Some(labels) if labels.are_of(booking) => Ok(Some(domain)),
            _ => Err(ManagerError::permanent(format!(
                "a virtual machine named {name} exists that is not this booking's; \
                 it was left as it is: ask the operator"
            ))),
        }
    }

    fn pool(&self, connection: &Connect) -> Result<StoragePool, ManagerError> {
        let pool = connection
            .lookup_storage_pool_by_name(&self.settings.pool)
            .map_err(|e| virt_error("find the storage pool", e))?;
        // Volumes made by another client since libvirt last looked are found too.
        pool.refresh(0)
            .map_err(|e| virt_error("refresh the storage pool", e))?;
        Ok(pool)
    }

    fn configure(
        &self,
        reservation: &Reservation,
        request: &Request,
    ) -> Result<Running, ManagerError> {
        let name = vm_name(&reservation.event_id);
        let connection = self.connect()?;
        if let Some(domain) = self.find(&connection, &name, &reservation.event_id)? {
            return running(&domain);
        }
        let pool = self.pool(&connection)?;
        let overlay = match self.volume(&pool, &overlay_name(&name), Volume::Overlay)? {
            // Left by a configure cut short: it is this booking's, and still unused.
            Some(volume) => volume,
            None => StorageVol::create_xml(&pool, &self.settings.overlay_xml(&name), 0)
                .map_err(|e| virt_error("make the disk", e))?,
        };
        if let Some(old) = self.volume(&pool, &seed_name(&name), Volume::Seed)? {
            old.delete(0)
                .map_err(|e| virt_error("replace the seed", e))?;
        }
        let account = request
            .account
            .as_ref()
            .map(|a| (a.name.as_str(), a.key.as_str()));
        let image = seed_image(&user_data(account), &meta_data(&name)).map_err(|e| {
            ManagerError::transient("the cloud-init seed could not be made").with_source(e)
        })?;
        let seed = StorageVol::create_xml(&pool, &seed_xml(&name), 0)
            .map_err(|e| virt_error("make the seed", e))?;
        upload(&connection, &seed, &image).map_err(|e| virt_error("write the seed", e))?;
        let path = |volume: &StorageVol| volume.path().map_err(|e| virt_error("find the disk", e));
        let xml = self.settings.domain_xml(
            &name,
            &Labels::of(reservation),
            request,
            &path(&overlay)?,
            &path(&seed)?,
        );
        let domain = connection
            .define_domain_xml(&xml)
            .map_err(|e| virt_error("define the virtual machine", e))?;
        domain
            .create()
            .map_err(|e| virt_error("start the virtual machine", e))?;
        running(&domain)
    }

    fn release(&self, reservation: &Reservation) -> Result<bool, ManagerError> {
        let name = vm_name(&reservation.event_id);
        let connection = self.connect()?;
        let mut removed = false;
        if let Some(domain) = self.find(&connection, &name, &reservation.event_id)? {
            match domain.destroy() {
                Err(e) if !is_missing(&e) && domain.is_active().unwrap_or(true) => {
                    return Err(virt_error("stop the virtual machine", e));
                }
                _ => {}
            }
            let flags = sys::VIR_DOMAIN_UNDEFINE_NVRAM
                | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA;
            match domain.undefine_flags(flags) {
                Err(e) if !is_missing(&e) => {
                    return Err(virt_error("undefine the virtual machine", e));
                }
                _ => removed = true,
            }
        }
        // The domain is gone or never was: its volumes may be left by a configure cut short.
        let pool = self.pool(&connection)?;
        for (volume, kind) in [
            (overlay_name(&name), Volume::Overlay),
            (seed_name(&name), Volume::Seed),
        ] {
            if let Some(volume) = self.volume(&pool, &volume, kind)? {
                match volume.delete(0) {
                    Err(e) if !is_missing(&e) => return Err(virt_error("delete the disk", e)),
                    _ => removed = true,
                }
            }
        }
        Ok(removed)
    }

    fn end_changed(&self, reservation: &Reservation) -> Result<bool, ManagerError> {
        let name = vm_name(&reservation.event_id);
        let connection = self.connect()?;
        let Some(domain) = self.find(&connection, &name, &reservation.event_id)? else {
            return Ok(false);
        };
        let mut flags = sys::VIR_DOMAIN_AFFECT_CONFIG;
        if domain.is_active().unwrap_or(false) {
            flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
        }
        let labels = Labels::of(reservation);
        domain
            .set_metadata(
                sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                Some(&labels.xml()),
                Some(METADATA_PREFIX),
                Some(METADATA_URI),
                flags,
            )
            .map_err(|e| virt_error("record the new end", e))?;
        Ok(true)
    }

    /// The VM's first IPv4 address in its network's DHCP leases.
    fn lease(&self, name: &str) -> Option<String> {
        let connection = self.connect().ok()?;
        let domain = connection.lookup_domain_by_name(name).ok()?;
        let interfaces = domain
            .interface_addresses(sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
            .ok()?;
        interfaces
            .iter()
            .flat_map(|i| i.addrs.iter())
            .find(|a| a.typed == i64::from(sys::VIR_IP_ADDR_TYPE_IPV4))
            .or_else(|| interfaces.iter().flat_map(|i| i.addrs.iter()).next())
            .map(|a| a.addr.clone())
    }
}

/// The webhook's labels in a domain's metadata; `None` when it has none.
pub fn labels(domain: &Domain) -> Result<Option<Labels>, ManagerError> {
    match domain.metadata(
        sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        Some(METADATA_URI),
        0,
    ) {
        Ok(xml) => Ok(Labels::parse(&xml)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(virt_error("read the virtual machine's metadata", e)),
    }
}

/// Starts the booking's domain if it is not running, and says what it has.
fn running(domain: &Domain) -> Result<Running, ManagerError> {
    if !domain
        .is_active()
        .map_err(|e| virt_error("look the virtual machine up", e))?
    {
        domain
            .create()
            .map_err(|e| virt_error("start the virtual machine", e))?;
    }
    let info = domain
        .info()
        .map_err(|e| virt_error("look the virtual machine up", e))?;
    Ok(Running {
        vcpus: info.nr_virt_cpu,
        memory_mib: info.max_mem / 1024,
    })
}

/// What a volume of the pool is to a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Volume {
    Overlay,
    Seed,
}

impl Inner {
    /// The booking's volume of that kind, if there is one; an error if a volume of its name
    /// is in the pool that is not one this webhook makes (an overlay on the base image, or a
    /// seed of [`SEED_BYTES`]), which is then left as it is.
    fn volume(
        &self,
        pool: &StoragePool,
        name: &str,
        kind: Volume,
    ) -> Result<Option<StorageVol>, ManagerError> {
        let volume = match pool.lookup_storage_vol_by_name(name) {
            Ok(volume) => volume,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(virt_error("look the disk up", e)),
        };
        let xml = volume
            .xml_desc(0)
            .map_err(|e| virt_error("look the disk up", e))?;
        let backing = xml
            .find("<backingStore")
            .and_then(|at| element_text(&xml[at..], "path"));
        let ours = match kind {
            Volume::Overlay => backing.as_deref() == Some(self.settings.base_image.as_str()),
            Volume::Seed => {
                let info = volume
                    .info()
                    .map_err(|e| virt_error("look the disk up", e))?;
                backing.is_none() && info.capacity == SEED_BYTES
            }
        };
        if ours {
            Ok(Some(volume))
        } else {
            Err(ManagerError::permanent(format!(
                "a disk named {name} is in the storage pool that is not this booking's; \
                 it was left as it is: ask the operator"
            )))
        }
    }
}

/// Writes `data` into the volume through a libvirt stream.
fn upload(connection: &Connect, volume: &StorageVol, data: &[u8]) -> Result<(), VirtError> {
    let stream = Stream::new(connection, 0)?;
    volume.upload(&stream, 0, data.len() as u64, 0)?;
    let mut sent = 0;
    while sent < data.len() {
        match stream.send(&data[sent..]) {
            Ok(n) if n > 0 => sent += n as usize,
            Ok(_) => break,
            Err(e) => {
                let _ = stream.abort();
                return Err(e);
            }
        }
    }
    stream.finish()
}

/// "until 2026-11-23 12:00 UTC"
fn until(end: DateTime<Utc>) -> String {
    end.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[async_trait]
impl ResourceManager for VirtualMachine {
    async fn configure(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let request = self.inner.settings.request(reservation)?;
        let name = vm_name(&reservation.event_id);
        let booking = reservation.clone();
        let account = request.account.as_ref().map(|a| a.name.clone());
        let vm = self
            .blocking(move |inner| inner.configure(&booking, &request))
            .await?;
        let mut message = format!(
            "Your virtual machine {name} is running until {}: {} vCPU{}, {} MiB of memory.",
            until(reservation.end),
            vm.vcpus,
            if vm.vcpus == 1 { "" } else { "s" },
            vm.memory_mib
        );
        match (self.address(&name).await, &self.inner.settings.access) {
            (Some(address), _) => message.push_str(&format!(" Address: {address}.")),
            (None, Some(access)) => message.push_str(&format!(" Reach it with: {access}.")),
            (None, None) => message.push_str(" Its address is not known yet."),
        }
        match account {
            Some(account) => {
                message.push_str(&format!(" Log in as {account} with your SSH key."));
            }
            None => message.push_str(
                " No SSH public key is in your profile, so no account was made on it: \
                 add a key and book again.",
            ),
        }
        Ok(Outcome::new(message))
    }

    async fn release(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let name = vm_name(&reservation.event_id);
        let booking = reservation.clone();
        let removed = self.blocking(move |inner| inner.release(&booking)).await?;
        Ok(Outcome::new(if removed {
            format!("Your virtual machine {name} has been removed.")
        } else {
            format!("Your virtual machine {name} is gone.")
        }))
    }

    async fn end_changed(&self, reservation: &Reservation) -> Result<(), ManagerError> {
        let booking = reservation.clone();
        let found = self
            .blocking(move |inner| inner.end_changed(&booking))
            .await?;
        if !found {
            tracing::warn!(
                booking = %reservation.event_id,
                "the end changed for a booking whose virtual machine is gone"
            );
        }
        Ok(())
    }

    async fn ready(&self) -> Result<(), ManagerError> {
        self.blocking(|inner| {
            inner
                .connect()?
                .hyp_version()
                .map(drop)
                .map_err(|e| virt_error("answer", e))
        })
        .await
    }
}
