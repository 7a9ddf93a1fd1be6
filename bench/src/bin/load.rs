//! Load generator for bench/run.sh: keeps a fixed number of keep-alive connections busy for a
//! fixed time (or number of requests) and prints throughput, latency percentiles and the
//! count of non-2xx answers. Also measures start-up time to the first `/healthz` 200.
//!
//! usage:
//!   load run <url> <mode> <connections> <seconds> [max-requests]
//!       mode: start (signed EVENT_START, new event id each), ignored (signed, other
//!       resource type), startend (START then END of the same booking), healthz, bare
//!   load startup <binary>            (PORT is chosen here; other settings from the env)
//!   load port                        (prints a free loopback port)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET_VAR: &str = "WEBHOOK_SECRET";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("run") if args.len() >= 6 => {
            let max = args
                .get(6)
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(u64::MAX);
            run(&args[2], &args[3], args[4].parse()?, args[5].parse()?, max).await
        }
        Some("startup") if args.len() == 3 => startup(&args[2]).await,
        Some("port") => {
            println!("{}", free_port()?);
            Ok(())
        }
        _ => anyhow::bail!(
            "usage: load run <url> <mode> <connections> <seconds> [max] | load startup <binary>"
        ),
    }
}

/// How the bodies write a time, as the sender does (to the second).
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// The bookings' slot: now until two hours from now, as the sender's START would say (a
/// booking already past its end would be released by the sweeper during the run, which is
/// not what is measured).
static SLOT: std::sync::LazyLock<(String, String)> = std::sync::LazyLock::new(|| {
    let now = chrono::Utc::now();
    let at = |t: chrono::DateTime<chrono::Utc>| t.format(TIME_FORMAT).to_string();
    (at(now), at(now + chrono::Duration::hours(2)))
});

/// A signed event body for `mode`, unique per `id`. Each booking is of its own resource, as
/// bookings that overlap in time are: bookings of one resource are worked on one at a time.
fn body(mode: &str, event_type: &str, id: u64, resource_type: &str) -> Vec<u8> {
    let kind = if mode == "ignored" {
        "Not This Type"
    } else {
        resource_type
    };
    let resource = id % 1_000_000_000;
    // Each body is dated when it is sent, so that runs longer than `REPLAY_TOLERANCE` pass
    // the replay check.
    let sent = chrono::Utc::now().format(TIME_FORMAT);
    let (start, end) = &*SLOT;
    format!(
        r#"{{"eventType":"{event_type}","timestamp":"{sent}","eventId":"{id}","webhookId":7,"userId":"5f0c1e2a-8b7d-4c3e-9a61-2d4f6b8e0a13","username":"alice","eventStart":"{start}","eventEnd":"{end}","customParameters":"{{\"vlan_id\":\"100\"}}","resourceId":{resource},"resourceName":"port-{resource}","resourceType":"{kind}"}}"#
    )
    .into_bytes()
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn run(
    url: &str,
    mode: &str,
    connections: usize,
    seconds: u64,
    max: u64,
) -> anyhow::Result<()> {
    let secret = std::env::var(SECRET_VAR).unwrap_or_default().into_bytes();
    let resource_type = std::env::var("RESOURCE_TYPE").unwrap_or_else(|_| "Switch Port".into());
    // Event ids unique across runs against the same server.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as u64
        * 1000;
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (url, mode, next) = (url.to_owned(), mode.to_owned(), next.clone());
        let (secret, resource_type) = (secret.clone(), resource_type.clone());
        workers.push(tokio::spawn(async move {
            // One client per worker: one keep-alive connection each.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let (mut latencies, mut non2xx, mut errors) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= max {
                    break;
                }
                let request = match mode.as_str() {
                    "healthz" => client.get(&url),
                    "bare" => client.post(&url),
                    _ => {
                        let event_type = if mode == "startend" && n % 2 == 1 {
                            "EVENT_END"
                        } else {
                            "EVENT_START"
                        };
                        let id = if mode == "startend" {
                            base + n / 2
                        } else {
                            base + n
                        };
                        let body = body(&mode, event_type, id, &resource_type);
                        client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("x-webhook-signature", sign(&secret, &body))
                            .body(body)
                    }
                };
                let t = Instant::now();
                match request.send().await {
                    Ok(r) => {
                        let ok = r.status().is_success();
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed().as_micros() as u32);
                        if !ok {
                            non2xx += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, non2xx, errors)
        }));
    }
    let (mut all, mut non2xx, mut errors) = (Vec::new(), 0, 0);
    for w in workers {
        let (l, n, e) = w.await?;
        all.extend(l);
        non2xx += n;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "requests={} rps={:.0} p50_us={} p99_us={} non2xx={} errors={}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        non2xx,
        errors
    );
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn startup(binary: &str) -> anyhow::Result<()> {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let started = Instant::now();
    let mut child = std::process::Command::new(binary)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let result = loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            break Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(10) {
            break Err(anyhow::anyhow!("no /healthz 200 within 10 s"));
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    println!("startup_ms={:.1}", result?.as_secs_f64() * 1000.0);
    Ok(())
}
