//! The memory a flood of slow uploads makes the service hold, measured as the pod would be:
//! the resident set of this process, in which the service runs. A test binary of its own,
//! so that no other test allocates meanwhile.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use helpers::{RecordingManager, fixture, spawn_app_with};

/// What the service may grow by: the pod's memory request (k8s/base/deployment.yaml:
/// 48Mi) less the service's own idle resident set (8.6 MiB in BENCHMARKS.md, rounded up).
/// This process's idle figure also holds the test harness, so growth is what is compared.
const BUDGET: u64 = (48 - 10) << 20;
const UPLOADS: usize = 200;

/// This process's resident set, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// A slow upload that sends as much as the server takes, then stalls with the
/// connection open: a chunked body up to the old 1 MiB limit, or (`within_limit`) a
/// declared 60 KiB of which all but the last byte is sent.
async fn slow_upload(port: u16, within_limit: bool) -> TcpStream {
    static CHUNK: [u8; 16 * 1024] = [b' '; 16 * 1024];
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = if within_limit {
        format!("Content-Length: {}\r\n", 60 * 1024)
    } else {
        "Transfer-Encoding: chunked\r\n".to_owned()
    };
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{head}\r\n"
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let send = async {
        if within_limit {
            stream.write_all(&CHUNK[..]).await?;
            stream.write_all(&CHUNK[..]).await?;
            stream.write_all(&CHUNK[..]).await?;
            stream.write_all(&CHUNK[..12 * 1024 - 1]).await?;
        } else {
            for _ in 0..63 {
                stream
                    .write_all(format!("{:x}\r\n", CHUNK.len()).as_bytes())
                    .await?;
                stream.write_all(&CHUNK[..]).await?;
                stream.write_all(b"\r\n").await?;
            }
        }
        std::io::Result::Ok(())
    };
    // A server that stops reading leaves the writer waiting: that is the stall.
    let _ = tokio::time::timeout(Duration::from_secs(5), send).await;
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_slow_uploads_stay_within_the_pods_memory_request() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[("PROCESSING_BUDGET", "5s")], manager.clone()).await;
    // Warm up: the first requests allocate what every later one reuses.
    assert_eq!(app.get("/healthz").await.status(), 200);
    let warm = app.post_webhook(&fixture("event_end.json")).await;
    assert!(warm.status().is_success(), "{}", warm.status());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = rss();

    let peak = Arc::new(AtomicU64::new(idle));
    let sampling = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let uploads = futures_join(
        (0..UPLOADS)
            .map(|i| tokio::spawn(slow_upload(app.port, i % 2 == 0)))
            .collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // With every upload stalled, a signed START is still answered.
    let started = std::time::Instant::now();
    let response = app.post_webhook(&fixture("event_start.json")).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(app.get("/healthz").await.status(), 200);
    let answered_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;

    sampling.abort();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(idle);
    eprintln!(
        "{UPLOADS} slow uploads: resident set {} MiB idle, +{:.1} MiB at the peak; \
         START answered in {answered_in:?}",
        idle >> 20,
        grown as f64 / f64::from(1 << 20)
    );
    assert!(
        grown < BUDGET,
        "the resident set grew by {} MiB with {UPLOADS} slow uploads (budget {} MiB)",
        grown >> 20,
        BUDGET >> 20
    );
    drop(uploads);
    app.stop().await;
}

/// Awaits every task, keeping what they return.
async fn futures_join(tasks: Vec<tokio::task::JoinHandle<TcpStream>>) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(tasks.len());
    for task in tasks {
        streams.push(task.await.unwrap());
    }
    streams
}
