//! Waldur marketplace events on `POST /waldur`: who may send them, and how Waldur's replies
//! are shaped. [`event`] turns a body into a booking for the same
//! [`ResourceManager`](crate::manager::ResourceManager).
//!
//! Waldur posts `{created, message, context, event_type}` with a URL and a content type and
//! nothing else: no signature, no header of the owner's choosing. So the endpoint is guarded
//! by a token in the hook's URL (`POST /waldur?token=...`) and/or a CIDR allow-list. Waldur
//! delivers each event at most once and ignores the reply's status, so every event it could
//! have sent is answered 2xx; only a refused caller gets 401 or 403. `docs/sources.md`
//! describes the mapping.

pub mod event;

use std::collections::BTreeSet;
use std::sync::Mutex;

use ipnet::IpNet;
use poem::Request;
use poem::http::{StatusCode, Uri};
use secrecy::{ExposeSecret, SecretString};

pub use event::{BOOKING_PREFIX, Delivery, open_end, parse, resource_number};

use crate::contract::reply::Reply;
use crate::http::access;

/// The query parameter of the hook's URL that carries `WALDUR_TOKEN`.
pub const TOKEN_PARAMETER: &str = "token";
/// The header a proxy in front of the service may carry `WALDUR_TOKEN` in instead.
pub const TOKEN_HEADER: &str = "x-webhook-token";
/// Events that configure, unless `WALDUR_CONFIGURE_EVENTS` says otherwise (an order event
/// only when its order is a `Create`).
pub const DEFAULT_CONFIGURE_EVENTS: &str =
    "marketplace_resource_create_succeeded,marketplace_order_completed";
/// Events that release, unless `WALDUR_RELEASE_EVENTS` says otherwise. A completed
/// `Terminate` order among the configure events releases too.
pub const DEFAULT_RELEASE_EVENTS: &str = "marketplace_resource_terminate_succeeded";
/// The longest IPv4 and IPv6 prefixes a trusted proxy block may be widened to: a proxy is a
/// few known hosts, not a network whose every host may claim any address.
pub const NARROWEST_PROXY_PREFIX: (u8, u8) = (24, 64);

/// Event types no list may hold, and why.
const NEVER_LISTED: [(&str, &str); 2] = [
    (
        "marketplace_order_terminated",
        "it means the order was cancelled (an update or a termination order included), which \
         leaves the resource as it was",
    ),
    (
        "marketplace_order_created",
        "Waldur has not sent it since December 2023",
    ),
];

/// The Waldur endpoint's settings; it exists only when a token or an allow-list is set.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WALDUR_TOKEN`: required in the URL's `token` parameter (or `X-Webhook-Token`) when set.
    pub token: Option<SecretString>,
    /// `WALDUR_ALLOWED_CIDRS`: the client address must be in one when set.
    pub allowed: Option<Vec<IpNet>>,
    /// `WALDUR_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    pub configure_events: Vec<&'static str>,
    pub release_events: Vec<&'static str>,
    /// `WALDUR_RESOURCE_TYPE` (default `RESOURCE_TYPE`), matched against the offering's
    /// name and UUID.
    pub resource_type: String,
}

/// The `WALDUR_*` variables as read, before they are checked.
#[derive(Debug, Default)]
pub(crate) struct RawSettings {
    pub token: Option<SecretString>,
    pub allowed_cidrs: Option<String>,
    pub trusted_proxies: Option<String>,
    pub configure_events: Option<String>,
    pub release_events: Option<String>,
    pub resource_type: Option<String>,
}

