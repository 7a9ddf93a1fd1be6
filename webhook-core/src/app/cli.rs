//! The command line: `serve` (the default) runs the webhook; `send` signs an event and posts
//! it to a running webhook, to try a deployment end to end (`--wait` follows the booking
//! until its work is done); `outbox list` and `outbox retry` show and re-send reports;
//! `conformance` checks a webhook written in any language against the senders' contract.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{Duration, SecondsFormat, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::app::startup::Application;
use crate::config::{Config, Service};
use crate::manager::ResourceManager;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "A reservation webhook. Settings come from the environment (see .env.example)."
)]
/// The command line: serve (the default), `send` an example event, or look at the outbox.
pub struct Cli {
    /// Read settings from ./.env too (debug builds always do; the image never needs to),
    /// and give it a new WEBHOOK_SECRET if it has none.
    #[arg(long, global = true)]
    pub dotenv: bool,
    /// What to do; serving when none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server (what happens without a subcommand).
    Serve,
    /// Sign an event with WEBHOOK_SECRET and post it to a running webhook; prints the reply.
    Send(SendArgs),
    /// Show or re-send the reports stored for the reservation system (same ledger settings
    /// as the service: DATA_DIR or LEDGER_URL).
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Replay what the reservation system's senders do against a running webhook, in any
    /// language, and print what the contract expects of each reply and what came; exit
    /// status 1 on any failure. Needs none of the service's other settings.
    Conformance(ConformanceArgs),
}

/// What `outbox` does.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List reports not yet delivered (or all with --all), newest first, with their
    /// attempts and last status.
    List {
        /// Include delivered reports.
        #[arg(long)]
        all: bool,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Make a failed report pending again; the running service sends it within a second.
    Retry {
        /// The report's id, as `outbox list` shows it.
        id: i64,
    },
}

/// The arguments of `send`.
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
    /// After the reply, follow the booking on GET /bookings/{id} (needs ADMIN_TOKEN) until
    /// its work is done; fails if it failed.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait follows the booking.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub wait_timeout: std::time::Duration,
}

/// The arguments of `conformance`.
#[derive(Debug, clap::Args)]
pub struct ConformanceArgs {
    /// The webhook's URL, e.g. http://127.0.0.1:8080/webhook.
    pub url: String,
    /// The webhook's secret, as configured there; every delivery is signed with it.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<secrecy::SecretString>,
    /// The resource type the webhook handles, as the reservation system names it
    /// [default: this service's].
    #[arg(long, env = "RESOURCE_TYPE")]
    pub resource_type: Option<String>,
    /// The longest a START or END may take to be answered: the event processor waits for
    /// each reply before it sends anything else.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub latency_budget: std::time::Duration,
    /// How long to wait for any reply (the back end's read timeout).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// How deliveries are signed: `reservation-system` (the senders' own way), or
    /// `standard-webhooks` (`webhook-id`, `webhook-timestamp`, `webhook-signature`; a
    /// `whsec_` secret is Base64-decoded).
    #[arg(long, env = "SIGNATURE_PRESET", default_value = "reservation-system", value_parser = conformance_preset)]
    pub preset: crate::contract::signature::Preset,
    /// Print the results as a JSON array (case, expected, got, latencyMs, verdict), for CI.
    #[arg(long)]
    pub json: bool,
}

/// The signing presets `conformance` can sign with.
fn conformance_preset(text: &str) -> Result<crate::contract::signature::Preset, String> {
    use crate::contract::signature::Preset;
    match Preset::parse(text) {
        Some(p @ (Preset::ReservationSystem | Preset::StandardWebhooks)) => Ok(p),
        _ => Err("conformance signs as reservation-system or standard-webhooks".into()),
    }
}

/// The example event `send` posts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Example {
    /// `EVENT_START`.
    Start,
    /// `EVENT_END`.
    End,
    /// `EVENT_DELETED`.
    Deleted,
}

