//! `wrun savepoint trigger|list|inspect|dispose|export|import`: through the
//! API of the running wrun where there is one (it owns the store), on the
//! data directory directly otherwise.

use super::output::{job_name, print_taken, progress, utc};
use crate::api::{Client, SavepointSummary};
use crate::checkpoint::{SavepointStore, read_key_group};
use crate::datadir::DataDir;
use crate::state::{DumpValue, KeyGroupRange, KeyedState, StateLimits};
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

/// Where to find savepoints: the data directory and the savepoint
/// directory (default `<data-dir>/savepoints`).
#[derive(Debug, Clone, clap::Args)]
pub struct Location {
    /// Data directory.
    #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
    pub data_dir: PathBuf,
    /// Where checkpoints and savepoint pins live: a directory, or
    /// s3://BUCKET/PREFIX?endpoint=URL&region=R&path-style=true for an
    /// S3-compatible object store (credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY or credentials-file=PATH). Default:
    /// DATA_DIR/checkpoints. See docs/state-storage.md.
    #[arg(long, env = "WRUN_STATE_URL", value_name = "URL", value_parser = super::parse_state_url)]
    pub state_url: Option<crate::blob::StateUrl>,
    /// Directory of filesystem savepoints, when the job set another one
    /// in `[savepoints] dir`.
    #[arg(long = "dir", value_name = "DIR")]
    pub savepoint_dir: Option<PathBuf>,
}

impl Location {
    /// The data directory, locked when `write` (dispose, import).
    fn open(&self, write: bool) -> Result<DataDir> {
        Ok(if write {
            DataDir::open_at(&self.data_dir, self.state_url.as_ref())?
        } else {
            DataDir::open_read_only_at(&self.data_dir, self.state_url.as_ref())?
        })
    }

    /// The registry these options name in `data`.
    fn registry(&self, data: &DataDir) -> Result<std::sync::Arc<dyn SavepointStore>> {
        Ok(match &self.savepoint_dir {
            Some(dir) => data.registry_at(dir)?,
            None => data.default_savepoints(),
        })
    }
}

/// `wrun savepoint ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SavepointCommand {
    /// Take a savepoint of a running job and wait for it.
    Trigger {
        /// The job.
        job: String,
        /// A name to refer to it by.
        #[arg(long)]
        name: Option<String>,
        /// Return once the savepoint is requested, without waiting.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        at: Location,
    },
    /// List savepoints (with those of a running wrun kept in memory).
    List {
        #[command(flatten)]
        at: Location,
    },
    /// Show a savepoint's operators, uids, states, key counts, sizes and
    /// module digests.
    Inspect {
        /// Savepoint ID, name, or exported directory.
        savepoint: String,
        /// Print the entries of one state of one operator as JSON lines.
        #[arg(long, num_args = 2, value_names = ["UID", "STATE"])]
        dump: Option<Vec<String>>,
        #[command(flatten)]
        at: Location,
    },
    /// Remove a savepoint; chunks nothing else uses are freed (needs no
    /// operator code).
    Dispose {
        /// Savepoint ID or name.
        savepoint: String,
        #[command(flatten)]
        at: Location,
    },
    /// Write a self-contained copy (record + chunks, relative paths) into a
    /// new directory, to move to another machine.
    Export {
        /// Savepoint ID or name.
        savepoint: String,
        /// The new directory.
        dir: PathBuf,
        #[command(flatten)]
        at: Location,
    },
    /// Import an exported savepoint into this data directory.
    Import {
        /// The exported directory.
        dir: PathBuf,
        /// Register it under this name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        at: Location,
    },
}

