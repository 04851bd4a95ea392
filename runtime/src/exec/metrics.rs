//! Live counters of a running job, read by `GET /metrics` (Prometheus text
//! format, encoded by prometheus-client at scrape time). Subtasks add to per-vertex atomics once per batch (relaxed
//! ordering: a scrape may see one batch early or late, never a torn value);
//! the coordinator sets the checkpoint gauges. A job's metrics live as long
//! as its [`super::JobControl`], so counters survive restarts, as
//! Prometheus expects of counters.

use super::load::{LoadTotals, SubtaskLoad};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the per-batch latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];

/// Upper bounds (seconds) of the end-to-end latency histogram's buckets as
/// `/metrics` shows them (finer buckets are kept for percentiles).
pub const END_TO_END_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Microseconds below this are counted exactly; above, each power of two
/// is split into `SUB` buckets (at most 1/16 = 6% relative error).
const SUB: u64 = 16;
/// Buckets: exact ones, then `SUB` per power of two up to 2^40 µs.
const E2E_BUCKETS: usize = (SUB as usize) * 38;

/// Where events' source-to-sink latencies fall, in log-linear buckets of
/// microseconds, so percentiles can be read with a bounded relative error.
#[derive(Debug)]
pub struct LatencyHistogram {
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

/// Percentiles of a [`LatencyHistogram`], in milliseconds (each the upper
/// edge of its bucket).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    /// Events measured.
    pub events: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The largest seen.
    pub max_ms: f64,
}

fn e2e_bucket(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let e = 63 - u64::from(us.leading_zeros()); // floor(log2), >= 4
    let sub = (us >> (e - 4)) & (SUB - 1);
    (SUB + (e - 4) * SUB + sub).min(E2E_BUCKETS as u64 - 1) as usize
}

/// The exclusive upper edge of bucket `i`, in µs.
fn e2e_upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i + 1;
    }
    let e = (i - SUB) / SUB + 4;
    let sub = (i - SUB) % SUB;
    (SUB + sub + 1) << (e - 4)
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: (0..E2E_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// `n` events took `d` each.
    pub fn record(&self, d: Duration, n: u64) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[e2e_bucket(us)].fetch_add(n, Relaxed);
        self.sum_us.fetch_add(us.saturating_mul(n), Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    fn snapshot(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Relaxed)).collect()
    }

    /// Percentiles over every histogram in `hs` together; `None` when
    /// nothing was measured.
    pub fn summary<'a>(
        hs: impl IntoIterator<Item = &'a LatencyHistogram>,
    ) -> Option<LatencySummary> {
        let mut counts = vec![0u64; E2E_BUCKETS];
        let mut max = 0u64;
        for h in hs {
            for (a, b) in counts.iter_mut().zip(h.snapshot()) {
                *a += b;
            }
            max = max.max(h.max_us.load(Relaxed));
        }
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let quantile = |q: f64| {
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return (e2e_upper(i).min(max.max(1))) as f64 / 1000.0;
                }
            }
            max as f64 / 1000.0
        };
        Some(LatencySummary {
            events: total,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            max_ms: max as f64 / 1000.0,
        })
    }

    /// Counts at or below each of `bounds` (seconds), not cumulative.
    fn coarse(&self, bounds: &[f64]) -> (Vec<(f64, u64)>, u64, f64) {
        let mut out: Vec<(f64, u64)> = bounds.iter().map(|b| (*b, 0)).collect();
        let mut total = 0;
        for (i, c) in self.snapshot().into_iter().enumerate() {
            total += c;
            let upper_s = e2e_upper(i) as f64 / 1e6;
            if let Some(slot) = out.iter_mut().find(|(b, _)| upper_s <= *b + 1e-12) {
                slot.1 += c;
            }
        }
        (out, total, self.sum_us.load(Relaxed) as f64 / 1e6)
    }
}

