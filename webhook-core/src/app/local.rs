//! Local runs: `.env` is read only by debug builds (`cargo run`) or with `--dotenv`, never
//! by a release build such as the image's, whose settings come from its environment alone
//! (docs/decisions/0008-dotenv-for-local-runs.md).
//!
//! A local run whose `.env` has no usable `WEBHOOK_SECRET` (none, or the `.env.example`
//! placeholder) gets a strong one: 32 random bytes as Base64, as the reservation system
//! issues, written to `.env` and printed, so that `send` run from the same directory
//! signs with it.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;

use crate::config::is_placeholder;

/// Whether `.env` is read: by debug builds, or when asked.
pub fn reads_dotenv(asked: bool) -> bool {
    asked || cfg!(debug_assertions)
}

/// Gives `path` a secret if it needs one, then loads it; real environment variables win.
pub fn load(path: &Path) -> anyhow::Result<()> {
    if let Some(secret) = ensure_secret(path)? {
        eprintln!(
            "{}: no usable WEBHOOK_SECRET (unset, or a placeholder), so a new one was written there:\n\n    {secret}\n\n\
             Give the webhook this secret in the reservation system (or put the one it issued \
             in {0}). `send` run from this directory signs with it.\n",
            path.display()
        );
    }
    match dotenvy::from_path(path) {
        Ok(()) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a new secret to `path` when neither the environment nor `path` has a usable
/// one, and returns it.
pub fn ensure_secret(path: &Path) -> anyhow::Result<Option<String>> {
    let secret = secret_needed(path)?;
    if let Some(secret) = &secret {
        write_secret(path, secret)?;
    }
    Ok(secret)
}

/// A new secret, when neither the environment nor `path` has a usable one.
fn secret_needed(path: &Path) -> anyhow::Result<Option<String>> {
    let entries: Vec<(String, String)> = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot read {}", path.display()))?,
        Err(e) if e.not_found() => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let value = |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| {
                entries
                    .iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
            .filter(|v| !v.trim().is_empty())
    };
    if value("WEBHOOK_SECRET_FILE").is_some() {
        return Ok(None);
    }
    let unsigned = value("ALLOW_UNSIGNED").is_some_and(|v| v.trim() == "true");
    match value("WEBHOOK_SECRET") {
        // A secret someone chose (or one that is merely short) is theirs to fix: start-up
        // says what is wrong with it.
        Some(secret) if !is_placeholder(&secret) => Ok(None),
        // A placeholder in the real environment cannot be overridden from `.env`.
        Some(_) if std::env::var_os("WEBHOOK_SECRET").is_some() => Ok(None),
        None if unsigned => Ok(None),
        _ => Ok(Some(new_secret()?)),
    }
}

/// 32 random bytes as Base64.
fn new_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no random bytes for a secret: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Sets `WEBHOOK_SECRET=secret` in `path`: on the line that had it, or appended.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let line = format!("WEBHOOK_SECRET={secret}");
    let mut replaced = false;
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            let setting = l.trim_start().trim_start_matches("export ").trim_start();
            if setting.starts_with("WEBHOOK_SECRET=") && !replaced {
                replaced = true;
                line.clone()
            } else if setting.starts_with("WEBHOOK_SECRET=") {
                format!("# {l}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !replaced {
        lines.push(line);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    write_private(path, &out).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `text` to `path`, readable by its owner only where permissions exist.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())
    }
    #[cfg(not(unix))]
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placeholder_is_replaced_in_place_and_other_lines_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "# comment\nPORT=9000\nWEBHOOK_SECRET=change-me\nLOG_LEVEL=info\n",
        )
        .unwrap();
        let secret = secret_needed(&path)
            .unwrap()
            .expect("a placeholder needs a secret");
        write_secret(&path, &secret).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("# comment\nPORT=9000\nWEBHOOK_SECRET={secret}\nLOG_LEVEL=info\n")
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(&secret)
            .unwrap();
        assert_eq!(key.len(), 32);
        assert!(secret_needed(&path).unwrap().is_none(), "asked twice");
        assert_ne!(new_secret().unwrap(), secret);
    }

    #[test]
    fn a_chosen_secret_or_a_secret_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "WEBHOOK_SECRET=mine-and-short\n").unwrap();
        assert!(secret_needed(&path).unwrap().is_none());
        std::fs::write(&path, "WEBHOOK_SECRET_FILE=/run/secret\n").unwrap();
        assert!(secret_needed(&path).unwrap().is_none());
        std::fs::write(&path, "ALLOW_UNSIGNED=true\n").unwrap();
        assert!(secret_needed(&path).unwrap().is_none());
        std::fs::write(&path, "PORT=1\n").unwrap();
        assert!(secret_needed(&path).unwrap().is_some());
    }
}
