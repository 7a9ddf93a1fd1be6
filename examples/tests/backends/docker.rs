//! Container engines for the container example: dockerd, and Podman's Docker-compatible
//! service, each with all its state in a temporary directory and the Docker Engine API on a
//! Unix socket there. Each holds one local image, [`IMAGE`], built from `/bin/busybox`
//! (nothing can be pulled). Engines take seconds to start, so the tests of one process
//! share each one; the last test to drop its handle stops it.
//!
//! Nothing is left on the host: each engine runs in a network namespace of its own, so
//! the bridges, iptables rules and IP forwarding it sets up for the networks it makes
//! stay there (and dockerd keeps its iptables rules on, which is what keeps one bridge
//! network from reaching another, as in production); Podman keeps its network
//! definitions in the temporary directory; on stop every container and network is
//! removed, leftover mounts under the temporary directory are unmounted, and the few
//! directories the engines create outside it (`/run/docker`, `/run/runc`,
//! `/var/lib/cni`, ...) are removed when they did not exist before.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bollard::Docker;
use tempfile::TempDir;

/// The test image: busybox with `sh`, `sleep`, `env`, `cat`, `nc` and `httpd`; it sleeps
/// forever and declares an anonymous volume, to check that release removes it.
pub const IMAGE: &str = "localhost/tiny:latest";

/// Which engine serves the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dockerd,
    Podman,
}

/// Directories outside its own that each engine may create on the host.
fn host_paths(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Dockerd => &["/run/docker", "/run/containerd", "/etc/docker"],
        Kind::Podman => &[
            "/run/runc",
            "/run/netns",
            "/var/lib/containers",
            "/var/lib/cni",
        ],
    }
}

static DOCKERD: Mutex<Weak<Engine>> = Mutex::new(Weak::new());
static PODMAN: Mutex<Weak<Engine>> = Mutex::new(Weak::new());
/// Held while an engine starts or stops, so the host paths it finds are its own.
static HOST: Mutex<()> = Mutex::new(());

/// A running engine, stopped when its last handle is dropped.
pub struct Engine {
    pub kind: Kind,
    /// The API address, as `DOCKER_HOST` takes it.
    pub host: String,
    dir: TempDir,
    process: Child,
    /// Host paths this engine created, removed when it stops.
    created: Vec<PathBuf>,
    /// The engine's TLS endpoint, if it has one.
    pub tls: Option<TlsEndpoint>,
}

/// An engine's API over TCP with TLS, verifying clients as `dockerd --tlsverify` does.
pub struct TlsEndpoint {
    /// The address, as `DOCKER_HOST` takes it: `tcp://127.0.0.1:port`.
    pub host: String,
    /// A client's `ca.pem`, `cert.pem` and `key.pem`, as `DOCKER_CERT_PATH` takes them.
    pub cert_path: PathBuf,
}

impl Engine {
    /// The shared dockerd, started if no test holds it.
    pub fn dockerd() -> Arc<Self> {
        shared(&DOCKERD, Kind::Dockerd)
    }

    /// The shared Podman service, started if no test holds it.
    pub fn podman() -> Arc<Self> {
        shared(&PODMAN, Kind::Podman)
    }

    /// A dockerd of its own that also serves the API over TCP with TLS on loopback. It
    /// runs in the host's network namespace, so the tests can reach that port: it makes
    /// no bridge, iptables rule or IP forwarding there, and the tests give its containers
    /// no network.
    pub fn dockerd_over_tls() -> Arc<Self> {
        Arc::new(Self::start(Kind::Dockerd, true))
    }

    /// A client of this engine, speaking an API version it knows.
    pub async fn client(&self) -> Docker {
        Docker::connect_with_host(&self.host)
            .expect("a unix:// address")
            .negotiate_version()
            .await
            .expect("the engine answers")
    }