/// The whole program of `service`: parses the command line, loads settings, and serves with
/// the manager that `manager` builds (awaited only when serving), or runs `send`.
pub async fn run<M: ResourceManager>(
    service: Service,
    manager: impl Future<Output = anyhow::Result<M>>,
) -> anyhow::Result<()> {
    let cli = Cli::parse();
    // It checks another webhook: none of this service's settings, nor its .env, concern it.
    if let Some(Command::Conformance(args)) = cli.command {
        return crate::app::conformance::command(args, service.resource_type).await;
    }
    // A .env file is a convenience for running locally; real environment variables win.
    if crate::app::local::reads_dotenv(cli.dotenv) {
        crate::app::local::load(std::path::Path::new(".env"))?;
    }
    let config = Config::from_env(service)?;
    match cli.command {
        Some(Command::Send(args)) => return send(&config, args).await,
        Some(Command::Outbox(command)) => return outbox(&config, command).await,
        Some(Command::Conformance(_)) => unreachable!("run before the settings are read"),
        Some(Command::Serve) | None => {}
    }
    crate::app::telemetry::init(&config.log_level, config.log_format);
    let manager = manager.await.context("cannot build the resource manager")?;
    let app = Application::build(config, Arc::new(manager)).await?;
    app.run_until_stopped(crate::app::shutdown_signal()).await?;
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
    // A redirect would carry the signed body elsewhere.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the HTTP client")?;
    let mut request = client.post(&url).header("content-type", "application/json");
    if let Some(keys) = &config.keys {
        for (name, value) in keys.sender_headers(&body) {
            request = request.header(name, value);
        }
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
    if args.wait {
        let id = match &args.file {
            None => args.event_id.clone(),
            Some(path) => booking_id(&std::fs::read(path)?)
                .with_context(|| format!("{}: no eventId or data.id", path.display()))?,
        };
        wait(config, &url, &id, args.wait_timeout).await?;
    }
    Ok(())
}

/// The booking id of a body in either of the sender's shapes.
fn booking_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = v.get("eventId").or_else(|| v.pointer("/data/id"))?;
    Some(id.as_str().map_or_else(|| id.to_string(), str::to_owned))
}

/// Follows booking `id` on the webhook's status endpoint until it is settled.
async fn wait(
    config: &Config,
    webhook_url: &str,
    id: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret as _;
    let token = config
        .admin_token
        .as_ref()
        .context("--wait needs ADMIN_TOKEN (the webhook's status endpoint is off without it)")?;
    let url = reqwest::Url::parse(webhook_url)
        .and_then(|u| u.join(&format!("bookings/{id}")))
        .with_context(|| format!("{webhook_url} is not a URL"))?;
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let response = client
            .get(url.clone())
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let body: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or_default();
        anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
        if body["settled"] == true {
            println!("{}", serde_json::to_string_pretty(&body)?);
            anyhow::ensure!(
                body["state"] != "failed" && body["state"] != "refused",
                "booking {id} {}: {}",
                body["state"].as_str().unwrap_or("failed"),
                body["lastError"]
            );
            return Ok(());
        }
        eprintln!(
            "booking {id}: {} (attempt {})",
            body["state"], body["attempts"]
        );
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "booking {id} is still {} after {}",
            body["state"],
            humantime::format_duration(timeout)
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Runs `outbox list` or `outbox retry`.
pub async fn outbox(config: &Config, command: OutboxCommand) -> anyhow::Result<()> {
    let store = crate::engine::ledger::open(config, false).await?;
    match command {
        OutboxCommand::List { all, limit } => {
            let entries = store.outbox_list(all, limit).await?;
            println!(
                "{:>6}  {:<12}  {:<9}  {:>8}  {:<20}  {:<10}  last status",
                "id", "kind", "state", "attempts", "updated", "booking"
            );
            for e in entries {
                println!(
                    "{:>6}  {:<12}  {:<9}  {:>8}  {:<20}  {:<10}  {}",
                    e.id,
                    e.kind.as_str(),
                    e.state.as_str(),
                    e.attempts,
                    crate::engine::ledger::time(e.updated_at).format("%Y-%m-%d %H:%M:%S"),
                    e.booking_id.as_deref().unwrap_or("-"),
                    e.last_status.as_deref().unwrap_or("-"),
                );
            }
        }
        OutboxCommand::Retry { id } => {
            match store.outbox_retry(id, crate::engine::ledger::now()).await? {
                Some(true) => println!("report {id} is pending again"),
                Some(false) => anyhow::bail!("report {id} has not failed: nothing to retry"),
                None => anyhow::bail!("there is no report {id}"),
            }
        }
    }
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
