//! The job-wide sections of a manifest: `version`, `name`, parallelism,
//! `[batch]`, `[limits]`, `[checkpoint]`, `[restart]`, `[savepoints]`.

use super::{Ctx, MANIFEST_VERSION, Manifest, ManifestError};
use crate::blob::StateUrl;
use crate::connect::config::{at_least, resolve};
use crate::job::graph::Builder;
use crate::job::settings::{
    CheckpointSettings, Limits, RestartPolicy, SavepointBackend, SavepointSettings,
};
use toml::Spanned;

/// What the job-wide sections decide for the vertices.
pub(super) struct Job {
    /// The graph so far: name, limits and policies, no vertices.
    pub builder: Builder,
    /// A vertex's parallelism when it sets none.
    pub parallelism: u32,
    /// The job's key groups: no vertex may have more subtasks.
    pub max_parallelism: u32,
    /// How long a checkpoint may leave a sink's transaction open
    /// (interval + timeout + min pause), when the job checkpoints.
    pub checkpoint_span_ms: Option<u64>,
}

pub(super) fn job(
    ctx: &Ctx,
    m: &Manifest,
    default_parallelism: Option<u32>,
) -> Result<Job, ManifestError> {
    let at_least = |v, field, n| at_least(v, field, n).map_err(|e| ctx.field(e));
    if *m.version.get_ref() != MANIFEST_VERSION {
        return Err(ctx.err(
            m.version.span(),
            format!(
                "unsupported manifest `version` {}: this wrun reads version {MANIFEST_VERSION}",
                m.version.get_ref()
            ),
        ));
    }
    let name = m.name.get_ref().clone();
    if let Err(e) = crate::names::check(crate::names::NameKind::Job, &name) {
        return Err(ctx.err(m.name.span(), e.to_string()));
    }
    let max_parallelism = match &m.max_parallelism {
        Some(v) => {
            let n = at_least(v, "max-parallelism", 1)?;
            if n > 32768 {
                return Err(ctx.err(
                    v.span(),
                    format!("`max-parallelism` must be at most 32768, not {n}"),
                ));
            }
            n
        }
        None => 128,
    };
    if let Some(p) = default_parallelism
        && !(1..=max_parallelism).contains(&p)
    {
        return Err(ctx.whole(format!(
            "--parallelism {p} must be between 1 and the job's max-parallelism {max_parallelism}"
        )));
    }
    let parallelism = match (default_parallelism, &m.parallelism) {
        (Some(p), _) => p,
        (None, Some(v)) => at_least(v, "parallelism", 1)?,
        (None, None) => 1,
    };
    let (batch_size, linger_ms) = match &m.batch {
        Some(b) => (
            b.size
                .as_ref()
                .map(|s| at_least(s, "batch.size", 1))
                .transpose()?
                .unwrap_or(1024),
            b.linger_ms.unwrap_or(10),
        ),
        None => (1024, 10),
    };
    let mut builder = Builder::new(
        name,
        max_parallelism,
        batch_size as usize,
        linger_ms,
        limits(ctx, m)?,
    );
    let checkpoint = checkpoint(ctx, m)?;
    // How long a checkpoint may leave a sink's transaction open.
    let checkpoint_span_ms = checkpoint
        .as_ref()
        .map(|c| c.interval_ms + c.timeout_ms + c.min_pause_ms);
    // Without checkpoints a restart would replay from the start and
    // duplicate output, so by default only checkpointed jobs restart.
    let restart = match &m.restart {
        Some(r) => RestartPolicy {
            attempts: r.attempts,
            delay_ms: r.delay_ms.unwrap_or(1000),
            max_delay_ms: r.max_delay_ms.unwrap_or(30_000),
        },
        None => RestartPolicy {
            attempts: if checkpoint.is_some() { 3 } else { 0 },
            delay_ms: 1000,
            max_delay_ms: 30_000,
        },
    };
    builder.policies(checkpoint, restart, savepoints(ctx, m)?);
    builder.state(state(ctx, m)?);
    Ok(Job {
        builder,
        parallelism,
        max_parallelism,
        checkpoint_span_ms,
    })
}

fn limits(ctx: &Ctx, m: &Manifest) -> Result<Limits, ManifestError> {
    let at_least = |v: &Spanned<u64>, field| at_least(v, field, 1).map_err(|e| ctx.field(e));
    let mut limits = Limits::default();
    if let Some(l) = &m.limits {
        if let Some(v) = &l.memory_mb {
            limits.memory_mb = at_least(v, "limits.memory-mb")?;
        }
        if let Some(v) = &l.call_timeout_ms {
            limits.call_timeout_ms = at_least(v, "limits.call-timeout-ms")?;
        }
        if let Some(v) = &l.max_output_events {
            limits.max_output_events = at_least(v, "limits.max-output-events")?;
        }
        if let Some(v) = &l.max_timers {
            limits.max_timers = at_least(v, "limits.max-timers")?;
        }
    }
    Ok(limits)
}

fn checkpoint(ctx: &Ctx, m: &Manifest) -> Result<Option<CheckpointSettings>, ManifestError> {
    let Some(c) = &m.checkpoint else {
        return Ok(None);
    };
    let at_least = |v: &Spanned<u64>, field| at_least(v, field, 1).map_err(|e| ctx.field(e));
    Ok(Some(CheckpointSettings {
        interval_ms: at_least(&c.interval_ms, "checkpoint.interval-ms")?,
        timeout_ms: c
            .timeout_ms
            .as_ref()
            .map(|t| at_least(t, "checkpoint.timeout-ms"))
            .transpose()?
            .unwrap_or(60_000),
        min_pause_ms: c.min_pause_ms.unwrap_or(0),
        retain: c
            .retain
            .as_ref()
            .map(|r| at_least(r, "checkpoint.retain"))
            .transpose()?
            .unwrap_or(3) as usize,
        tolerable_failures: c.tolerable_failures.unwrap_or(3),
    }))
}

/// `[state] url`: where checkpoints live (a directory relative to the
/// manifest, or an object store).
fn state(ctx: &Ctx, m: &Manifest) -> Result<Option<StateUrl>, ManifestError> {
    let Some(s) = &m.state else {
        return Ok(None);
    };
    match StateUrl::parse(s.url.get_ref()) {
        Ok(StateUrl::Dir(p)) => Ok(Some(StateUrl::Dir(resolve(
            ctx.base_dir,
            &p.to_string_lossy(),
        )))),
        Ok(url) => Ok(Some(url)),
        Err(e) => Err(ctx.err(s.url.span(), format!("`state.url`: {}", e.detail))),
    }
}

fn savepoints(ctx: &Ctx, m: &Manifest) -> Result<SavepointSettings, ManifestError> {
    let mut savepoints = SavepointSettings::default();
    if let Some(s) = &m.savepoints {
        if let Some(b) = &s.backend {
            savepoints.backend = (*b.get_ref()).into();
        }
        if let Some(d) = &s.dir {
            if savepoints.backend == SavepointBackend::Memory {
                return Err(ctx.err(
                    d.span(),
                    "savepoints.dir is for the filesystem backend; remove it or set backend = \"filesystem\"",
                ));
            }
            savepoints.dir = Some(resolve(ctx.base_dir, d.get_ref()));
        }
    }
    Ok(savepoints)
}
