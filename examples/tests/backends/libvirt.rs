//! A libvirt daemon of its own for one test: Debian's monolithic `libvirtd` in session mode
//! (`qemu:///session`), unprivileged, with its home, configuration, state and socket in a
//! temporary directory, a directory storage pool `webhook` there, and a small qcow2 base
//! image made with `qemu-img`. QEMU runs its domains emulated (TCG): the test's user may not
//! have KVM.
//!
//! As root the daemon runs as `nobody` (a session daemon of root would be the system one);
//! as anyone else it runs as that user. Root's client connects to its socket all the same.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use virt::connect::Connect;

/// The storage pool the tests give the manager.
pub const POOL: &str = "webhook";
/// The base image's virtual size.
pub const BASE_BYTES: u64 = 64 << 20;

/// The static busybox of the initramfs.
const BUSYBOX: &str = "/bin/busybox";
/// The kernel modules the initramfs loads to read the seed (with what they need).
const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "vfat", "nls_cp437", "nls_ascii"];
/// The initramfs's `/init`.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_pci virtio_blk vfat nls_cp437 nls_ascii; do modprobe "$m"; done
i=0
until dev=$(findfs LABEL=cidata 2>/dev/null); do
  i=$((i + 1)); [ "$i" -gt 300 ] && break; sleep 0.2
done
mount -t vfat -o ro "$dev" /mnt
while true; do
  echo SEED-BEGIN; cat /mnt/user-data; echo SEED-END; sleep 1
done > /dev/ttyS0 2>&1
"#;

/// A running daemon, stopped (with every domain it runs) and deleted when dropped.
pub struct Libvirt {
    pub uri: String,
    pub base_image: PathBuf,
    dir: TempDir,
    daemon: Child,
}

