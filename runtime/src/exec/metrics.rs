//! Live counters of a running job, read by `GET /metrics` (Prometheus text
//! format). Subtasks add to per-vertex atomics once per batch (relaxed
//! ordering: a scrape may see one batch early or late, never a torn value);
//! the coordinator sets the checkpoint gauges. A job's metrics live as long
//! as its [`super::JobControl`], so counters survive restarts, as
//! Prometheus expects of counters.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the per-batch latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];

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
}

impl VertexMetrics {
    fn new(name: &str, kind: &'static str) -> VertexMetrics {
        VertexMetrics {
            name: name.to_string(),
            kind,
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            latency: Default::default(),
            latency_sum_ns: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            alignment_last_ns: AtomicU64::new(0),
            alignment_sum_ns: AtomicU64::new(0),
            checkpoint_bytes: AtomicU64::new(0),
        }
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
    checkpoints_completed: AtomicU64,
    checkpoints_failed: AtomicU64,
    last_checkpoint_id: AtomicU64,
    last_checkpoint_duration_ms: AtomicU64,
    last_checkpoint_bytes: AtomicU64,
    last_checkpoint_new_bytes: AtomicU64,
}

impl JobMetrics {
    /// Zeroed counters for a job's vertices (`(name, kind)`).
    pub fn new(job: &str, vertices: &[(String, &'static str)]) -> JobMetrics {
        JobMetrics {
            job: job.to_string(),
            vertices: vertices
                .iter()
                .map(|(n, k)| VertexMetrics::new(n, k))
                .collect(),
            restarts: AtomicU64::new(0),
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
        let vertices: Vec<(String, &'static str)> = graph
            .vertices
            .iter()
            .map(|v| {
                let kind = match v.kind {
                    crate::job::VertexKind::Source(_) => "source",
                    crate::job::VertexKind::Sink(_) => "sink",
                    crate::job::VertexKind::Operator { .. } => "operator",
                };
                (v.name.clone(), kind)
            })
            .collect();
        JobMetrics::new(&graph.name, &vertices)
    }

    /// A vertex's counters.
    pub fn vertex(&self, v: usize) -> &VertexMetrics {
        &self.vertices[v]
    }

    /// The job restarted after a failure.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Relaxed);
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

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the metrics of `jobs` in the Prometheus text format (0.0.4).
pub fn render(jobs: &[std::sync::Arc<JobMetrics>]) -> String {
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, rows: &mut dyn Iterator<Item = String>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for r in rows {
                out.push_str(&r);
            }
        };
    let per_job =
        |f: &dyn Fn(&JobMetrics) -> String| -> Vec<String> { jobs.iter().map(|j| f(j)).collect() };
    let per_vertex = |f: &dyn Fn(&JobMetrics, &VertexMetrics, &str) -> String| -> Vec<String> {
        let mut rows = Vec::new();
        for j in jobs {
            for v in &j.vertices {
                let l = format!(
                    "job=\"{}\",operator=\"{}\",kind=\"{}\"",
                    label(&j.job),
                    label(&v.name),
                    v.kind
                );
                rows.push(f(j, v, &l));
            }
        }
        rows
    };
    family(
        "wrun_records_in_total",
        "counter",
        "Events received by a vertex (all subtasks).",
        &mut per_vertex(&|_, v, l| format!("wrun_records_in_total{{{l}}} {}\n", v.records_in()))
            .into_iter(),
    );
    family(
        "wrun_records_out_total",
        "counter",
        "Events emitted by a vertex (all subtasks).",
        &mut per_vertex(&|_, v, l| format!("wrun_records_out_total{{{l}}} {}\n", v.records_out()))
            .into_iter(),
    );
    family(
        "wrun_batch_latency_seconds",
        "histogram",
        "Time an operator took to process one batch.",
        &mut per_vertex(&|_, v, l| {
            if v.kind != "operator" {
                return String::new();
            }
            let mut s = String::new();
            let mut cum = 0;
            for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                cum += v.latency[i].load(Relaxed);
                let _ = writeln!(
                    s,
                    "wrun_batch_latency_seconds_bucket{{{l},le=\"{b}\"}} {cum}"
                );
            }
            cum += v.latency[LATENCY_BUCKETS.len()].load(Relaxed);
            let _ = writeln!(
                s,
                "wrun_batch_latency_seconds_bucket{{{l},le=\"+Inf\"}} {cum}"
            );
            let _ = writeln!(
                s,
                "wrun_batch_latency_seconds_sum{{{l}}} {}",
                v.latency_sum_ns.load(Relaxed) as f64 / 1e9
            );
            let _ = writeln!(s, "wrun_batch_latency_seconds_count{{{l}}} {cum}");
            s
        })
        .into_iter(),
    );
    family(
        "wrun_guest_traps_total",
        "counter",
        "Traps of an operator's guest code (each fails its subtask).",
        &mut per_vertex(&|_, v, l| {
            if v.kind != "operator" {
                return String::new();
            }
            format!("wrun_guest_traps_total{{{l}}} {}\n", v.traps())
        })
        .into_iter(),
    );
    family(
        "wrun_checkpoint_last_alignment_seconds",
        "gauge",
        "Barrier alignment time of the last checkpoint at a vertex (one subtask's).",
        &mut per_vertex(&|_, v, l| {
            if v.kind == "source" {
                return String::new();
            }
            format!(
                "wrun_checkpoint_last_alignment_seconds{{{l}}} {}\n",
                v.alignment_last_ns.load(Relaxed) as f64 / 1e9
            )
        })
        .into_iter(),
    );
    family(
        "wrun_checkpoint_alignment_seconds_total",
        "counter",
        "Barrier alignment time at a vertex, summed over subtasks and checkpoints.",
        &mut per_vertex(&|_, v, l| {
            if v.kind == "source" {
                return String::new();
            }
            format!(
                "wrun_checkpoint_alignment_seconds_total{{{l}}} {}\n",
                v.alignment_sum_ns.load(Relaxed) as f64 / 1e9
            )
        })
        .into_iter(),
    );
    family(
        "wrun_checkpoint_state_size_bytes",
        "gauge",
        "Bytes of an operator's state (keyed and non-keyed) in the last completed checkpoint.",
        &mut per_vertex(&|_, v, l| {
            if v.kind != "operator" {
                return String::new();
            }
            format!(
                "wrun_checkpoint_state_size_bytes{{{l}}} {}\n",
                v.checkpoint_bytes.load(Relaxed)
            )
        })
        .into_iter(),
    );
    let job_label = |j: &JobMetrics| format!("job=\"{}\"", label(&j.job));
    /// Name, type, help, value.
    type JobFamily = (
        &'static str,
        &'static str,
        &'static str,
        fn(&JobMetrics) -> String,
    );
    let gauges: [JobFamily; 7] = [
        (
            "wrun_job_restarts_total",
            "counter",
            "Restarts after a failure.",
            |j| j.restarts.load(Relaxed).to_string(),
        ),
        (
            "wrun_checkpoints_completed_total",
            "counter",
            "Checkpoints completed.",
            |j| j.checkpoints_completed.load(Relaxed).to_string(),
        ),
        (
            "wrun_checkpoints_failed_total",
            "counter",
            "Checkpoints that failed or were abandoned.",
            |j| j.checkpoints_failed.load(Relaxed).to_string(),
        ),
        (
            "wrun_last_checkpoint_id",
            "gauge",
            "ID of the last completed checkpoint (0: none yet).",
            |j| j.last_checkpoint_id.load(Relaxed).to_string(),
        ),
        (
            "wrun_last_checkpoint_duration_seconds",
            "gauge",
            "Trigger to completion of the last completed checkpoint.",
            |j| (j.last_checkpoint_duration_ms.load(Relaxed) as f64 / 1e3).to_string(),
        ),
        (
            "wrun_last_checkpoint_size_bytes",
            "gauge",
            "Bytes of state the last completed checkpoint references.",
            |j| j.last_checkpoint_bytes.load(Relaxed).to_string(),
        ),
        (
            "wrun_last_checkpoint_new_bytes",
            "gauge",
            "Bytes the last completed checkpoint wrote (incremental).",
            |j| j.last_checkpoint_new_bytes.load(Relaxed).to_string(),
        ),
    ];
    for (name, kind, help, f) in gauges {
        family(
            name,
            kind,
            help,
            &mut per_job(&|j| format!("{name}{{{}}} {}\n", job_label(j), f(j))).into_iter(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_escaped_labels() {
        let m = std::sync::Arc::new(JobMetrics::new(
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
            text.contains("wrun_last_checkpoint_id{job=\"j\\\"1\"} 7"),
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
}