/// Counters of one vertex (summed over its subtasks).
#[derive(Debug)]
pub struct VertexMetrics {
    /// The vertex.
    pub name: String,
    /// `source`, `operator` or `sink`.
    pub kind: &'static str,
    records_in: AtomicU64,
    records_out: AtomicU64,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then +Inf.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
    traps: AtomicU64,
    alignment_last_ns: AtomicU64,
    alignment_sum_ns: AtomicU64,
    checkpoint_bytes: AtomicU64,
    /// Bytes of keys and values a source read or a sink received.
    bytes: AtomicU64,
    /// Records the system holds beyond what a source read, per split,
    /// where the system says (a NATS source).
    split_lag: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Events emitted to each named output of an operator.
    named_out: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Per subtask of a connector: connected to its system.
    connected: std::sync::Mutex<std::collections::BTreeMap<u32, bool>>,
    /// Per subtask, its watermark (`None`: idle), once it has one.
    watermarks: std::sync::Mutex<std::collections::BTreeMap<u32, Option<i64>>>,
    /// A source's watermark per split (`None`: no event with a timestamp
    /// yet).
    split_watermarks: std::sync::Mutex<std::collections::BTreeMap<String, Option<i64>>>,
    /// Source to this sink, per event (sinks only).
    pub end_to_end: LatencyHistogram,
    /// Per subtask: where its time goes, how full its input queue is.
    subtasks: Vec<Arc<SubtaskLoad>>,
    /// The state format an operator declared (`name` v`version`), once a
    /// subtask opened.
    state_format: std::sync::Mutex<Option<String>>,
}

impl VertexMetrics {
    fn new(name: &str, kind: &'static str, parallelism: u32) -> VertexMetrics {
        VertexMetrics {
            name: name.to_string(),
            kind,
            subtasks: (0..parallelism.max(1)).map(|_| Arc::default()).collect(),
            state_format: Default::default(),
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            latency: Default::default(),
            latency_sum_ns: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            alignment_last_ns: AtomicU64::new(0),
            alignment_sum_ns: AtomicU64::new(0),
            checkpoint_bytes: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            split_lag: Default::default(),
            named_out: Default::default(),
            connected: Default::default(),
            watermarks: Default::default(),
            split_watermarks: Default::default(),
            end_to_end: LatencyHistogram::default(),
        }
    }

    /// Subtask `i`'s load counters (a detached one past the parallelism).
    pub fn subtask(&self, i: u32) -> Arc<SubtaskLoad> {
        self.subtasks.get(i as usize).cloned().unwrap_or_default()
    }

