//! The job graph of a manifest: `[[source]]`, `[[operator]]`, `[[sink]]`
//! and `[[edge]]`. A source's or a sink's own fields are read by its kind's
//! connector (`connect::*::config`).

use super::settings::Job;
use super::{Ctx, EdgeSpec, JobGraph, ManifestError, OperatorSpec, line_at};
use crate::connect::config::{Fields, Section, at_least};
use crate::connect::{file, generator, kafka, nats};
use crate::job::graph::{self, Builder, ComponentRef, SinkKind, SourceKind, VertexKind};
use crate::job::settings::WatermarkStrategy;
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// What every source and sink has, whatever its kind.
#[derive(Debug, Deserialize)]
struct Head<K> {
    name: Spanned<String>,
    kind: Spanned<K>,
    parallelism: Option<Spanned<u32>>,
    watermark: Option<Spanned<WatermarkSpec>>,
}

/// A source's `watermark` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WatermarkSpec {
    out_of_orderness_ms: u64,
    idle_timeout_ms: Option<Spanned<u64>>,
    interval_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum SourceKindName {
    File,
    Generator,
    Stdin,
    Nats,
    Kafka,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum SinkKindName {
    File,
    Stdout,
    Discard,
    Nats,
    Kafka,
}

/// The graph being built, and where each vertex is in the manifest.
pub(super) struct Graph {
    b: Builder,
    job: JobInfo,
    /// Each vertex's `name`, by vertex index.
    spans: Vec<Range<usize>>,
}

struct JobInfo {
    parallelism: u32,
    max_parallelism: u32,
    checkpoint_span_ms: Option<u64>,
}

impl Graph {
    pub(super) fn new(job: Job) -> Graph {
        Graph {
            b: job.builder,
            job: JobInfo {
                parallelism: job.parallelism,
                max_parallelism: job.max_parallelism,
                checkpoint_span_ms: job.checkpoint_span_ms,
            },
            spans: Vec::new(),
        }
    }

    /// A vertex's parallelism: its own, else `default`; never above the
    /// job's max-parallelism.
    fn parallelism(
        &self,
        ctx: &Ctx,
        v: &Option<Spanned<u32>>,
        default: u32,
    ) -> Result<u32, ManifestError> {
        let p = match v {
            Some(v) => at_least(v, "parallelism", 1).map_err(|e| ctx.field(e))?,
            None => default,
        };
        let max = self.job.max_parallelism;
        if p > max {
            let span = v.as_ref().map(|v| v.span()).unwrap_or(0..0);
            return Err(ctx.err(span, format!("parallelism {p} is above max-parallelism {max}: a subtask needs at least one key group")));
        }
        Ok(p)
    }

    fn add(
        &mut self,
        ctx: &Ctx,
        name: &Spanned<String>,
        uid: Option<String>,
        parallelism: u32,
        kind: VertexKind,
    ) -> Result<(), ManifestError> {
        self.b
            .vertex(name.get_ref().clone(), uid, parallelism, kind)
            .map_err(|e| ctx.err(name.span(), e))?;
        self.spans.push(name.span());
        Ok(())
    }

    pub(super) fn sources(
        &mut self,
        ctx: &Ctx,
        tables: Option<&Spanned<DeValue>>,
    ) -> Result<(), ManifestError> {
        for table in tables_of(tables) {
            let (head, fields) = split::<SourceKindName>(ctx, &table)?;
            let kind = *head.kind.get_ref();
            let label = format!("{kind:?}").to_lowercase();
            let s = section(ctx, "source", &head, &label);
            let parallel = matches!(
                kind,
                SourceKindName::Generator | SourceKindName::Nats | SourceKindName::Kafka
            );
            let par = self.vertex_parallelism(ctx, &s, &head, parallel, 1)?;
            let source = match kind {
                SourceKindName::File => {
                    file::config::file_source(&fields, &s).map(SourceKind::File)
                }
                SourceKindName::Stdin => {
                    file::config::stdin_source(&fields, &s).map(SourceKind::Stdin)
                }
                SourceKindName::Generator => {
                    generator::config(&fields, &s).map(SourceKind::Generator)
                }
                SourceKindName::Nats => nats::config::source(&fields, &s).map(SourceKind::Nats),
                SourceKindName::Kafka => kafka::config::source(&fields, &s).map(SourceKind::Kafka),
            }
            .map_err(|e| ctx.field(e))?;
            let watermark = head
                .watermark
                .as_ref()
                .map(|w| watermark(ctx, w))
                .transpose()?;
            self.add(ctx, &head.name, None, par, VertexKind::Source(source))?;
            self.b.watermark(watermark);
        }
        Ok(())
    }

    pub(super) fn sinks(
        &mut self,
        ctx: &Ctx,
        tables: Option<&Spanned<DeValue>>,
    ) -> Result<(), ManifestError> {
        for table in tables_of(tables) {
            let (head, fields) = split::<SinkKindName>(ctx, &table)?;
            let kind = *head.kind.get_ref();
            let label = format!("{kind:?}").to_lowercase();
            let s = section(ctx, "sink", &head, &label);
            let parallel = matches!(kind, SinkKindName::Nats | SinkKindName::Kafka);
            let par = self.vertex_parallelism(ctx, &s, &head, parallel, 1)?;
            if let Some(w) = &head.watermark {
                return Err(ctx.field(s.err(
                    w.span(),
                    "`watermark` applies to sources: event time starts there",
                )));
            }
            let no_fields = |fields: &Fields| s.only(fields, &[]);
            let sink = match kind {
                SinkKindName::File => {
                    file::config::file_sink(&fields, &s).map(|path| SinkKind::File { path })
                }
                SinkKindName::Stdout => no_fields(&fields).map(|()| SinkKind::Stdout),
                SinkKindName::Discard => no_fields(&fields).map(|()| SinkKind::Discard),
                SinkKindName::Nats => nats::config::sink(&fields, &s).map(SinkKind::Nats),
                SinkKindName::Kafka => {
                    kafka::config::sink(&fields, &s, self.job.checkpoint_span_ms)
                        .map(SinkKind::Kafka)
                }
            }
            .map_err(|e| ctx.field(e))?;
            self.add(ctx, &head.name, None, par, VertexKind::Sink(sink))?;
        }
        Ok(())
    }

    /// A source's or sink's parallelism: only kinds read or written by
    /// several subtasks take one.
    fn vertex_parallelism<K>(
        &self,
        ctx: &Ctx,
        s: &Section,
        head: &Head<K>,
        parallel: bool,
        default: u32,
    ) -> Result<u32, ManifestError> {
        match (&head.parallelism, parallel) {
            (Some(p), false) => Err(ctx.field(s.err(
                p.span(),
                format!(
                    "`parallelism` does not apply to {}: one subtask reads or writes it",
                    s.kind
                ),
            ))),
            (p, _) => self.parallelism(ctx, p, default),
        }
    }

    pub(super) fn operators(
        &mut self,
        ctx: &Ctx,
        operators: &[OperatorSpec],
    ) -> Result<(), ManifestError> {
        for o in operators {
            let par = self.parallelism(ctx, &o.parallelism, self.job.parallelism)?;
            let component =
                ComponentRef::parse(o.component.get_ref(), ctx.base_dir).map_err(|e| {
                    ctx.err(
                        o.component.span(),
                        format!("operator '{}': {e}", o.name.get_ref()),
                    )
                })?;
            let config = match &o.config {
                Some(t) => serde_json::to_vec(t).map_err(|e| {
                    ctx.err(
                        o.name.span(),
                        format!(
                            "operator '{}': `config` cannot be encoded as JSON: {e}",
                            o.name.get_ref()
                        ),
                    )
                })?,
                None => b"{}".to_vec(),
            };
            let uid = match &o.uid {
                Some(u) => Some(self.uid(ctx, o, u)?),
                None => None,
            };
            self.add(
                ctx,
                &o.name,
                uid,
                par,
                VertexKind::Operator { component, config },
            )?;
        }
        Ok(())
    }

    /// An operator's `uid`, unique within the job.
    fn uid(
        &self,
        ctx: &Ctx,
        o: &OperatorSpec,
        u: &Spanned<String>,
    ) -> Result<String, ManifestError> {
        if u.get_ref().is_empty() || u.get_ref().len() > 256 {
            return Err(ctx.err(
                u.span(),
                format!("operator '{}': `uid` must be 1-256 bytes", o.name.get_ref()),
            ));
        }
        if let Some(other) = self.b.uid_owner(u.get_ref()) {
            let here = line_at(ctx.text, u.span().start);
            let there = line_at(ctx.text, self.spans[other].start);
            return Err(ctx.err(
                u.span(),
                format!(
                    "duplicate uid {:?}: operators '{}' (line {}) and '{}' (line {}) both use it; every uid must be unique within a job",
                    u.get_ref(),
                    self.b.vertex_name(other),
                    there.0,
                    o.name.get_ref(),
                    here.0,
                ),
            ));
        }
        Ok(u.get_ref().clone())
    }

    pub(super) fn edges(&mut self, ctx: &Ctx, edges: &[EdgeSpec]) -> Result<(), ManifestError> {
        for e in edges {
            let find = |end: &Spanned<String>, which: &str| {
                self.b.find(end.get_ref()).ok_or_else(|| {
                    ctx.err(
                        end.span(),
                        format!(
                            "edge `{which}` names unknown vertex '{}' (known: {})",
                            end.get_ref(),
                            self.b.names().join(", ")
                        ),
                    )
                })
            };
            // `from = "count.late"` reads named output `late` of `count`,
            // unless a vertex is called "count.late" itself.
            let (from, output) = match self.b.find(e.from.get_ref()) {
                Some(v) => (v, None),
                None => match e
                    .from
                    .get_ref()
                    .rsplit_once('.')
                    .filter(|(_, out)| !out.is_empty())
                    .and_then(|(v, out)| Some((self.b.find(v)?, out)))
                {
                    Some((v, out)) => (v, Some(out.to_string())),
                    None => (find(&e.from, "from")?, None),
                },
            };
            let to = find(&e.to, "to")?;
            self.b
                .edge(from, output, to, e.partition.as_ref().map(|p| *p.get_ref()))
                .map_err(|(field, m)| {
                    let span = match field {
                        graph::EdgeField::From => e.from.span(),
                        graph::EdgeField::To => e.to.span(),
                        graph::EdgeField::Partition => e
                            .partition
                            .as_ref()
                            .map(|p| p.span())
                            .unwrap_or(e.from.span()),
                    };
                    ctx.err(span, m)
                })?;
        }
        Ok(())
    }

    pub(super) fn finish(self, ctx: &Ctx) -> Result<JobGraph, ManifestError> {
        let spans = self.spans;
        self.b.finish().map_err(|(vertex, msg)| match vertex {
            Some(v) => ctx.err(spans[v].clone(), msg),
            None => ctx.whole(msg),
        })
    }
}

/// The tables of `[[source]]` or `[[sink]]` (their shape was checked when
/// the manifest was deserialized).
fn tables_of<'i>(v: Option<&Spanned<DeValue<'i>>>) -> Vec<Spanned<DeTable<'i>>> {
    let Some(DeValue::Array(items)) = v.map(|v| v.get_ref()) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| match i.get_ref() {
            DeValue::Table(t) => Some(Spanned::new(i.span(), t.clone())),
            _ => None,
        })
        .collect()
}