impl Settings {
    /// Checks the variables; `None` when the endpoint is off. Errors name the variable.
    pub(crate) fn check(raw: RawSettings, resource_type: &str) -> Result<Option<Self>, String> {
        if raw.token.is_none() && raw.allowed_cidrs.is_none() {
            let stray = [
                ("WALDUR_TRUSTED_PROXIES", raw.trusted_proxies.is_some()),
                ("WALDUR_CONFIGURE_EVENTS", raw.configure_events.is_some()),
                ("WALDUR_RELEASE_EVENTS", raw.release_events.is_some()),
                ("WALDUR_RESOURCE_TYPE", raw.resource_type.is_some()),
            ];
            if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{name} is set but the Waldur endpoint is off: set WALDUR_TOKEN or \
                     WALDUR_ALLOWED_CIDRS to turn it on"
                ));
            }
            return Ok(None);
        }
        if raw.trusted_proxies.is_some() && raw.allowed_cidrs.is_none() {
            return Err(
                "WALDUR_TRUSTED_PROXIES has no effect without WALDUR_ALLOWED_CIDRS: the client \
                 address is only needed for the allow-list"
                    .into(),
            );
        }
        if raw.trusted_proxies.is_some() && raw.token.is_none() {
            return Err(
                "WALDUR_TRUSTED_PROXIES needs WALDUR_TOKEN: any host that can reach the service \
                 from a trusted proxy's address can write any client address in \
                 X-Forwarded-For, so the token in the hook's URL must be checked too"
                    .into(),
            );
        }
        let cidrs = |name: &str, text: Option<String>| {
            text.map(|t| access::parse_cidrs(name, &t)).transpose()
        };
        let trusted_proxies =
            cidrs("WALDUR_TRUSTED_PROXIES", raw.trusted_proxies)?.unwrap_or_default();
        if let Some(wide) = trusted_proxies.iter().find(|b| !narrow(b)) {
            let (v4, v6) = NARROWEST_PROXY_PREFIX;
            return Err(format!(
                "WALDUR_TRUSTED_PROXIES: {wide} is too wide: every host in it could name any \
                 client address; list the proxies themselves (no IPv4 block wider than /{v4}, \
                 no IPv6 block wider than /{v6})"
            ));
        }
        let configure = events(
            "WALDUR_CONFIGURE_EVENTS",
            raw.configure_events.as_deref(),
            DEFAULT_CONFIGURE_EVENTS,
        )?;
        let release = events(
            "WALDUR_RELEASE_EVENTS",
            raw.release_events.as_deref(),
            DEFAULT_RELEASE_EVENTS,
        )?;
        if let Some(both) = release.iter().find(|t| configure.contains(t)) {
            return Err(format!(
                "WALDUR_RELEASE_EVENTS: {both} is also in WALDUR_CONFIGURE_EVENTS; an event \
                 type can only configure or release"
            ));
        }
        let resource_type = raw
            .resource_type
            .unwrap_or_else(|| resource_type.to_owned())
            .trim()
            .to_owned();
        if resource_type.is_empty() {
            return Err(
                "WALDUR_RESOURCE_TYPE is empty: set it to the offering's name or UUID".into(),
            );
        }
        Ok(Some(Self {
            token: raw.token,
            allowed: cidrs("WALDUR_ALLOWED_CIDRS", raw.allowed_cidrs)?,
            trusted_proxies,
            configure_events: configure,
            release_events: release,
            resource_type,
        }))
    }

    /// Lets a request through, or says why not: 403 for an address outside the allow-list
    /// (or an unreadable `X-Forwarded-For` from a trusted proxy), 401 for a missing or wrong
    /// token.
    pub fn admit(&self, req: &Request) -> Result<(), Reply> {
        if let Some(allowed) = &self.allowed {
            let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
            let client = peer
                .ok_or_else(|| "the client address is unknown".to_owned())
                .and_then(|peer| {
                    access::client_address(peer, req.headers(), &self.trusted_proxies)
                });
            let refusal = match client {
                Ok(ip) if access::contains(allowed, ip) => None,
                Ok(ip) => Some(format!(
                    "client address {ip} is not in WALDUR_ALLOWED_CIDRS"
                )),
                Err(e) => Some(e),
            };
            if let Some(message) = refusal {
                return Err(Reply::new(StatusCode::FORBIDDEN, "forbidden", message));
            }
        }
        if let Some(token) = &self.token {
            let unauthorized = |m: &str| Reply::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
            let from_url = query_token(req.uri()).map_err(|m| unauthorized(&m))?;
            let from_header = req.headers().get(TOKEN_HEADER).map(|v| v.as_bytes());
            let presented = from_url
                .as_deref()
                .map(str::as_bytes)
                .or(from_header)
                .ok_or_else(|| {
                    unauthorized(
                        "missing token: add ?token=<WALDUR_TOKEN> to the web hook's URL in Waldur",
                    )
                })?;
            let expected = token.expose_secret().trim().as_bytes();
            if !access::same_secret(presented.trim_ascii(), expected) {
                return Err(unauthorized("the token does not match WALDUR_TOKEN"));
            }
        }
        Ok(())
    }
}

/// Whether a trusted proxy block is a few hosts rather than a network.
fn narrow(block: &IpNet) -> bool {
    let (v4, v6) = NARROWEST_PROXY_PREFIX;
    match block {
        IpNet::V4(b) => b.prefix_len() >= v4,
        IpNet::V6(b) => match b.network().to_ipv4_mapped() {
            // `::ffff:a.b.c.d/n` is an IPv4 block of prefix n - 96.
            Some(_) => b.prefix_len() >= 96 + v4,
            None => b.prefix_len() >= v6,
        },
    }
}

/// The `token` parameter of the request's query, percent-decoded; an error when there are
/// several or the query cannot be read.
fn query_token(uri: &Uri) -> Result<Option<String>, String> {
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    let mut found = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != TOKEN_PARAMETER {
            continue;
        }
        if found.is_some() {
            return Err("the URL has more than one token parameter".into());
        }
        found = Some(percent_decode(value).ok_or_else(|| {
            "the URL's token parameter is not valid percent-encoded UTF-8".to_owned()
        })?);
    }
    Ok(found)
}

