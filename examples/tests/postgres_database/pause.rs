//! A TCP relay in front of PostgreSQL that holds the admin's session still right after a
//! chosen statement, so that a test can act in the moment between two of the manager's
//! statements.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

/// A relay on a free loopback port to `127.0.0.1:upstream`.
pub struct Pause {
    pub port: u16,
    /// Notified once the statement has been answered and the next one is held back.
    held: Arc<Notify>,
    /// Lets the held statement through.
    go: Arc<Semaphore>,
}

impl Pause {
    /// Holds the first client message after the simple query that contains `after`.
    pub async fn start(upstream: u16, after: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (held, go) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
        let (held2, go2) = (held.clone(), go.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
                tokio::spawn(relay(client, server, after, held2.clone(), go2.clone()));
            }
        });
        Self { port, held, go }
    }

    /// Waits until the statement has run and the next one is held.
    pub async fn held(&self) {
        tokio::time::timeout(std::time::Duration::from_secs(30), self.held.notified())
            .await
            .expect("the statement ran");
    }

    /// Lets the session go on.
    pub fn go(&self) {
        self.go.add_permits(1);
    }
}

/// Copies both ways; client to server one protocol message at a time, so that the one after
/// `after` can be held until `go`.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    after: &str,
    held: Arc<Notify>,
    go: Arc<Semaphore>,
) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut to_client).await });
    // The startup message has a length but no type byte.
    let mut length = [0; 4];
    if from_client.read_exact(&mut length).await.is_err() {
        return;
    }
    let mut body = vec![0; u32::from_be_bytes(length) as usize - 4];
    if from_client.read_exact(&mut body).await.is_err() {
        return;
    }
    let _ = to_server.write_all(&[&length[..], &body].concat()).await;
    let mut hold_next = false;
    loop {
        let mut header = [0; 5];
        if from_client.read_exact(&mut header).await.is_err() {
            return;
        }
        let length = u32::from_be_bytes(header[1..].try_into().unwrap()) as usize;
        let mut body = vec![0; length - 4];
        if from_client.read_exact(&mut body).await.is_err() {
            return;
        }
        if hold_next {
            hold_next = false;
            held.notify_one();
            go.acquire().await.unwrap().forget();
        }
        if header[0] == b'Q' && String::from_utf8_lossy(&body).contains(after) {
            hold_next = true;
        }
        if to_server
            .write_all(&[&header[..], &body].concat())
            .await
            .is_err()
        {
            return;
        }
    }
}
