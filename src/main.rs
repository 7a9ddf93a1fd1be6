//! Runs the webhook with your manager, `src/resource.rs`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    webhook::app::cli::run(
        webhook::service!(include_str!("resource_type.txt")),
        resource::Manager::from_env(),
    )
    .await
}