impl Libvirt {
    /// Starts the daemon and makes the pool and the base image; a few seconds.
    pub fn start() -> Self {
        super::require("libvirtd", "libvirt-daemon");
        super::require("qemu-system-x86_64", "qemu-system-x86");
        super::require("qemu-img", "qemu-utils");
        super::require(
            "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so",
            "libvirt-daemon-driver-qemu",
        );
        let dir = tempfile::Builder::new()
            .prefix("libvirt")
            .tempdir()
            .expect("a temporary directory");
        let path = |name: &str| dir.path().join(name);
        for sub in [
            "home",
            "run",
            "config/libvirt",
            "cache",
            "data",
            "pool",
            "images",
        ] {
            std::fs::create_dir_all(path(sub)).unwrap();
        }
        // QEMU's output to a file, not through virtlogd, which would outlive the daemon.
        std::fs::write(
            path("config/libvirt/qemu.conf"),
            "stdio_handler = \"file\"\n",
        )
        .unwrap();
        let base_image = path("images/base.qcow2");
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base_image)
            .arg(BASE_BYTES.to_string()));
        let root = is_root();
        if root {
            run(Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(dir.path()));
        }
        run(Command::new("chmod").arg("755").arg(dir.path()));

        let log = File::create(path("libvirtd.log")).unwrap();
        let mut command = if root {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "libvirtd",
            ]);
            c
        } else {
            Command::new("libvirtd")
        };
        let daemon = command
            .args(["--timeout", "0"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", path("home"))
            .env("XDG_RUNTIME_DIR", path("run"))
            .env("XDG_CONFIG_HOME", path("config"))
            .env("XDG_CACHE_HOME", path("cache"))
            .env("XDG_DATA_HOME", path("data"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("libvirtd starts");
        let socket = path("run/libvirt/libvirt-sock");
        let libvirt = Self {
            uri: format!("qemu+unix:///session?socket={}", socket.display()),
            base_image,
            dir,
            daemon,
        };
        virt::error::clear_error_callback();
        let deadline = Instant::now() + Duration::from_secs(30);
        let connection = loop {
            if let Some(connection) = socket
                .exists()
                .then(|| Connect::open(Some(&libvirt.uri)).ok())
                .flatten()
            {
                break connection;
            }
            assert!(
                Instant::now() < deadline,
                "libvirtd did not answer: {}",
                libvirt.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        connection
            .create_storage_pool_xml(
                &format!(
                    "<pool type='dir'><name>{POOL}</name><target><path>{}</path></target></pool>",
                    libvirt.pool_dir().display()
                ),
                0,
            )
            .expect("the storage pool");
        libvirt
    }

    /// A new connection to the daemon.
    pub fn connect(&self) -> Connect {
        Connect::open(Some(&self.uri)).expect("a connection to libvirtd")
    }

    /// The storage pool's directory.
    pub fn pool_dir(&self) -> PathBuf {
        self.dir.path().join("pool")
    }

    /// The names of the files in the pool's directory, sorted.
    pub fn pool_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.pool_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A directory the daemon's user may read and write, for files a test makes itself.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join("images").join(name)
    }

    /// Gives a file the test made to the daemon's user.
    pub fn hand_over(&self, file: &Path) {
        if is_root() {
            run(Command::new("chown").arg("nobody:nogroup").arg(file));
        }
    }

    /// A Debian kernel and an initramfs of busybox and the kernel's virtio and FAT modules
    /// whose `/init` finds the disk labelled `cidata`, mounts it and prints its `user-data`
    /// on the serial console between `SEED-BEGIN` and `SEED-END`, again every second.
    pub fn seed_printer(&self) -> (PathBuf, PathBuf) {
        super::require(BUSYBOX, "busybox-static");
        super::require("cpio", "cpio");
        let kernel = std::fs::read_dir("/boot")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .max()
            .unwrap_or_else(|| {
                panic!(
                    "no kernel in /boot: run `{}` (or `apt-get install -y linux-image-cloud-amd64`)",
                    super::INSTALL
                )
            });
        let version = kernel.file_name().unwrap().to_str().unwrap()["vmlinuz-".len()..].to_owned();
        let modules = PathBuf::from("/lib/modules").join(&version);
        let dep = std::fs::read_to_string(modules.join("modules.dep")).expect("modules.dep");
        let root = self.scratch("initramfs");
        for sub in ["bin", "dev", "proc", "sys", "mnt"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        // The modules asked for and those they need, by modules.dep.
        let mut wanted: Vec<String> = Vec::new();
        let mut todo: Vec<String> = MODULES.iter().map(|m| (*m).to_owned()).collect();
        while let Some(module) = todo.pop() {
            let Some(line) = dep.lines().find(|l| {
                l.split(':').next().is_some_and(|path| {
                    let file = path.rsplit('/').next().unwrap_or_default();
                    file == format!("{module}.ko") || path == module
                })
            }) else {
                continue;
            };
            let (path, needs) = line.split_once(':').unwrap();
            if wanted.iter().any(|w| w == path) {
                continue;
            }
            wanted.push(path.to_owned());
            todo.extend(needs.split_whitespace().map(String::from));
        }
        let target = root.join("lib/modules").join(&version);
        for path in &wanted {
            let to = target.join(path);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(modules.join(path), &to).unwrap();
        }
        std::fs::write(target.join("modules.dep"), &dep).unwrap();
        let init = root.join("init");
        std::fs::write(&init, INIT).unwrap();
        run(Command::new("chmod").arg("755").arg(&init));
        let initrd = self.scratch("initrd.cpio");
        let list = run(Command::new("find").arg(".").current_dir(&root));
        let mut cpio = Command::new("cpio")
            .args(["--quiet", "-o", "-H", "newc"])
            .current_dir(&root)
            .stdin(Stdio::piped())
            .stdout(File::create(&initrd).unwrap())
            .spawn()
            .expect("cpio runs");
        use std::io::Write as _;
        cpio.stdin
            .take()
            .unwrap()
            .write_all(list.as_bytes())
            .unwrap();
        assert!(cpio.wait().unwrap().success(), "cpio failed");
        self.hand_over(&initrd);
        (kernel, initrd)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("libvirtd.log")).unwrap_or_default()
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        // A session daemon leaves its domains' QEMU processes running when it stops.
        if let Ok(connection) = Connect::open(Some(&self.uri)) {
            for domain in connection.list_all_domains(0).unwrap_or_default() {
                let _ = domain.destroy();
                let _ = domain.undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM);
            }
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.daemon.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a command to completion and returns its stdout; panics with its stderr if it fails.
pub fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