    /// Runs the `docker` command line against this engine.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(["-H", &self.host])
            .args(args)
            .output()
            .expect("docker runs")
    }

    fn start(kind: Kind, tls: bool) -> Self {
        match kind {
            Kind::Dockerd => super::require("dockerd", "docker.io"),
            Kind::Podman => {
                super::require("podman", "podman");
                super::require("runc", "runc");
            }
        }
        super::require("docker", "docker.io");
        super::require("/bin/busybox", "busybox-static");
        let _host = HOST.lock().unwrap_or_else(PoisonError::into_inner);
        let created = host_paths(kind)
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("engine")
            .tempdir()
            .expect("a temporary directory");
        let path = |name: &str| dir.path().join(name);
        let log = std::fs::File::create(path("engine.log")).expect("a log file");
        let tls = tls.then(|| TlsEndpoint {
            host: format!("tcp://127.0.0.1:{}", free_port()),
            cert_path: certificates(dir.path()),
        });
        let mut command = match kind {
            Kind::Dockerd => dockerd(dir.path(), tls.as_ref()),
            Kind::Podman => podman(dir.path()),
        };
        let process = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        let socket = path("engine.sock");
        let engine = Self {
            kind,
            host: format!("unix://{}", socket.display()),
            dir,
            process,
            created,
            tls,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !engine.cli(&["version"]).status.success() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(engine.dir.path().join("engine.log"));
                panic!("{kind:?} did not start:\n{}", log.unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        engine.import_image();
        engine
    }

    /// Builds [`IMAGE`] from a root filesystem holding busybox, as `docker import` does.
    fn import_image(&self) {
        let bin = self.dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("a rootfs directory");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox is copied");
        for applet in ["sh", "sleep", "env", "cat", "nc", "httpd"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("an applet link");
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(self.dir.path().join("rootfs"))
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tar runs");
        let imported = Command::new("docker")
            .args(["-H", &self.host, "import"])
            .args(["--change", r#"CMD ["/bin/sleep", "2147483647"]"#])
            .args(["--change", "VOLUME /data"])
            .args(["-", IMAGE])
            .stdin(tar.stdout.take().expect("tar's output"))
            .output()
            .expect("docker import runs");
        assert!(tar.wait().is_ok_and(|s| s.success()), "tar failed");
        assert!(
            imported.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&imported.stderr)
        );
    }

    /// Removes every container, so no container process outlives the engine, then every
    /// network the tests made, so no bridge outlives it.
    fn remove_containers(&self) {
        let listed = self.cli(&["ps", "--all", "--quiet"]);
        let ids = String::from_utf8_lossy(&listed.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(ids);
            self.cli(&args);
        }
        self.cli(&["network", "prune", "--force"]);
    }

    /// Stops the engine: SIGTERM, then SIGKILL if it takes longer than 30 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.process.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.process.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _host = HOST.lock().unwrap_or_else(PoisonError::into_inner);
        self.remove_containers();
        self.stop();
        kill_leftovers(self.dir.path());
        unmount_under(self.dir.path());
        for path in &self.created {
            unmount_under(path);
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// The engine in `slot`, or a new one if no test holds it.
fn shared(slot: &Mutex<Weak<Engine>>, kind: Kind) -> Arc<Engine> {
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(engine) = slot.upgrade() {
        return engine;
    }
    let engine = Arc::new(Engine::start(kind, false));
    *slot = Arc::downgrade(&engine);
    engine
}

/// dockerd in a network namespace of its own, without the `docker0` bridge (the tests
/// make their networks); its key file (else `/etc/docker/key.json`) goes in `dir` through
/// the config file. With `tls`, in the host's namespace, touching none of its networking.
fn dockerd(dir: &Path, tls: Option<&TlsEndpoint>) -> Command {
    let config = dir.join("daemon.json");
    let key = dir.join("key.json");
    let json = serde_json::json!({"deprecated-key-path": key});
    std::fs::write(&config, json.to_string()).expect("a daemon.json");
    let mut command = match tls {
        None => in_own_network_namespace("dockerd"),
        Some(tls) => {
            let mut command = Command::new("dockerd");
            command
                .args(["--iptables=false", "--ip-forward=false", "--tlsverify"])
                .args(["-H", &tls.host])
                .arg("--tlscacert")
                .arg(dir.join("tls/ca.pem"))
                .arg("--tlscert")
                .arg(dir.join("tls/server-cert.pem"))
                .arg("--tlskey")
                .arg(dir.join("tls/server-key.pem"));
            command
        }
    };
    command
        .arg("--config-file")
        .arg(&config)
        .arg("--data-root")
        .arg(dir.join("root"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{}", dir.join("engine.sock").display()))
        .arg("--bridge=none");
    command
}

/// Podman's API service in a network namespace of its own, with runc (crun cannot set
/// rlimits in this sandbox), fixed ulimits, no systemd, and its storage, network
/// definitions and temporary files in `dir`.
fn podman(dir: &Path) -> Command {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).expect("a tmp directory");
    // Else Podman writes the networks it makes to /etc/cni/net.d.
    let networks = dir.join("networks");
    std::fs::create_dir_all(&networks).expect("a networks directory");
    let config = dir.join("containers.conf");
    let text = format!(
        r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"

[network]
network_config_dir = "{networks}"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
image_copy_tmp_dir = "{tmp}"
"#,
        tmp = tmp.display(),
        networks = networks.display(),
    );
    std::fs::write(&config, text).expect("a containers.conf");
    let mut command = in_own_network_namespace("podman");
    command
        .env("CONTAINERS_CONF", &config)
        .env("TMPDIR", &tmp)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--tmpdir")
        .arg(&tmp)
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", dir.join("engine.sock").display()));
    command
}

/// `program`, run in a new network namespace: what it sets up there (bridges, iptables
/// rules, `ip_forward`) goes when it and its children exit. It still serves the API on a
/// Unix socket, which does not belong to a network namespace.
fn in_own_network_namespace(program: &str) -> Command {
    let mut command = Command::new("unshare");
    command.args(["--net", "--", program]);
    command
}

/// Kills what an engine left running of its own, found by `dir` in its command line:
/// Podman's `conmon` keeps watching a finished `exec` for minutes after the engine stops.
fn kill_leftovers(dir: &Path) {
    let dir = dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let command_line = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&command_line).contains(&dir) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

/// Unmounts everything mounted at or below `path`, deepest first.
fn unmount_under(path: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(path))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let _ = Command::new("umount").arg("--lazy").arg(point).status();
    }
}

/// A TCP port nobody listens on just now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// A certificate authority, a server certificate for 127.0.0.1 and a client certificate,
/// made with `openssl` in `dir/tls`; the client's files, as `DOCKER_CERT_PATH` takes them.
fn certificates(dir: &Path) -> PathBuf {
    super::require("openssl", "openssl");
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("a tls directory");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(&tls)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=test CA",
        "-days",
        "1",
    ];
    openssl(&[&["req", "-x509"], &key[..], &ca[..]].concat());
    for (name, subject, extensions) in [
        (
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "/CN=client", "extendedKeyUsage=clientAuth"),
    ] {
        let (cert, key_file) = match name {
            "server" => ("server-cert.pem", "server-key.pem"),
            _ => ("cert.pem", "key.pem"),
        };
        let csr = format!("{name}.csr");
        let ext = format!("{name}.ext");
        std::fs::write(tls.join(&ext), extensions).expect("an extensions file");
        openssl(
            &[
                &["req"],
                &key[..],
                &["-keyout", key_file, "-out", &csr, "-subj", subject],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            cert,
            "-extfile",
            &ext,
        ]);
    }
    tls
}