/// `wrun savepoint`.
pub(super) fn run(cmd: SavepointCommand) -> Result<()> {
    match cmd {
        SavepointCommand::Trigger {
            job,
            name,
            detach,
            at,
        } => {
            if let Some(n) = &name {
                crate::checkpoint::check_name(n)?;
            }
            let job = job_name(&job)?;
            let c = Client::for_data_dir(&at.data_dir)?;
            let r = c.post(
                &format!("/v1/jobs/{job}/savepoints"),
                &json!({ "name": name }),
            )?;
            let id = r["request-id"].as_str().unwrap_or_default().to_string();
            if detach {
                println!("savepoint requested: {id} (GET /v1/requests/{id})");
                return Ok(());
            }
            let v = c.wait(&id, progress("savepoint"))?;
            print_taken(&v)
        }
        SavepointCommand::List { at } => list(&at),
        SavepointCommand::Inspect {
            savepoint,
            dump,
            at,
        } => inspect(&at, &savepoint, dump.as_deref()),
        SavepointCommand::Dispose { savepoint, at } => dispose(&at, &savepoint),
        SavepointCommand::Export { savepoint, dir, at } => {
            let (sp, chunks) = lookup(&at, &savepoint)?;
            let store = match chunks {
                Some(s) => s,
                None => at.open(false)?.store(),
            };
            let bytes = crate::checkpoint::export(&sp, store.as_ref(), &dir)
                .with_context(|| format!("cannot export savepoint {}", sp.id))?;
            println!(
                "exported savepoint {} to {} ({} bytes of chunks); import it with `wrun savepoint import {}`",
                sp.id,
                dir.display(),
                bytes,
                dir.display()
            );
            Ok(())
        }
        SavepointCommand::Import { dir, name, at } => {
            if let Some(n) = &name {
                crate::checkpoint::check_name(n)?;
            }
            if let Some(c) = Client::running(&at.data_dir) {
                // The running wrun owns the store: it imports.
                let abs = std::fs::canonicalize(&dir)
                    .with_context(|| format!("cannot read {}", dir.display()))?;
                let sp: SavepointSummary = serde_json::from_value(c.post(
                    "/v1/savepoint-imports",
                    &json!({ "dir": abs, "name": name }),
                )?)?;
                println!(
                    "imported savepoint {} (job '{}', checkpoint {}) into {}",
                    sp.id, sp.job, sp.checkpoint, sp.location
                );
                return Ok(());
            }
            let data = at.open(true)?;
            let registry = at.registry(&data)?;
            let sp =
                crate::checkpoint::import(&dir, data.store().as_ref(), registry.as_ref(), name)
                    .with_context(|| format!("cannot import the savepoint in {}", dir.display()))?;
            println!(
                "imported savepoint {} (job '{}', checkpoint {}) into {}; resume with `wrun run job.toml --from-savepoint {}`",
                sp.id,
                sp.job(),
                sp.checkpoint.id,
                registry.location(),
                sp.name.as_deref().unwrap_or(&sp.id)
            );
            Ok(())
        }
    }
}

/// A savepoint by ID, name or exported directory: from the running wrun
/// (which also knows its memory savepoints) or the savepoint directory.
fn lookup(at: &Location, spec: &str) -> Result<crate::checkpoint::Found> {
    if let Some(found) = crate::checkpoint::exported(spec)? {
        return Ok(found);
    }
    if let Some(c) = Client::running(&at.data_dir)
        && let Ok(v) = c.get(&format!("/v1/savepoints/{spec}"))
    {
        return Ok((serde_json::from_value(v)?, None));
    }
    let data = at.open(false)?;
    Ok((
        crate::checkpoint::find(at.registry(&data)?.as_ref(), spec)?,
        None,
    ))
}

fn list(at: &Location) -> Result<()> {
    let all: Vec<SavepointSummary> = match Client::running(&at.data_dir) {
        Some(c) => serde_json::from_value(c.get("/v1/savepoints")?["savepoints"].clone())?,
        None => {
            let data = at.open(false)?;
            let registry = at.registry(&data)?;
            let location = std::path::PathBuf::from(registry.location());
            registry
                .list()?
                .iter()
                .map(|sp| {
                    SavepointSummary::of(
                        sp,
                        location
                            .join(format!("{}.json", sp.id))
                            .display()
                            .to_string(),
                    )
                })
                .collect()
        }
    };
    if all.is_empty() {
        println!("no savepoints");
        return Ok(());
    }
    println!(
        "{:<36} {:<16} {:<16} {:>6}  {:<23} {:<10} {:>12}",
        "ID", "NAME", "JOB", "CKPT", "CREATED (UTC)", "BACKEND", "BYTES"
    );
    for s in &all {
        println!(
            "{:<36} {:<16} {:<16} {:>6}  {:<23} {:<10} {:>12}{}",
            s.id,
            s.name.as_deref().unwrap_or("-"),
            s.job,
            s.checkpoint,
            utc(s.created_at_ms),
            s.backend,
            s.bytes,
            if s.stopped {
                "  (job stopped here)"
            } else {
                ""
            }
        );
    }
    if all.iter().any(|s| s.backend == "memory") {
        println!("memory savepoints are lost when the wrun holding them stops");
    }
    Ok(())
}