    /// The operator declared state format `f`.
    pub fn set_state_format(&self, f: String) {
        *self.state_format.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// The state format the operator declared, once known.
    pub fn state_format(&self) -> Option<String> {
        self.state_format
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every subtask's load counters now, in subtask order.
    pub fn loads(&self) -> Vec<LoadTotals> {
        self.subtasks.iter().map(|l| l.totals()).collect()
    }

    /// The operator's state in the last completed checkpoint took `bytes`.
    pub fn checkpoint_size(&self, bytes: u64) {
        self.checkpoint_bytes.store(bytes, Relaxed);
    }

    /// Events received.
    pub fn add_in(&self, n: usize) {
        self.records_in.fetch_add(n as u64, Relaxed);
    }

    /// Events emitted.
    pub fn add_out(&self, n: usize) {
        self.records_out.fetch_add(n as u64, Relaxed);
    }

    /// Events emitted to named output `output` (also counted as out).
    pub fn add_named_out(&self, output: &str, n: usize) {
        let mut m = self.named_out.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(output) {
            Some(c) => *c += n as u64,
            None => {
                m.insert(output.to_string(), n as u64);
            }
        }
    }

    /// Events emitted per named output.
    pub fn named_out(&self) -> Vec<(String, u64)> {
        let m = self.named_out.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// One batch took `d` in the operator.
    pub fn batch(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[i].fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The guest trapped.
    pub fn trap(&self) {
        self.traps.fetch_add(1, Relaxed);
    }

    /// Barrier alignment took `d` at one subtask.
    pub fn alignment(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.alignment_last_ns.store(ns, Relaxed);
        self.alignment_sum_ns.fetch_add(ns, Relaxed);
    }

    /// A connector read or received `n` bytes of keys and values.
    pub fn add_bytes(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Relaxed);
    }

    /// Bytes a connector read or received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// A source's lag per split, as its system last said.
    pub fn set_lag(&self, lag: Vec<(String, u64)>) {
        if lag.is_empty() {
            return;
        }
        let mut m = self.split_lag.lock().unwrap_or_else(|p| p.into_inner());
        m.extend(lag);
    }

    /// Subtask `subtask`'s connection state, where its connector has one.
    pub fn set_connected(&self, subtask: u32, up: Option<bool>) {
        if let Some(up) = up {
            let mut m = self.connected.lock().unwrap_or_else(|p| p.into_inner());
            m.insert(subtask, up);
        }
    }

    /// The connection state per subtask (connectors that have one).
    pub fn connected(&self) -> Vec<(u32, bool)> {
        let m = self.connected.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Subtask `subtask` passed on watermark `w`.
    pub(super) fn set_watermark(&self, subtask: u32, w: super::watermark::Watermark) {
        let w = match w {
            super::watermark::Watermark::At(t) => Some(t),
            super::watermark::Watermark::Idle => None,
        };
        let mut m = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(subtask, w);
    }

    /// Per subtask that has one, its watermark (`None`: idle).
    pub fn watermarks(&self) -> Vec<(u32, Option<i64>)> {
        let m = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// A source subtask's watermark per split.
    pub(super) fn set_split_watermarks(&self, splits: Vec<(String, Option<i64>)>) {
        let mut m = self
            .split_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.extend(splits);
    }

    /// A source's watermark per split.
    pub fn split_watermarks(&self) -> Vec<(String, Option<i64>)> {
        let m = self
            .split_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// The last lag per split.
    pub fn lag(&self) -> Vec<(String, u64)> {
        let m = self.split_lag.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Events received so far.
    pub fn records_in(&self) -> u64 {
        self.records_in.load(Relaxed)
    }

    /// Events emitted so far.
    pub fn records_out(&self) -> u64 {
        self.records_out.load(Relaxed)
    }

    /// Traps so far.
    pub fn traps(&self) -> u64 {
        self.traps.load(Relaxed)
    }
}

/// Counters of one job.
#[derive(Debug)]
pub struct JobMetrics {
    /// The job.
    pub job: String,
    /// Per vertex, in graph order.
    pub vertices: Vec<VertexMetrics>,
    restarts: AtomicU64,
    restart_backoff_ms: AtomicU64,
    checkpoints_completed: AtomicU64,
    checkpoints_failed: AtomicU64,
    last_checkpoint_id: AtomicU64,
    last_checkpoint_duration_ms: AtomicU64,
    last_checkpoint_bytes: AtomicU64,
    last_checkpoint_new_bytes: AtomicU64,
}

impl JobMetrics {
    /// Zeroed counters for a job's vertices (`(name, kind)`), one subtask
    /// each.
    pub fn new(job: &str, vertices: &[(String, &'static str)]) -> JobMetrics {
        let vs: Vec<_> = vertices.iter().map(|(n, k)| (n.clone(), *k, 1)).collect();
        JobMetrics::with_subtasks(job, &vs)
    }

    /// Zeroed counters for a job's vertices (`(name, kind, parallelism)`).
    pub fn with_subtasks(job: &str, vertices: &[(String, &'static str, u32)]) -> JobMetrics {
        JobMetrics {
            job: job.to_string(),
            vertices: vertices
                .iter()
                .map(|(n, k, p)| VertexMetrics::new(n, k, *p))
                .collect(),
            restarts: AtomicU64::new(0),
            restart_backoff_ms: AtomicU64::new(0),
            checkpoints_completed: AtomicU64::new(0),
            checkpoints_failed: AtomicU64::new(0),
            last_checkpoint_id: AtomicU64::new(0),
            last_checkpoint_duration_ms: AtomicU64::new(0),
            last_checkpoint_bytes: AtomicU64::new(0),
            last_checkpoint_new_bytes: AtomicU64::new(0),
        }
    }

    /// Zeroed counters for `graph`'s vertices.
    pub fn for_graph(graph: &crate::job::JobGraph) -> JobMetrics {
        let vertices: Vec<(String, &'static str, u32)> = graph
            .vertices
            .iter()
            .map(|v| {
                let kind = match v.kind {
                    crate::job::VertexKind::Source(_) => "source",
                    crate::job::VertexKind::Sink(_) => "sink",
                    crate::job::VertexKind::Operator { .. } => "operator",
                };
                (v.name.clone(), kind, v.parallelism)
            })
            .collect();
        JobMetrics::with_subtasks(&graph.name, &vertices)
    }

    /// A vertex's counters.
    pub fn vertex(&self, v: usize) -> &VertexMetrics {
        &self.vertices[v]
    }

    /// The job restarted after a failure.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Relaxed);
    }

    /// The job waits `delay` before its next attempt (zero: it is not
    /// waiting).
    pub fn restart_backoff(&self, delay: std::time::Duration) {
        self.restart_backoff_ms
            .store(delay.as_millis() as u64, Relaxed);
    }

    /// A checkpoint completed.
    pub fn checkpoint_completed(&self, id: u64, duration_ms: u64, bytes: u64, new_bytes: u64) {
        self.checkpoints_completed.fetch_add(1, Relaxed);
        self.last_checkpoint_id.store(id, Relaxed);
        self.last_checkpoint_duration_ms.store(duration_ms, Relaxed);
        self.last_checkpoint_bytes.store(bytes, Relaxed);
        self.last_checkpoint_new_bytes.store(new_bytes, Relaxed);
    }

    /// A checkpoint failed or was abandoned.
    pub fn checkpoint_failed(&self) {
        self.checkpoints_failed.fetch_add(1, Relaxed);
    }

    /// Checkpoints completed so far.
    pub fn checkpoints_completed(&self) -> u64 {
        self.checkpoints_completed.load(Relaxed)
    }

    /// Checkpoints failed or abandoned so far.
    pub fn checkpoints_failed(&self) -> u64 {
        self.checkpoints_failed.load(Relaxed)
    }
}

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Renders the metrics of `jobs` in the Prometheus text format (0.0.4).
pub fn render(jobs: &[Arc<JobMetrics>]) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(jobs.to_vec())));
    let mut out = String::new();
    // Writing to a String cannot fail, and `Scrape` adds no failure of its own.
    prometheus_text::encode(&mut out, &registry).expect("metrics encode into a String");
    out
}

/// The jobs of one scrape: reads their atomics while the text is encoded,
/// so the hot path never takes a lock (prometheus-client's own `Histogram`
/// would take one per observation).
#[derive(Debug)]
struct Scrape(Vec<Arc<JobMetrics>>);

/// `(job, operator, kind)` labels of one vertex.
type VertexLabels<'a> = [(&'static str, &'a str); 3];

/// Which vertices a per-vertex family covers.
fn all(_: &VertexMetrics) -> bool {
    true
}
fn operators(v: &VertexMetrics) -> bool {
    v.kind == "operator"
}
fn sinks(v: &VertexMetrics) -> bool {
    v.kind == "sink"
}

fn not_sources(v: &VertexMetrics) -> bool {
    v.kind != "source"
}

fn ns_to_secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl Scrape {
    /// One family of per-vertex samples, `sample` writing one vertex's.
    /// `wrun_watermark_ms`, its lag and idleness per subtask, and a
    /// source's per split.
    fn watermarks(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let now = crate::time::unix_ms() as i64;
        fn subtasks(j: &JobMetrics) -> Vec<(&VertexMetrics, u32, Option<i64>)> {
            j.vertices
                .iter()
                .flat_map(|v| v.watermarks().into_iter().map(move |(s, w)| (v, s, w)))
                .collect()
        }
        /// Name, help, and the value at (now, watermark), if any.
        type Family = (
            &'static str,
            &'static str,
            fn(i64, Option<i64>) -> Option<i64>,
        );
        let families: [Family; 3] = [
            (
                "wrun_watermark_ms",
                "A subtask's event-time watermark (ms since the Unix epoch; 9223372036854775807 once its input has ended); absent while it is idle.",
                |_, w| w,
            ),
            (
                "wrun_watermark_lag_ms",
                "How far a subtask's watermark is behind the wall clock (ms); absent while idle or after the end of input.",
                |now, w| {
                    w.filter(|w| *w != super::watermark::END_OF_TIME)
                        .map(|w| now.saturating_sub(w))
                },
            ),
            (
                "wrun_watermark_idle",
                "1 while a subtask is idle (every input idle: it holds no watermark back), else 0.",
                |_, w| Some(i64::from(w.is_none())),
            ),
        ];
        for (name, help, value) in families {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for j in &self.0 {
                for (v, subtask, w) in subtasks(j) {
                    let Some(x) = value(now, w) else { continue };
                    let s = subtask.to_string();
                    let labels = [
                        ("job", j.job.as_str()),
                        ("operator", v.name.as_str()),
                        ("kind", v.kind),
                        ("subtask", s.as_str()),
                    ];
                    family.encode_family(&labels)?.encode_gauge(&x)?;
                }
            }
        }
        let mut family = e.encode_descriptor(
            "wrun_source_split_watermark_ms",
            "A source's watermark per split (Kafka partition, NATS subject filter, file): its highest event time less the out-of-orderness bound; absent before its first event.",
            None,
            MetricType::Gauge,
        )?;
        for j in &self.0 {
            for v in j.vertices.iter().filter(|v| v.kind == "source") {
                for (split, w) in v.split_watermarks() {
                    let Some(w) = w else { continue };
                    let labels = [
                        ("job", j.job.as_str()),
                        ("operator", v.name.as_str()),
                        ("split", split.as_str()),
                    ];
                    family.encode_family(&labels)?.encode_gauge(&w)?;
                }
            }
        }
        Ok(())
    }

    /// Where each subtask's time goes, and how full its input queue and
    /// its output are.
    /// Busy time is the rest: `1 - rate(idle) - rate(backpressured)`.
    fn loads(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        type Family = (
            &'static str,
            &'static str,
            MetricType,
            fn(&LoadTotals) -> f64,
        );
        let families: [Family; 4] = [
            (
                "wrun_subtask_idle_seconds",
                "Time a subtask spent waiting for input (an empty input queue; a source whose system had nothing). Busy time is the rest: 1 - rate(idle) - rate(backpressured).",
                MetricType::Counter,
                |t| ns_to_secs(t.idle_ns),
            ),
            (
                "wrun_subtask_backpressured_seconds",
                "Time a subtask spent waiting to hand a batch to a downstream subtask whose input queue was full.",
                MetricType::Counter,
                |t| ns_to_secs(t.backpressured_ns),
            ),
            (
                "wrun_subtask_input_queue_fill",
                "How full a subtask's input queue is, 0 to 1 (sources have none: 0). Near 1: the subtask is the bottleneck, or waits on one downstream.",
                MetricType::Gauge,
                LoadTotals::queue_fill,
            ),
            (
                "wrun_subtask_output_fill",
                "How full a subtask's output is, 0 to 1: the fullest input queue of the subtasks it sends to (sinks send nowhere: 0). Near 1 with backpressured time: a subtask downstream is the bottleneck.",
                MetricType::Gauge,
                |t| t.output_fill,
            ),
        ];
        for (name, help, kind, value) in families {
            let mut family = e.encode_descriptor(name, help, None, kind)?;
            for j in &self.0 {
                for v in &j.vertices {
                    for (s, t) in v.loads().iter().enumerate() {
                        let s = s.to_string();
                        let labels = [
                            ("job", j.job.as_str()),
                            ("operator", v.name.as_str()),
                            ("kind", v.kind),
                            ("subtask", s.as_str()),
                        ];
                        let mut f = family.encode_family(&labels)?;
                        if matches!(kind, MetricType::Counter) {
                            f.encode_counter::<NoLabelSet, _, u64>(&value(t), None)?;
                        } else {
                            f.encode_gauge(&value(t))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn per_vertex(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help, kind): (&str, &str, MetricType),
        covers: fn(&VertexMetrics) -> bool,
        sample: impl Fn(&mut MetricEncoder, &VertexMetrics) -> fmt::Result,
    ) -> fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for j in &self.0 {
            for v in j.vertices.iter().filter(|v| covers(v)) {
                let labels: VertexLabels =
                    [("job", &j.job), ("operator", &v.name), ("kind", v.kind)];
                sample(&mut family.encode_family(&labels)?, v)?;
            }
        }
        Ok(())
    }

    /// One family of per-job samples.
    fn per_job(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help, kind): (&str, &str, MetricType),
        sample: impl Fn(&mut MetricEncoder, &JobMetrics) -> fmt::Result,
    ) -> fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for j in &self.0 {
            sample(&mut family.encode_family(&[("job", &j.job)])?, j)?;
        }
        Ok(())
    }
}

fn counter(m: &mut MetricEncoder, v: impl EncodeCounterValue) -> fmt::Result {
    m.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

impl Collector for Scrape {
    // Counters are named without `_total`: the encoder appends it to the
    // samples and their HELP/TYPE lines.
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        use MetricType::{Counter, Gauge, Histogram};
        let e = &mut e;
        self.per_vertex(
            e,
            (
                "wrun_records_in",
                "Events received by a vertex (all subtasks).",
                Counter,
            ),
            all,
            |m, v| counter(m, v.records_in()),
        )?;
        self.per_vertex(
            e,
            (
                "wrun_records_out",
                "Events emitted by a vertex (all subtasks).",
                Counter,
            ),
            all,
            |m, v| counter(m, v.records_out()),
        )?;
        self.per_vertex(
            e,
            (
                "wrun_connector_bytes",
                "Bytes of event keys and values a source read or a sink received (all subtasks).",
                Counter,
            ),
            |v| v.kind != "operator",
            |m, v| counter(m, v.bytes()),
        )?;
        {
            let mut family = e.encode_descriptor(
                "wrun_named_output_records",
                "Events an operator emitted to one of its named outputs (all subtasks), such as the late events of a window.",
                None,
                Counter,
            )?;
            for j in &self.0 {
                for v in j.vertices.iter().filter(|v| v.kind == "operator") {
                    for (output, n) in v.named_out() {
                        let labels = [
                            ("job", j.job.as_str()),
                            ("operator", v.name.as_str()),
                            ("output", output.as_str()),
                        ];
                        counter(&mut family.encode_family(&labels)?, n)?;
                    }
                }
            }
        }
        {
            let mut family = e.encode_descriptor(
                "wrun_source_lag_records",
                "Records a source's system holds beyond what the source has read, per split, as the system last said (NATS JetStream: the consumer's pending count; Kafka: the high watermark minus the consumer's position, from the client's statistics every 5 s).",
                None,
                Gauge,
            )?;
            for j in &self.0 {
                for v in j.vertices.iter().filter(|v| v.kind == "source") {
                    for (split, lag) in v.lag() {
                        let labels = [
                            ("job", j.job.as_str()),
                            ("operator", v.name.as_str()),
                            ("split", split.as_str()),
                        ];
                        family.encode_family(&labels)?.encode_gauge(&lag)?;
                    }
                }
            }
        }
        self.watermarks(e)?;
        self.loads(e)?;
        {
            let mut family = e.encode_descriptor(
                "wrun_connector_connected",
                "1 while a connector subtask (Kafka, NATS) is connected to its system, 0 while it has lost the connection and is reconnecting.",
                None,
                Gauge,
            )?;
            for j in &self.0 {
                for v in &j.vertices {
                    for (subtask, up) in v.connected() {
                        let s = subtask.to_string();
                        let labels = [
                            ("job", j.job.as_str()),
                            ("operator", v.name.as_str()),
                            ("subtask", s.as_str()),
                        ];
                        family
                            .encode_family(&labels)?
                            .encode_gauge(&i64::from(up))?;
                    }
                }
            }
        }
        self.per_vertex(
            e,
            (
                "wrun_batch_latency_seconds",
                "Time an operator took to process one batch.",
                Histogram,
            ),
            operators,
            |m, v| {
                // Per-bucket counts (the encoder makes them cumulative);
                // the overflow bucket is only in the total.
                let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                    .iter()
                    .zip(&v.latency)
                    .map(|(b, n)| (*b, n.load(Relaxed)))
                    .collect();
                let count = v.latency.iter().map(|n| n.load(Relaxed)).sum();
                let sum = ns_to_secs(v.latency_sum_ns.load(Relaxed));
                m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
            },
        )?;
        self.per_vertex(
            e,
            (
                "wrun_end_to_end_latency_seconds",
                "Time from a source to this sink, per event: the age of the oldest event of each batch that reached the sink, counted for every event of that batch.",
                Histogram,
            ),
            sinks,
            |m, v| {
                let (buckets, count, sum) = v.end_to_end.coarse(&END_TO_END_BUCKETS);
                m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
            },
        )?;
        self.per_vertex(
            e,
            (
                "wrun_guest_traps",
                "Traps of an operator's guest code (each fails its subtask).",
                Counter,
            ),
            operators,
            |m, v| counter(m, v.traps()),
        )?;
        self.per_vertex(
            e,
            (
                "wrun_checkpoint_last_alignment_seconds",
                "Barrier alignment time of the last checkpoint at a vertex (one subtask's).",
                Gauge,
            ),
            not_sources,
            |m, v| m.encode_gauge(&ns_to_secs(v.alignment_last_ns.load(Relaxed))),
        )?;
        self.per_vertex(
            e,
            (
                "wrun_checkpoint_alignment_seconds",
                "Barrier alignment time at a vertex, summed over subtasks and checkpoints.",
                Counter,
            ),
            not_sources,
            |m, v| counter(m, ns_to_secs(v.alignment_sum_ns.load(Relaxed))),
        )?;
        self.per_vertex(
            e,
            (
                "wrun_checkpoint_state_size_bytes",
                "Bytes of an operator's state (keyed and non-keyed) in the last completed checkpoint.",
                Gauge,
            ),
            operators,
            |m, v| m.encode_gauge(&v.checkpoint_bytes.load(Relaxed)),
        )?;
        self.per_job(
            e,
            ("wrun_job_restarts", "Restarts after a failure.", Counter),
            |m, j| counter(m, j.restarts.load(Relaxed)),
        )?;
        self.per_job(
            e,
            (
                "wrun_job_restart_backoff_seconds",
                "While the job waits to restart after a failure: the wait before its next attempt (0 otherwise).",
                Gauge,
            ),
            |m, j| m.encode_gauge(&(j.restart_backoff_ms.load(Relaxed) as f64 / 1000.0)),
        )?;
        self.per_job(
            e,
            (
                "wrun_checkpoints_completed",
                "Checkpoints completed.",
                Counter,
            ),
            |m, j| counter(m, j.checkpoints_completed()),
        )?;
        self.per_job(
            e,
            (
                "wrun_checkpoints_failed",
                "Checkpoints that failed or were abandoned.",
                Counter,
            ),
            |m, j| counter(m, j.checkpoints_failed()),
        )?;
        self.per_job(
            e,
            (
                "wrun_last_checkpoint_id",
                "ID of the last completed checkpoint (0: none yet).",
                Gauge,
            ),
            |m, j| m.encode_gauge(&j.last_checkpoint_id.load(Relaxed)),
        )?;
        self.per_job(
            e,
            (
                "wrun_last_checkpoint_duration_seconds",
                "Trigger to completion of the last completed checkpoint.",
                Gauge,
            ),
            |m, j| m.encode_gauge(&(j.last_checkpoint_duration_ms.load(Relaxed) as f64 / 1e3)),
        )?;
        self.per_job(
            e,
            (
                "wrun_last_checkpoint_size_bytes",
                "Bytes of state the last completed checkpoint references.",
                Gauge,
            ),
            |m, j| m.encode_gauge(&j.last_checkpoint_bytes.load(Relaxed)),
        )?;
        self.per_job(
            e,
            (
                "wrun_last_checkpoint_new_bytes",
                "Bytes the last completed checkpoint wrote (incremental).",
                Gauge,
            ),
            |m, j| m.encode_gauge(&j.last_checkpoint_new_bytes.load(Relaxed)),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_within_the_bucket_error() {
        let h = LatencyHistogram::default();
        // 1..=1000 ms, once each.
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms), 1);
        }
        let s = LatencyHistogram::summary([&h]).unwrap();
        assert_eq!(s.events, 1000);
        assert!((500.0..=500.0 * 1.07).contains(&s.p50_ms), "{s:?}");
        assert!((990.0..=1000.0).contains(&s.p99_ms), "{s:?}");
        assert_eq!(s.max_ms, 1000.0);
        // Weighted: 99 events at 1 ms, 1 at 2 s.
        let h = LatencyHistogram::default();
        h.record(Duration::from_millis(1), 99);
        h.record(Duration::from_secs(2), 1);
        let s = LatencyHistogram::summary([&h]).unwrap();
        assert!(s.p99_ms <= 1.07, "{s:?}");
        assert!(LatencyHistogram::summary([&LatencyHistogram::default()]).is_none());
        for us in [0u64, 15, 16, 17, 1000, 123_456_789] {
            let i = e2e_bucket(us);
            assert!(e2e_upper(i) > us, "{us}");
            assert!(i == 0 || e2e_upper(i - 1) <= us, "{us}");
        }
    }

    #[test]
    fn renders_counters_histograms_and_escaped_labels() {
        let m = Arc::new(JobMetrics::new(
            "j\"1",
            &[("src".into(), "source"), ("op".into(), "operator")],
        ));
        m.vertex(0).add_out(5);
        m.vertex(1).add_in(5);
        m.vertex(1).batch(Duration::from_micros(300));
        m.vertex(1).batch(Duration::from_secs(3));
        m.vertex(1).trap();
        m.vertex(1).checkpoint_size(4096);
        m.checkpoint_completed(7, 1500, 100, 10);
        let text = render(&[m]);
        assert!(
            text.contains(
                "wrun_records_out_total{job=\"j\\\"1\",operator=\"src\",kind=\"source\"} 5"
            ),
            "{text}"
        );
        assert!(text.contains("wrun_batch_latency_seconds_bucket{job=\"j\\\"1\",operator=\"op\",kind=\"operator\",le=\"0.00025\"} 0"), "{text}");
        assert!(text.contains("le=\"0.0005\"} 1"), "{text}");
        assert!(text.contains("le=\"1\"} 1"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2"), "{text}");
        assert!(
            text.contains(
                "wrun_guest_traps_total{job=\"j\\\"1\",operator=\"op\",kind=\"operator\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("wrun_last_checkpoint_id{job=\"j\\\"1\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "wrun_checkpoint_state_size_bytes{job=\"j\\\"1\",operator=\"op\",kind=\"operator\"} 4096"
            ),
            "{text}"
        );
        assert!(
            text.contains("wrun_last_checkpoint_duration_seconds{job=\"j\\\"1\"} 1.5"),
            "{text}"
        );
        for family in [
            "# HELP wrun_records_in_total Events received by a vertex (all subtasks).\n\
             # TYPE wrun_records_in_total counter\n",
            "# TYPE wrun_checkpoint_alignment_seconds_total counter\n",
            "# TYPE wrun_batch_latency_seconds histogram\n",
            "# TYPE wrun_last_checkpoint_id gauge\n",
        ] {
            assert!(text.contains(family), "{family}: {text}");
        }
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {base} "))
                    || text.contains(&format!("# TYPE {name} ")),
                "{line}"
            );
        }
    }

    #[test]
    fn histogram_lines_and_label_escapes() {
        let m = Arc::new(JobMetrics::new("j", &[("a\\b\nc".into(), "operator")]));
        m.vertex(0).batch(Duration::from_micros(50));
        m.vertex(0).batch(Duration::from_millis(20));
        m.vertex(0).batch(Duration::from_secs(2));
        let text = render(&[m]);
        let l = r#"job="j",operator="a\\b\nc",kind="operator""#;
        let mut want = String::new();
        for (le, n) in [
            ("0.0001", 1),
            ("0.00025", 1),
            ("0.0005", 1),
            ("0.001", 1),
            ("0.0025", 1),
            ("0.005", 1),
            ("0.01", 1),
            ("0.05", 2),
            ("0.25", 2),
            ("1", 2),
            ("+Inf", 3),
        ] {
            want += &format!("wrun_batch_latency_seconds_bucket{{{l},le=\"{le}\"}} {n}\n");
        }
        want += &format!("wrun_batch_latency_seconds_sum{{{l}}} 2.02005\n");
        want += &format!("wrun_batch_latency_seconds_count{{{l}}} 3\n");
        assert!(text.contains(&want), "{want}\n---\n{text}");
        assert!(
            text.contains(&format!("wrun_checkpoint_last_alignment_seconds{{{l}}} 0")),
            "{text}"
        );
    }
}
