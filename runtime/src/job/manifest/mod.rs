//! The `job.toml` format: what users write. Parsed with serde (unknown
//! fields denied, kebab-case keys) and then validated into a [`JobGraph`];
//! every error names the field and points at its line.
//!
//! This module reads the job-wide sections (`settings.rs`) and the graph
//! (`vertices.rs`: vertices and edges). Each source and sink kind reads its
//! own fields: the connector owns them (`connect::*::config`), this module
//! only finds each `[[source]]` and `[[sink]]` table and takes off what
//! every vertex has (`name`, `kind`, `parallelism`).

mod settings;
mod vertices;

use super::graph::{JobGraph, Partition};
use super::settings::SavepointBackend;
use crate::connect::config::FieldError;
use serde::Deserialize;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// The manifest versions this wrun reads.
pub const MANIFEST_VERSION: u32 = 1;

/// A manifest that cannot be used, with the place it is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}{}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default(), snippet.as_ref().zip(*location).map(|(s, (l, _))| format!("\n  {l} | {s}")).unwrap_or_default())]
pub struct ManifestError {
    /// The manifest's path as given.
    pub file: String,
    /// Line and column (1-based), when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong and what to do.
    pub message: String,
    /// The manifest line at `location`.
    pub snippet: Option<String>,
}

fn line_at(text: &str, offset: usize) -> (usize, usize, String) {
    let upto = &text[..offset.min(text.len())];
    let line = upto.matches('\n').count() + 1;
    let col = upto
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    let snippet = text
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .trim_end()
        .to_string();
    (line, col, snippet)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Manifest {
    version: Spanned<u32>,
    name: Spanned<String>,
    #[serde(default)]
    max_parallelism: Option<Spanned<u32>>,
    #[serde(default)]
    parallelism: Option<Spanned<u32>>,
    #[serde(default)]
    batch: Option<BatchSpec>,
    #[serde(default)]
    limits: Option<LimitsSpec>,
    #[serde(default)]
    checkpoint: Option<CheckpointSpec>,
    #[serde(default)]
    restart: Option<RestartSpec>,
    #[serde(default)]
    savepoints: Option<SavepointsSpec>,
    #[serde(default)]
    state: Option<StateSpec>,
    /// Read again, with their places, by `vertices::sources` (each kind's
    /// connector reads its own fields); here only their shape is checked.
    #[serde(default, rename = "source")]
    _sources: Vec<toml::Table>,
    #[serde(default, rename = "operator")]
    operators: Vec<OperatorSpec>,
    /// As `sources`.
    #[serde(default, rename = "sink")]
    _sinks: Vec<toml::Table>,
    #[serde(default, rename = "edge")]
    edges: Vec<EdgeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct BatchSpec {
    size: Option<Spanned<u32>>,
    linger_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StateSpec {
    url: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SavepointsSpec {
    backend: Option<Spanned<ManifestBackend>>,
    dir: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CheckpointSpec {
    interval_ms: Spanned<u64>,
    timeout_ms: Option<Spanned<u64>>,
    min_pause_ms: Option<u64>,
    retain: Option<Spanned<u64>>,
    tolerable_failures: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RestartSpec {
    attempts: u32,
    delay_ms: Option<u64>,
    max_delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct LimitsSpec {
    memory_mb: Option<Spanned<u64>>,
    call_timeout_ms: Option<Spanned<u64>>,
    max_output_events: Option<Spanned<u64>>,
    max_timers: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct OperatorSpec {
    name: Spanned<String>,
    uid: Option<Spanned<String>>,
    component: Spanned<String>,
    parallelism: Option<Spanned<u32>>,
    config: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EdgeSpec {
    from: Spanned<String>,
    to: Spanned<String>,
    partition: Option<Spanned<Partition>>,
}

/// The manifest being read: its name in errors, and its text for lines.
struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    base_dir: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ManifestError {
        let (line, col, snippet) = line_at(self.text, span.start);
        ManifestError {
            file: self.file.to_string(),
            location: Some((line, col)),
            message: message.into(),
            snippet: Some(snippet),
        }
    }

    /// An error without a place in the manifest.
    fn whole(&self, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.to_string(),
            location: None,
            message: message.into(),
            snippet: None,
        }
    }

    /// A connector's (or a shared check's) error, at its field.
    fn field(&self, e: FieldError) -> ManifestError {
        let mut m = self.err(e.span, e.message);
        if e.hide_line {
            m.snippet = None;
        }
        m
    }

    /// A serde error of the TOML, at the place it names.
    fn toml(&self, e: &toml::de::Error) -> ManifestError {
        let at = e.span().map(|s| line_at(self.text, s.start));
        ManifestError {
            file: self.file.to_string(),
            location: at.as_ref().map(|a| (a.0, a.1)),
            message: e.message().trim_end().to_string(),
            snippet: at.map(|a| a.2),
        }
    }
}

/// Parses and validates a manifest. `file` names it in errors; `base_dir`
/// resolves relative paths in it; `default_parallelism` (the CLI's
/// `--parallelism`) overrides the manifest's job-wide `parallelism`, but
/// not a vertex's own.
pub fn parse_manifest(
    text: &str,
    file: &str,
    base_dir: &Path,
    default_parallelism: Option<u32>,
) -> Result<JobGraph, ManifestError> {
    let ctx = Ctx {
        file,
        text,
        base_dir,
    };
    let m: Manifest = toml::from_str(text).map_err(|e| ctx.toml(&e))?;
    // The same text with every value's place, for the connectors' sections.
    let root = toml::de::DeTable::parse(text).map_err(|e| ctx.toml(&e))?;
    let job = settings::job(&ctx, &m, default_parallelism)?;
    let mut b = vertices::Graph::new(job);
    b.sources(&ctx, root.get_ref().get("source"))?;
    b.operators(&ctx, &m.operators)?;
    b.sinks(&ctx, root.get_ref().get("sink"))?;
    b.edges(&ctx, &m.edges)?;
    b.finish(&ctx)
}

/// The savepoint backends a manifest may name (the shared registry is
/// chosen by `--state-url`, never by a manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum ManifestBackend {
    Memory,
    Filesystem,
}

impl From<ManifestBackend> for SavepointBackend {
    fn from(b: ManifestBackend) -> Self {
        match b {
            ManifestBackend::Memory => SavepointBackend::Memory,
            ManifestBackend::Filesystem => SavepointBackend::Filesystem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshot tests: every `tests/ui/*.toml` beside the expected parsed
    /// graph (`.json`) or error (`.err`). `WRUN_BLESS=1` rewrites them.
    #[test]
    fn ui_manifests() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
        let bless = std::env::var_os("WRUN_BLESS").is_some();
        let mut n = 0;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        entries.sort();
        for path in entries {
            n += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            let (ext, got) = match parse_manifest(&text, &file, Path::new("/jobs"), None) {
                Ok(g) => ("json", serde_json::to_string_pretty(&g).unwrap() + "\n"),
                Err(e) => ("err", e.to_string() + "\n"),
            };
            let expected_path = path.with_extension(ext);
            let other = path.with_extension(if ext == "json" { "err" } else { "json" });
            if bless {
                std::fs::write(&expected_path, &got).unwrap();
                let _ = std::fs::remove_file(&other);
                continue;
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
                panic!(
                    "{file}: expected {} to exist (got:\n{got})",
                    expected_path.display()
                )
            });
            assert_eq!(
                got,
                expected,
                "{file}: output differs from {}",
                expected_path.display()
            );
        }
        assert!(n >= 10, "only {n} ui manifests");
    }
}
