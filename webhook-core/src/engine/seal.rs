//! Credentials sealed to the user's SSH key (`SEAL_CREDENTIALS`, decision 18).
//!
//! A manager hands out a secret with [`Outcome::with_secret`]. Its notification travels
//! through the reservation system, which stores it as it is; sealed, the secret in it can be
//! read only with the private key of the SSH public key the user registered
//! (`sshPublicKey`), with the `age` tool. The reconciler turns an outcome into the message
//! the user gets right after the manager's call, before anything is recorded, so neither the
//! ledger nor the outbox ever holds a plain secret that was sealed.
//!
//! # The message
//! All within [`MESSAGE_MAX`] (UTF-16 units, as the back end counts). The secret, plain or
//! sealed, is never cut; the outcome's text is shortened instead (ending in `…`), or left
//! out when there is no room for it at all.
//!
//! - Plain: the text, then the secret on a line of its own.
//! - Sealed: the text, a line saying how to decrypt
//!   (`Decrypt with: base64 -d | age -d -i ~/.ssh/id_ed25519`), then the age
//!   file as one line of Base64, which that command reads pasted.
//!
//! One line of Base64 rather than age's ASCII armor: armor adds its two marker lines and a
//! line break every 64 characters (about 75 characters for a password), which leave no room
//! for the text, and survives no reflowing of lines. A 32-character secret sealed to an
//! `ssh-ed25519` key is 344 to 556 characters of Base64 (the random part below); files are
//! written until the text fits whole beside one, so a 100-character text is kept whole (40
//! seals of a text that starts with the PostgreSQL example's connection string, none cut).
//! To an `ssh-rsa` key no sealed message fits (its wrapped file key alone is as long as the
//! modulus, 342 characters of Base64 for 2048 bits): such a key is parsed, tried, and found
//! not to fit ([`Key::fits`]).
//!
//! The `age` crate adds a random "grease" stanza (a random tag and 0 to 100 random bytes)
//! to every file it writes, so that readers keep tolerating stanzas they do not know: 0 to
//! about 200 characters of Base64. Files are written until one leaves room for the whole
//! text, [`ATTEMPTS`] at most, and the shortest is kept; which one is kept depends on the
//! grease and the text's length alone, never on the secret.

use base64::Engine as _;
use secrecy::ExposeSecret;

pub use crate::config::Seal;
use crate::engine::report::{MESSAGE_MAX, truncate};
use crate::manager::Outcome;

/// The start of the line before a sealed secret; the command that decrypts it follows.
pub const HINT: &str = "Decrypt with: ";

/// The most files written for one secret, the shortest of which is kept.
pub const ATTEMPTS: usize = 128;

/// An SSH public key a secret can be sealed to: `ssh-ed25519`, or `ssh-rsa` of 2048 to 4096
/// bits, as age takes them.
pub struct Key {
    recipient: age::ssh::Recipient,
    /// Where `ssh-keygen` puts the private key of this kind, for the hint.
    identity: &'static str,
}

impl Key {
    /// The user's key, if it is one age can seal to (any other kind, or text that is no key,
    /// is none).
    pub fn parse(ssh_public_key: Option<&str>) -> Option<Key> {
        let recipient: age::ssh::Recipient = ssh_public_key?.trim().parse().ok()?;
        let identity = match recipient {
            age::ssh::Recipient::SshEd25519(..) => "~/.ssh/id_ed25519",
            age::ssh::Recipient::SshRsa(..) => "~/.ssh/id_rsa",
        };
        Some(Key {
            recipient,
            identity,
        })
    }

    /// Whether a sealed secret can fit in a message at all: an empty one, with no text. Not
    /// for an `ssh-rsa` key.
    pub fn fits(&self) -> bool {
        compose_sealed("", b"", self).is_some()
    }
}

/// Why an outcome's secret was not sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsealed {
    /// The user has no SSH key a secret can be sealed to (none, or another kind).
    NoKey,
    /// The sealed secret, with the hint, is longer than a message.
    TooLong,
}