/// `%XX` escapes decoded; `+` stays `+` (RFC 3986, not form encoding), so a Base64 token
/// pasted into the URL as it is still matches.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The request's path and query for a log line, with the token's value replaced.
pub fn redacted(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((TOKEN_PARAMETER, _)) => format!("{TOKEN_PARAMETER}=[redacted]"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

/// The reply Waldur gets for an event it sent: its status word and message as they are, but
/// always 2xx. Waldur drops the status and never sends an event again, so a 4xx or 5xx
/// would only hide, in its logs, an event whose fate this service's own log and ledger hold
/// (a failed call stays in the ledger and is retried as for the reservation system).
pub fn acknowledged(reply: Reply) -> Reply {
    if reply.code.is_success() {
        return reply;
    }
    let code = reply.code;
    tracing::warn!(
        status = code.as_u16(),
        result = reply.body.status,
        message = %reply.body.message,
        "Waldur event not handled as asked; answered 202, as Waldur ignores the status"
    );
    Reply {
        code: StatusCode::ACCEPTED,
        ..reply
    }
}

/// A comma-separated list of event types, kept for the life of the process.
fn events(name: &str, text: Option<&str>, default: &str) -> Result<Vec<&'static str>, String> {
    let list: Vec<&'static str> = text
        .unwrap_or(default)
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(intern)
        .collect();
    if list.is_empty() {
        return Err(format!("{name} lists no event type"));
    }
    if let Some((never, why)) = NEVER_LISTED.iter().find(|(t, _)| list.contains(t)) {
        return Err(format!("{name}: remove {never}: {why}"));
    }
    Ok(list)
}

/// The ledger records event types as `&'static str`; each configured name is stored once
/// per process, however often a configuration is read.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().expect("event type names lock");
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(raw: RawSettings) -> Result<Option<Settings>, String> {
        Settings::check(raw, "Switch Port")
    }

    #[test]
    fn the_endpoint_is_off_without_a_token_or_an_allow_list_and_says_so_when_half_set() {
        assert!(settings(RawSettings::default()).unwrap().is_none());
        let err = settings(RawSettings {
            trusted_proxies: Some("10.0.0.1".into()),
            ..RawSettings::default()
        })
        .unwrap_err();
        assert!(err.starts_with("WALDUR_TRUSTED_PROXIES is set"), "{err}");
    }

    #[test]
    fn defaults_apply_and_an_event_type_cannot_both_configure_and_release() {
        let on = || RawSettings {
            allowed_cidrs: Some("10.0.0.0/8".into()),
            ..RawSettings::default()
        };
        let s = settings(on()).unwrap().unwrap();
        assert_eq!(
            s.configure_events,
            [
                "marketplace_resource_create_succeeded",
                "marketplace_order_completed"
            ]
        );
        assert_eq!(
            s.release_events,
            ["marketplace_resource_terminate_succeeded"]
        );
        assert_eq!(s.resource_type, "Switch Port");
        let err = settings(RawSettings {
            configure_events: Some("a, b".into()),
            release_events: Some("b".into()),
            ..on()
        })
        .unwrap_err();
        assert!(err.starts_with("WALDUR_RELEASE_EVENTS: b"), "{err}");
    }

    #[test]
    fn proxy_blocks_are_narrow_only_up_to_a_24_or_a_64() {
        let block = |t: &str| t.parse::<IpNet>().unwrap();
        assert!(narrow(&block("192.0.2.0/24")));
        assert!(narrow(&block("192.0.2.7/32")));
        assert!(!narrow(&block("10.0.0.0/8")));
        assert!(narrow(&block("2001:db8:1:2::/64")));
        assert!(!narrow(&block("2001:db8::/48")));
        assert!(!narrow(&block("::ffff:10.0.0.0/104")));
        assert!(narrow(&block("::ffff:10.0.0.1/128")));
    }

    #[test]
    fn the_token_is_read_from_the_query_and_redacted_from_logged_urls() {
        let uri = |t: &str| t.parse::<Uri>().unwrap();
        assert_eq!(
            query_token(&uri("/waldur?a=1&token=s%2Fx%20y+z=")),
            Ok(Some("s/x y+z=".into()))
        );
        assert_eq!(query_token(&uri("/waldur?tokens=1")), Ok(None));
        assert!(query_token(&uri("/waldur?token=a&token=b")).is_err());
        assert!(query_token(&uri("/waldur?token=%zz")).is_err());
        let shown = redacted(&uri("/waldur?a=1&token=hunter2&b=2"));
        assert_eq!(shown, "/waldur?a=1&token=[redacted]&b=2");
        assert_eq!(redacted(&uri("/waldur")), "/waldur");
    }

    #[test]
    fn failures_are_acknowledged_with_their_status_word() {
        let failed = Reply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "failed",
            "configure failed",
        );
        let reply = acknowledged(failed);
        assert_eq!(
            (reply.code, reply.body.status),
            (StatusCode::ACCEPTED, "failed")
        );
        let ok = acknowledged(Reply::ok("configured", "done"));
        assert_eq!(ok.code, StatusCode::OK);
    }
}