fn dispose(at: &Location, spec: &str) -> Result<()> {
    if let Some(c) = Client::running(&at.data_dir) {
        // The running wrun collects garbage itself: never two collectors
        // on one store.
        let v = c.delete(&format!("/v1/savepoints/{spec}"))?;
        println!(
            "disposed of savepoint {}; freed {} chunks",
            v["disposed"].as_str().unwrap_or(spec),
            v["freed-chunks"]
        );
        return Ok(());
    }
    let data = at.open(true)?;
    let registry = at.registry(&data)?;
    let (sp, freed) = crate::checkpoint::dispose(data.store().as_ref(), registry.as_ref(), spec)?;
    println!(
        "disposed of savepoint {}; freed {} chunks",
        sp.id,
        freed.len()
    );
    Ok(())
}

/// Bytes as JSON: a string when they are printable UTF-8, else hex; with
/// the number they encode when they are exactly one unsigned LEB128 varint
/// (a postcard `u64`, as the Rust SDK writes counters).
fn bytes_json(b: &[u8]) -> Value {
    let mut v = match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => json!({ "utf8": s }),
        _ => json!({ "hex": hex::encode(b) }),
    };
    if let Some(n) = varint(b) {
        v["u64"] = json!(n);
    }
    v
}

fn varint(b: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for (i, byte) in b.iter().enumerate() {
        if i >= 10 {
            return None;
        }
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (i + 1 == b.len()).then_some(n);
        }
    }
    None
}

