//! The rules for every user-given name that becomes part of a path or a
//! URL: job names, savepoint names and IDs, module names and versions.
//!
//! One place, so the manifest, the CLI, the API and the stores agree: a
//! name that passes here is safe as one path segment (no separator, no
//! `..`, nothing hidden) and needs no escaping in a URL path. This module
//! sits below every other layer and depends on none of them.

/// What a name names; each kind has its own rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A job's `name` (manifest, `--job`, `?job=`, `/v1/jobs/NAME`).
    Job,
    /// A savepoint's `--name` or its ID.
    Savepoint,
    /// A module's name in `name@version`.
    Module,
    /// A module's version in `name@version`.
    ModuleVersion,
}

impl NameKind {
    fn what(self) -> &'static str {
        match self {
            NameKind::Job => "job name",
            NameKind::Savepoint => "savepoint name",
            NameKind::Module => "module name",
            NameKind::ModuleVersion => "module version",
        }
    }

    fn max_len(self) -> usize {
        match self {
            NameKind::Savepoint => 64,
            _ => 128,
        }
    }

    /// Characters allowed besides ASCII letters and digits.
    fn extra(self) -> &'static str {
        match self {
            NameKind::Job | NameKind::Savepoint => "-_.",
            NameKind::Module | NameKind::ModuleVersion => "-_.+",
        }
    }

    /// Leading characters that are refused: `.` hides a file; a leading
    /// `-` would read as a flag on a command line.
    fn bad_start(self) -> &'static [char] {
        match self {
            NameKind::Savepoint => &['.', '-'],
            _ => &['.'],
        }
    }

    /// The rule, for error messages.
    pub fn rule(self) -> String {
        let extra: Vec<String> = self.extra().chars().map(|c| format!("'{c}'")).collect();
        let starts: Vec<String> = self.bad_start().iter().map(|c| format!("'{c}'")).collect();
        format!(
            "1 to {} ASCII letters, digits, {}, not starting with {}",
            self.max_len(),
            extra.join(", "),
            starts.join(" or ")
        )
    }
}

/// A name that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {} {value:?}: use {}", kind.what(), kind.rule())]
pub struct NameError {
    /// Which rule.
    pub kind: NameKind,
    /// The name as given (cut to 80 characters).
    pub value: String,
}

/// Checks `value` against the rule of `kind`.
pub fn check(kind: NameKind, value: &str) -> Result<(), NameError> {
    let ok = !value.is_empty()
        && value.len() <= kind.max_len()
        && !value.starts_with(kind.bad_start())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || kind.extra().contains(c));
    if ok {
        Ok(())
    } else {
        Err(NameError {
            kind,
            value: value.chars().take(80).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_name_escapes_or_hides() {
        let long = "a".repeat(129);
        for kind in [
            NameKind::Job,
            NameKind::Savepoint,
            NameKind::Module,
            NameKind::ModuleVersion,
        ] {
            for bad in [
                "", "..", "../x", "/etc", "a/b", "a\\b", ".hidden", "a b", "x\0", "é", &long,
            ] {
                assert!(check(kind, bad).is_err(), "{kind:?} {bad:?}");
            }
        }
        check(NameKind::Job, "wordcount-2.v1_x").unwrap();
        check(NameKind::Job, "-starts-with-dash").unwrap();
        assert!(check(NameKind::Savepoint, "-flag").is_err());
        assert!(check(NameKind::Savepoint, &"a".repeat(65)).is_err());
        check(NameKind::ModuleVersion, "1.0.0+build.1").unwrap();
        assert!(check(NameKind::Job, "a+b").is_err());
    }

    #[test]
    fn the_error_names_the_kind_and_the_rule() {
        let e = check(NameKind::Job, "../../x").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid job name \"../../x\": use 1 to 128 ASCII letters, digits, '-', '_', '.', not starting with '.'"
        );
    }
}
