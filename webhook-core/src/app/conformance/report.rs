//! What a conformance run found: one [`CaseResult`] per delivery, what the contract expects
//! of its reply ([`Expect`]), and the whole as a table for a person or JSON for CI.

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// What the contract expects of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Any 2xx.
    Success,
    /// A 2xx whose JSON body says `"status": "ignored"`: the contract's answer to an event
    /// the webhook does not act on.
    Ignored,
    /// A 2xx whose body does not say `"status": "configured"`: the booking is over, and
    /// configuring it again would hold its resource with no END to come.
    NotConfigured,
    /// Any 4xx: the delivery is refused.
    ClientError,
    /// Exactly this status.
    Status(u16),
}

impl Expect {
    /// Whether a reply with status `code` whose body's `status` field is `word` meets it.
    pub fn met_by(self, code: u16, word: Option<&str>) -> bool {
        let success = (200..300).contains(&code);
        match self {
            Self::Success => success,
            Self::Ignored => success && word == Some("ignored"),
            Self::NotConfigured => success && word != Some("configured"),
            Self::ClientError => (400..500).contains(&code),
            Self::Status(wanted) => code == wanted,
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => f.write_str("2xx"),
            Self::Ignored => f.write_str("2xx \"ignored\""),
            Self::NotConfigured => f.write_str("2xx, not \"configured\""),
            Self::ClientError => f.write_str("4xx"),
            Self::Status(code) => write!(f, "{code}"),
        }
    }
}

/// Whether a case passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The reply is what the contract expects, in time.
    Pass,
    /// It is not, or it came too late, or not at all.
    Fail,
}

/// One delivery and its reply.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseResult {
    /// What was sent.
    pub case: String,
    /// What the contract expects of the reply, e.g. `2xx within 250ms` or `401`.
    pub expected: String,
    /// What came: the status and the reply's `status` field, or why nothing came.
    pub got: String,
    /// From sending the request to the end of the reply, or of the wait for it.
    #[serde(rename = "latencyMs", serialize_with = "millis")]
    pub latency: Duration,
    /// Whether it passed.
    pub verdict: Verdict,
    /// Why it failed; `None` when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CaseResult {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Every case of a run, in the order they were sent.
#[derive(Debug, Clone)]
pub struct Report {
    /// The run's id, in every booking id it made (`conformance-<run>-<n>`).
    pub run_id: String,
    /// One per delivery.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(CaseResult::passed)
    }

    /// The cases that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.results.iter().filter(|r| !r.passed())
    }

    /// The first case whose name starts with `name`.
    pub fn case(&self, name: &str) -> Option<&CaseResult> {
        self.results.iter().find(|r| r.case.starts_with(name))
    }

    /// An error naming the failed cases, if any (the command's exit status 1).
    pub fn ensure_passed(&self) -> anyhow::Result<()> {
        let failed: Vec<&str> = self.failures().map(|r| r.case.as_str()).collect();
        anyhow::ensure!(
            failed.is_empty(),
            "{} of {} cases failed: {}",
            failed.len(),
            self.results.len(),
            failed.join("; ")
        );
        Ok(())
    }

    /// The results as a JSON array of objects: `case`, `expected`, `got`, `latencyMs`,
    /// `verdict` (`pass` or `fail`) and, for a failure, `reason`.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.results).expect("results serialize")
    }

    /// The results as a table with a closing count.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 5]> = self
            .results
            .iter()
            .map(|r| {
                let verdict = match &r.reason {
                    None => "pass".to_owned(),
                    Some(reason) => format!("FAIL: {reason}"),
                };
                [
                    r.case.clone(),
                    r.expected.clone(),
                    r.got.clone(),
                    format!("{} ms", r.latency.as_millis()),
                    verdict,
                ]
            })
            .collect();
        let header = ["case", "expected", "got", "latency", "verdict"].map(str::to_owned);
        let width = |i: usize| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths = [width(0), width(1), width(2), width(3)];
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&rows) {
            out.push_str(&format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}\n",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
            ));
        }
        let failed = self.failures().count();
        out.push_str(&format!(
            "run {}: {} cases, {failed} failed\n",
            self.run_id,
            self.results.len(),
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_expectation_is_met_only_by_what_the_contract_allows() {
        assert!(Expect::Success.met_by(202, Some("accepted")));
        assert!(!Expect::Success.met_by(409, None));
        assert!(Expect::Ignored.met_by(200, Some("ignored")));
        assert!(!Expect::Ignored.met_by(200, Some("ok")));
        assert!(!Expect::Ignored.met_by(200, None));
        assert!(Expect::NotConfigured.met_by(200, Some("duplicate")));
        assert!(Expect::NotConfigured.met_by(204, None));
        assert!(!Expect::NotConfigured.met_by(200, Some("configured")));
        assert!(Expect::ClientError.met_by(422, None));
        assert!(!Expect::ClientError.met_by(500, None));
        assert!(Expect::Status(401).met_by(401, Some("unauthorized")));
        assert!(!Expect::Status(401).met_by(403, None));
    }

    #[test]
    fn the_table_has_a_row_per_case_and_the_json_an_object_per_case() {
        let row = |case: &str, reason: Option<&str>| CaseResult {
            case: case.into(),
            expected: "401".into(),
            got: "200 \"ok\"".into(),
            latency: Duration::from_millis(7),
            verdict: if reason.is_none() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            reason: reason.map(str::to_owned),
        };
        let report = Report {
            run_id: "abc".into(),
            results: vec![row("one", None), row("two", Some("expected 401"))],
        };
        let table = report.table();
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.contains("FAIL: expected 401"), "{table}");
        assert!(table.ends_with("run abc: 2 cases, 1 failed\n"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json[0]["verdict"], "pass");
        assert_eq!(json[0]["latencyMs"], 7);
        assert!(json[0].get("reason").is_none());
        assert_eq!(json[1]["reason"], "expected 401");
        assert!(
            report
                .ensure_passed()
                .unwrap_err()
                .to_string()
                .contains("two")
        );
    }
}