fn inspect(at: &Location, spec: &str, dump: Option<&[String]>) -> Result<()> {
    let (sp, chunks) = lookup(at, spec)?;
    let store = match chunks {
        Some(s) => s,
        None => at.open(false)?.store(),
    };
    let m = &sp.checkpoint;
    let load = |o: &crate::checkpoint::OperatorStateRef| -> Result<KeyedState> {
        let mut state = KeyedState::new(
            m.max_parallelism,
            KeyGroupRange {
                start: 0,
                end: u16::try_from(m.max_parallelism).unwrap_or(u16::MAX),
            },
            StateLimits::default(),
        );
        for r in &o.key_groups {
            read_key_group(store.as_ref(), r, &mut state)
                .map_err(|e| anyhow::anyhow!("savepoint {}: operator '{}': {e}", sp.id, o.name))?;
        }
        Ok(state)
    };
    if let Some([uid, name]) = dump {
        let o = m
            .operators
            .iter()
            .find(|o| o.uid.as_deref() == Some(uid.as_str()) || o.name == *uid)
            .with_context(|| {
                format!(
                    "savepoint {} has no operator with uid '{uid}'; it has: {}",
                    sp.id,
                    m.operators
                        .iter()
                        .map(|o| o.uid.clone().unwrap_or_else(|| o.name.clone()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let state = load(o)?;
        let entries = state.dump(name).with_context(|| {
            format!(
                "operator '{uid}' has no state '{name}' in savepoint {}; it has: {}",
                sp.id,
                state
                    .names()
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let mut out = std::io::stdout().lock();
        for (key, value) in entries {
            if name == crate::state::TIMERS_STATE
                && let DumpValue::Map(m) = &value
            {
                // Timers, decoded: one line per timer.
                for (mk, _) in m {
                    let Some((domain, time, tag)) = crate::state::timers::decode(mk) else {
                        continue;
                    };
                    let domain = match domain {
                        crate::state::Domain::EventTime => "event-time",
                        crate::state::Domain::ProcessingTime => "processing-time",
                    };
                    let line = json!({ "key": bytes_json(&key), "time": time, "domain": domain, "tag": tag });
                    match writeln!(out, "{line}") {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                        Err(e) => return Err(e.into()),
                    }
                }
                continue;
            }
            let value = match value {
                DumpValue::Value(v) => bytes_json(&v),
                DumpValue::List(l) => Value::Array(l.iter().map(|i| bytes_json(i)).collect()),
                DumpValue::Map(m) => Value::Array(
                    m.iter()
                        .map(|(k, v)| json!({ "key": bytes_json(k), "value": bytes_json(v) }))
                        .collect(),
                ),
            };
            match writeln!(
                out,
                "{}",
                json!({ "key": bytes_json(&key), "value": value })
            ) {
                Ok(()) => {}
                // `| head`: the reader has what it wants.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(());
    }
    println!("savepoint   {}", sp.id);
    if let Some(n) = &sp.name {
        println!("name        {n}");
    }
    println!("job         {}", sp.job());
    println!("checkpoint  {}", m.id);
    println!("created     {} UTC", utc(sp.created_at_ms));
    println!("backend     {}", sp.backend);
    println!(
        "stopped     {}",
        match (sp.stopped, sp.drained) {
            (true, true) => "yes, drained",
            (true, false) => "yes",
            _ => "no",
        }
    );
    println!("max-parallelism {}", m.max_parallelism);
    println!("state       {} bytes", m.full_bytes);
    for o in &m.operators {
        println!();
        println!(
            "operator '{}'  uid {}  id {}",
            o.name,
            o.uid.as_deref().unwrap_or("(none)"),
            o.operator_id
        );
        println!("  parallelism  {}", o.parallelism);
        println!(
            "  module       {}",
            if o.module.is_empty() { "-" } else { &o.module }
        );
        if let Some((f, v)) = &o.state_format {
            println!("  state format {f}/{v}");
        }
        let kg_bytes: u64 = o.key_groups.iter().map(|k| k.total_bytes()).sum();
        println!(
            "  keyed state  {} key groups, {} bytes",
            o.key_groups.len(),
            kg_bytes
        );
        let state = load(o)?;
        let timers = crate::state::TimerQueue::restore(&state, usize::MAX)
            .map_err(|e| anyhow::anyhow!("savepoint {}: operator '{}': {e}", sp.id, o.name))?;
        for s in state
            .stats()
            .into_iter()
            .filter(|s| !crate::state::is_reserved(&s.name))
        {
            println!(
                "    {:<24} {:<6} {:>10} keys {:>12} bytes",
                s.name,
                s.kind.to_string(),
                s.keys,
                s.bytes
            );
        }
        if !timers.is_empty() {
            println!(
                "  timers       {} pending: {} in event time, {} in processing time (--dump {} {})",
                timers.len(),
                timers.count(crate::state::Domain::EventTime),
                timers.count(crate::state::Domain::ProcessingTime),
                o.uid.as_deref().unwrap_or(&o.name),
                crate::state::TIMERS_STATE
            );
        }
        if !o.operator_state.is_empty() {
            let b: u64 = o.operator_state.iter().map(|s| s.bytes).sum();
            println!(
                "  operator state from {} subtasks, {} bytes",
                o.operator_state.len(),
                b
            );
        }
    }
    if !m.sources.is_empty() {
        println!();
        for p in &m.sources {
            if p.splits.is_empty() {
                println!(
                    "source '{}'[{}] at position {}",
                    p.vertex, p.subtask, p.position
                );
            }
            for s in &p.splits {
                println!(
                    "source '{}'[{}] split {} next {}",
                    p.vertex, p.subtask, s.split, s.next
                );
            }
        }
    }
    if m.sinks.iter().any(|s| !s.staged.is_empty()) {
        println!();
        for s in m.sinks.iter().filter(|s| !s.staged.is_empty()) {
            let ids: Vec<String> = s.staged.iter().map(|g| g.checkpoint.to_string()).collect();
            let bytes: u64 = s.staged.iter().map(|g| g.bytes).sum();
            println!(
                "sink '{}'[{}] staged for checkpoint {}: {bytes} bytes",
                s.vertex,
                s.subtask,
                ids.join(", ")
            );
        }
    }
    Ok(())
}