impl std::fmt::Display for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unsealed::NoKey => {
                "your profile has no SSH public key that credentials can be sealed to \
                 (ssh-ed25519): add one, then book again"
            }
            Unsealed::TooLong => {
                "the credentials, sealed to your SSH key, do not fit in a notification \
                 (500 characters; an ssh-ed25519 key gives the shortest)"
            }
        })
    }
}

/// The message the user gets for `outcome`, sealed as `seal` says to `key`, the user's key.
/// `Err` only with [`Seal::Require`], when the secret cannot be sealed.
pub fn message(outcome: &Outcome, seal: Seal, key: Option<&Key>) -> Result<String, Unsealed> {
    let text = outcome.message.as_str();
    let Some(secret) = outcome.secret() else {
        return Ok(text.to_owned());
    };
    let secret = secret.expose_secret();
    let sealed = match (seal, key) {
        (Seal::Off, _) => return Ok(compose_plain(text, secret)),
        (_, None) => Err(Unsealed::NoKey),
        (_, Some(key)) => compose_sealed(text, secret.as_bytes(), key).ok_or(Unsealed::TooLong),
    };
    match (sealed, seal) {
        (Ok(message), _) => Ok(message),
        (Err(why), Seal::Require) => Err(why),
        (Err(_), _) => Ok(compose_plain(text, secret)),
    }
}

/// The text, then the secret on a line of its own.
pub fn compose_plain(text: &str, secret: &str) -> String {
    after(text, secret)
}

/// The text (shortened as needed), the hint and the sealed secret as one line of Base64;
/// `None` if even the hint and that line, with no text, are too long. Files are written
/// until one leaves room for the whole text, [`ATTEMPTS`] at most, and the shortest is kept.
pub fn compose_sealed(text: &str, secret: &[u8], key: &Key) -> Option<String> {
    let hint = format!("{HINT}base64 -d | age -d -i {}\n", key.identity);
    // The room the line of Base64 has if the whole text is to fit beside it.
    let room = MESSAGE_MAX.saturating_sub(units(text.trim_end()) + 1 + units(&hint));
    let mut shortest: Option<Vec<u8>> = None;
    for _ in 0..ATTEMPTS {
        let file = age::encrypt(&key.recipient, secret).ok()?;
        let fits = file.len().div_ceil(3) * 4 <= room;
        if shortest.as_ref().is_none_or(|s| file.len() < s.len()) {
            shortest = Some(file);
        }
        if fits {
            break;
        }
    }
    let line = base64::engine::general_purpose::STANDARD.encode(shortest?);
    let tail = format!("{hint}{line}");
    (units(&tail) <= MESSAGE_MAX).then(|| after(text, &tail))
}

/// `text`, then `rest` on a line of its own, the text shortened so that the whole fits.
fn after(text: &str, rest: &str) -> String {
    let room = MESSAGE_MAX.saturating_sub(units(rest) + 1);
    let text = shorten(text.trim_end(), room);
    if text.is_empty() {
        rest.to_owned()
    } else {
        format!("{text}\n{rest}")
    }
}

/// `text` within `room` UTF-16 units: as it is, cut with `…` at its end, or nothing.
fn shorten(text: &str, room: usize) -> String {
    if units(text) <= room {
        return text.to_owned();
    }
    if room < 2 {
        return String::new();
    }
    format!("{}…", truncate(text, room - 1).trim_end())
}