/// A source's or sink's table: the fields every vertex has, and the rest,
/// which its connector reads.
fn split<'i, K: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    table: &Spanned<DeTable<'i>>,
) -> Result<(Head<K>, Fields<'i>), ManifestError> {
    let head = Head::<K>::deserialize(toml::de::Deserializer::from(table.clone()))
        .map_err(|e| ctx.toml(&e))?;
    let mut rest = table.get_ref().clone();
    for k in ["name", "kind", "parallelism", "watermark"] {
        rest.remove(k);
    }
    Ok((head, Spanned::new(table.span(), rest)))
}

/// A source's watermark strategy from its `watermark` table.
fn watermark(ctx: &Ctx, w: &Spanned<WatermarkSpec>) -> Result<WatermarkStrategy, ManifestError> {
    let w = w.get_ref();
    let interval_ms = match &w.interval_ms {
        Some(i) => at_least(i, "watermark.interval-ms", 0).map_err(|e| ctx.field(e))?,
        None => 200,
    };
    let idle_timeout_ms = match &w.idle_timeout_ms {
        Some(t) => Some(at_least(t, "watermark.idle-timeout-ms", 1).map_err(|e| ctx.field(e))?),
        None => None,
    };
    Ok(WatermarkStrategy {
        out_of_orderness_ms: w.out_of_orderness_ms,
        idle_timeout_ms,
        interval_ms,
    })
}

fn section<'a, K>(ctx: &Ctx<'a>, what: &str, head: &Head<K>, kind: &str) -> Section<'a> {
    Section {
        what: format!("{what} '{}'", head.name.get_ref()),
        kind: format!("a {kind} {what}"),
        name_span: head.name.span(),
        base_dir: ctx.base_dir,
    }
}
