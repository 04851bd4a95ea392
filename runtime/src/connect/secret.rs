//! Secrets in manifests, by reference only: an environment variable or a
//! file holds the secret, the manifest names where. A [`Secret`] prints,
//! serializes and reports as that reference, never the secret itself, so
//! no log line, API answer, `validate` output or savepoint can hold it.

use super::ConnectError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where a secret (a password, a token) is read from when a connector
/// connects.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Secret {
    /// An environment variable of the `wrun` process.
    Env(String),
    /// A file (its whole text, without a trailing newline).
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Env(v) => write!(f, "environment variable {v}"),
            Secret::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

impl Secret {
    /// Reads the secret. `what` names it in the error ("the NATS password").
    pub fn read(&self, what: &str) -> Result<String, ConnectError> {
        let value = match self {
            Secret::Env(v) => std::env::var(v).map_err(|_| {
                ConnectError::fatal(format!(
                    "{what} is to come from environment variable {v}, which is not set (or not UTF-8): set it in the environment of the `wrun` process"
                ))
            })?,
            Secret::File(p) => std::fs::read_to_string(p)
                .map_err(|e| {
                    ConnectError::fatal(format!(
                        "{what} is to come from file {}, which cannot be read: {e}",
                        p.display()
                    ))
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        if value.is_empty() {
            return Err(ConnectError::fatal(format!("{what} ({self}) is empty")));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shows_only_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "hunter2\n").unwrap();
        let s = Secret::File(p.clone());
        assert_eq!(s.read("the password").unwrap(), "hunter2");
        for shown in [
            format!("{s}"),
            format!("{s:?}"),
            serde_json::to_string(&s).unwrap(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        let e = Secret::Env("WRUN_TEST_SURELY_UNSET_VAR".into())
            .read("the NATS token")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("WRUN_TEST_SURELY_UNSET_VAR") && e.contains("not set"),
            "{e}"
        );
    }
}
