//! Runs the webhook with the manager in `src/resource.rs`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    webhook::cli::run(webhook::resource::Manager::from_env()).await
}
