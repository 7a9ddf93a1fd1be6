//! The ceiling for this stack: poem answering `POST /` with 200 and nothing else.

use poem::{Route, Server, handler, listener::TcpListener, post};

#[handler]
fn ok() {}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    Server::new(TcpListener::bind(format!("127.0.0.1:{port}")))
        .run_with_graceful_shutdown(
            Route::new().at("/", post(ok)),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
            None,
        )
        .await
}
