//! `conformance`: replays what the reservation system's senders do against a running webhook,
//! written in any language, and says, case by case, what the wire contract expects of the
//! reply and what came back.
//!
//! Every delivery is one of the senders' fixtures with fresh ids, names and times, signed
//! with the webhook's secret as the sender signs (or deliberately not), or, with
//! `--preset standard-webhooks`, as a Standard Webhooks sender signs. The bookings it
//! starts are marked as tests (event ids `conformance-<run>-<n>`, resources
//! `conformance-test-<run>-<n>`), and every one of them gets an `EVENT_END` before the run
//! ends, whatever the webhook answered.
//!
//! - `cases`: which deliveries, in which order, and what the contract expects of each.
//! - `bodies`: the fixtures, rewritten.
//! - `delivery`: one request: its signature, how its body goes on the wire.
//! - `session`: sending, timing and judging each, and the bookings still to end.
//! - `report`: the results, as a table or as JSON ([`Report`]).

mod bodies;
mod cases;
mod delivery;
mod report;
mod session;

use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;

pub use report::{CaseResult, Expect, Report, Verdict};

use crate::app::cli::ConformanceArgs;
use crate::contract::signature::Preset;

/// The event processor sends every START and END of the installation one at a time and
/// waits for each reply: a reply slower than this delays everyone's.
pub const DEFAULT_LATENCY_BUDGET: Duration = Duration::from_millis(250);
/// The back end's read timeout; the event processor has none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook to check.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where it takes deliveries, e.g. `http://127.0.0.1:8080/webhook`.
    pub url: String,
    /// Its `WEBHOOK_SECRET`: the key is the text's UTF-8 bytes, as the sender uses it.
    pub secret: SecretString,
    /// The resource type it handles, as the reservation system names it.
    pub resource_type: String,
    /// The longest a START or END may take to be answered.
    pub latency_budget: Duration,
    /// How long any reply is waited for.
    pub timeout: Duration,
    /// How deliveries are signed: the reservation system's way, or Standard Webhooks'.
    pub preset: Preset,
}

impl Target {
    /// A target with the default latency budget and timeout.
    pub fn new(
        url: impl Into<String>,
        secret: SecretString,
        resource_type: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            secret,
            resource_type: resource_type.into(),
            latency_budget: DEFAULT_LATENCY_BUDGET,
            timeout: DEFAULT_TIMEOUT,
            preset: Preset::ReservationSystem,
        }
    }

    /// The same target, signed as `preset` signs.
    pub fn with_preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    /// The target the command line names (where `WEBHOOK_SECRET` and `RESOURCE_TYPE`
    /// stand in for the flags); the resource type is `default_resource_type` when neither
    /// names one. No `.env` is read: it holds this service's settings, not the target's.
    pub fn from_args(args: &ConformanceArgs, default_resource_type: &str) -> anyhow::Result<Self> {
        let secret = args
            .secret
            .clone()
            .context("conformance needs the webhook's secret: --secret or WEBHOOK_SECRET")?;
        let resource_type = args
            .resource_type
            .clone()
            .unwrap_or_else(|| default_resource_type.to_owned());
        anyhow::ensure!(
            !resource_type.trim().is_empty(),
            "conformance needs the webhook's resource type: --resource-type or RESOURCE_TYPE"
        );
        Ok(Self {
            url: args.url.clone(),
            secret,
            resource_type: resource_type.trim().to_owned(),
            latency_budget: args.latency_budget,
            timeout: args.timeout,
            preset: args.preset,
        })
    }
}

/// Runs every case against `target`, in order, then ends the bookings still open.
pub async fn run(target: &Target) -> anyhow::Result<Report> {
    let mut session = session::Session::new(target)?;
    cases::all(&mut session).await;
    Ok(session.finish().await)
}

/// Runs `conformance`: prints the table (or JSON with `--json`) and returns an error (exit
/// status 1) if any case failed.
pub async fn command(args: ConformanceArgs, default_resource_type: &str) -> anyhow::Result<()> {
    let target = Target::from_args(&args, default_resource_type)?;
    if !args.json {
        println!(
            "conformance of {} for {:?} (signed as {}, latency budget {})",
            target.url,
            target.resource_type,
            target.preset.as_str(),
            humantime::format_duration(target.latency_budget)
        );
    }
    let report = run(&target).await?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    report.ensure_passed()
}
