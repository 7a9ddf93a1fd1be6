//! The command line: `serve` (the default) runs the webhook; `send` signs an event and posts
//! it to a running webhook, to try a deployment end to end.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{Duration, SecondsFormat, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::config::Config;
use crate::manager::ResourceManager;
use crate::signature::SIGNATURE_HEADER;
use crate::startup::Application;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "A reservation webhook. Settings come from the environment (see .env.example)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server (what happens without a subcommand).
    Serve,
    /// Sign an event with WEBHOOK_SECRET and post it to a running webhook; prints the reply.
    Send(SendArgs),
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// A JSON file to send as it is, instead of a built-in example.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Which built-in example to send, with current times and RESOURCE_TYPE.
    #[arg(long, short, value_enum, default_value_t = Example::Start)]
    pub event: Example,
    /// The booking id of the built-in example.
    #[arg(long, default_value = "1001")]
    pub event_id: String,
    /// The resource name of the built-in example.
    #[arg(long, default_value = "example-1")]
    pub resource_name: String,
    /// Custom parameters of the built-in example, as JSON text, e.g. '{"vlan_id":"100"}'.
    #[arg(long, default_value = "{}")]
    pub parameters: String,
    /// Where the webhook listens [default: http://127.0.0.1:$PORT/webhook].
    #[arg(long)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Example {
    Start,
    End,
    Deleted,
}

/// The whole program: parses the command line, loads settings, and serves with the manager
/// that `manager` builds (awaited only when serving), or runs `send`.
pub async fn run<M: ResourceManager>(
    manager: impl Future<Output = anyhow::Result<M>>,
) -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A .env file is a convenience for running locally; real environment variables win.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        anyhow::bail!("cannot read .env: {e}");
    }
    let config = Config::from_env()?;
    if let Some(Command::Send(args)) = cli.command {
        return send(&config, args).await;
    }
    crate::telemetry::init(&config.log_level, config.log_format);
    let manager = manager.await.context("cannot build the resource manager")?;
    let app = Application::build(config, Arc::new(manager)).await?;
    app.run_until_stopped(crate::shutdown_signal()).await?;
    Ok(())
}

/// Runs `send`: returns an error (exit status 1) unless the webhook answered 2xx.
pub async fn send(config: &Config, args: SendArgs) -> anyhow::Result<()> {
    let body = match &args.file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => example(config, &args).to_string().into_bytes(),
    };
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}/webhook", config.listen.port()));
    let mut request = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json");
    if let Some(keys) = &config.keys {
        request = request.header(SIGNATURE_HEADER, keys.sign(&body));
    }
    let response = request
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    println!("{status}");
    println!("{}", response.text().await.unwrap_or_default());
    anyhow::ensure!(status.is_success(), "the webhook answered {status}");
    Ok(())
}

/// A body in the sender's shape for `args.event`, with current times.
pub fn example(config: &Config, args: &SendArgs) -> serde_json::Value {
    let now = Utc::now();
    let time = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let id_number: i64 = args.event_id.parse().unwrap_or(0);
    match args.event {
        Example::Start | Example::End => {
            let (event_type, start, end) = match args.event {
                Example::Start => ("EVENT_START", now, now + Duration::hours(1)),
                _ => ("EVENT_END", now - Duration::hours(1), now),
            };
            json!({
                "eventType": event_type,
                "timestamp": time(now),
                "eventId": args.event_id,
                "webhookId": 1,
                "userId": "example-user",
                "username": "example",
                "eventTitle": "Example booking",
                "eventStart": time(start),
                "eventEnd": time(end),
                "customParameters": args.parameters,
                "resourceId": 1,
                "resourceName": args.resource_name,
                "resourceType": config.resource_type,
            })
        }
        Example::Deleted => json!({
            "eventType": "EVENT_DELETED",
            "timestamp": time(now),
            "webhookId": "1",
            "data": {
                "id": id_number,
                "title": "Example booking",
                "start": time(now - Duration::minutes(5)),
                "end": time(now + Duration::hours(1)),
                "keycloakId": "example-user",
                "customParameters": args.parameters,
                "startNotifiedAt": time(now - Duration::minutes(10)),
                "resource": {
                    "id": 1,
                    "name": args.resource_name,
                    "type": {"name": config.resource_type},
                },
            },
        }),
    }
}