/// Length as the back end counts it.
fn units(text: &str) -> usize {
    text.encode_utf16().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::SshKey;

    fn key(pair: &SshKey) -> Key {
        Key::parse(Some(&pair.public)).expect("the test key parses")
    }

    #[test]
    fn settings_values_are_read_whatever_their_case() {
        assert_eq!(Seal::parse(" Prefer "), Some(Seal::Prefer));
        assert_eq!(Seal::parse("require"), Some(Seal::Require));
        assert_eq!(Seal::parse("OFF"), Some(Seal::Off));
        assert_eq!(Seal::parse("on"), None);
        assert_eq!(Seal::default(), Seal::Off);
    }

    #[test]
    fn a_plain_secret_follows_the_text_on_its_own_line_and_is_never_cut() {
        assert_eq!(compose_plain("Password:", "hunter2"), "Password:\nhunter2");
        assert_eq!(compose_plain("", "hunter2"), "hunter2");
        let long = compose_plain(&"é".repeat(600), &"s".repeat(100));
        assert_eq!(units(&long), MESSAGE_MAX);
        assert!(long.ends_with(&format!("…\n{}", "s".repeat(100))), "{long}");
    }

    #[test]
    fn a_sealed_secret_that_fits_with_the_text_follows_it_whole_after_the_hint() {
        let pair = SshKey::generate("ed25519");
        let secret = "0123456789abcdefghijklmnopqrstuv";
        let m = compose_sealed("Key:", secret.as_bytes(), &key(&pair)).unwrap();
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines.len(), 3, "{m}");
        assert_eq!(lines[0], "Key:");
        assert_eq!(
            lines[1],
            "Decrypt with: base64 -d | age -d -i ~/.ssh/id_ed25519"
        );
        assert!(units(&m) < MESSAGE_MAX, "{}", units(&m));
        assert_eq!(pair.unseal(&m), secret);
        assert!(!m.contains(secret));
    }

    #[test]
    fn a_sealed_secret_that_does_not_fit_with_the_text_shortens_it_never_itself() {
        let text = format!("host=db.example.org {} until tomorrow.", "x".repeat(300));
        let secret = "0123456789abcdefghijklmnopqrstuv";
        let pair = SshKey::generate("ed25519");
        let m = compose_sealed(&text, secret.as_bytes(), &key(&pair)).unwrap();
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines.len(), 3, "{m}");
        assert!(lines[0].starts_with("host=db.example.org xxx"), "{m}");
        assert!(lines[0].ends_with('…'), "{m}");
        assert!(lines[1].starts_with(HINT), "{m}");
        assert_eq!(units(&m), MESSAGE_MAX);
        assert_eq!(pair.unseal(&m), secret);
        assert!(!m.contains(secret));
    }

    #[test]
    fn a_secret_too_long_to_fit_sealed_is_not_sealed() {
        let secret = "s".repeat(400);
        let key = key(&SshKey::generate("ed25519"));
        assert_eq!(compose_sealed("text", secret.as_bytes(), &key), None);
        let outcome = Outcome::new("text").with_secret(secret.clone());
        assert_eq!(
            message(&outcome, Seal::Require, Some(&key)),
            Err(Unsealed::TooLong)
        );
        // Preferred only: plain, whole.
        let plain = message(&outcome, Seal::Prefer, Some(&key)).unwrap();
        assert_eq!(plain, format!("text\n{secret}"));
    }

    #[test]
    fn without_a_usable_key_prefer_is_plain_and_require_refuses() {
        let outcome = Outcome::new("Password:").with_secret("hunter2");
        for no_key in [
            None,
            Some(""),
            Some("not a key"),
            Some(
                "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg= x",
            ),
        ] {
            assert!(Key::parse(no_key).is_none(), "{no_key:?}");
        }
        assert_eq!(
            message(&outcome, Seal::Prefer, None).unwrap(),
            "Password:\nhunter2"
        );
        assert_eq!(message(&outcome, Seal::Require, None), Err(Unsealed::NoKey));
        assert_eq!(
            message(
                &outcome,
                Seal::Off,
                Some(&key(&SshKey::generate("ed25519")))
            )
            .unwrap(),
            "Password:\nhunter2"
        );
    }

    #[test]
    fn an_outcome_without_a_secret_is_its_text_whatever_the_setting() {
        let outcome = Outcome::new("Port 3 is yours.");
        assert_eq!(
            message(&outcome, Seal::Require, None).unwrap(),
            "Port 3 is yours."
        );
    }

    #[test]
    fn an_rsa_key_is_taken_but_nothing_sealed_to_it_fits() {
        let rsa = key(&SshKey::generate("rsa"));
        assert!(!rsa.fits());
        assert!(key(&SshKey::generate("ed25519")).fits());
        let outcome = Outcome::new("Password:").with_secret("hunter2");
        assert_eq!(
            message(&outcome, Seal::Prefer, Some(&rsa)).unwrap(),
            "Password:\nhunter2"
        );
        assert_eq!(
            message(&outcome, Seal::Require, Some(&rsa)),
            Err(Unsealed::TooLong)
        );
    }
}
