//! The last minutes of every job's vertex metrics, in memory: once a second
//! the API server turns each job's counters into rates (records in and out
//! per second) and shares of time (busy, idle, backpressured: the busiest
//! subtask's, as Flink's graph shows them), and keeps [`KEEP`] samples per
//! job. What the dashboard's charts and live graph read; Prometheus stays
//! the long-term store.

use crate::exec::JobControl;
use crate::exec::load::{LoadTotals, Shares};
use crate::exec::metrics::JobMetrics;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Samples kept per job: ten minutes at one a second.
pub const KEEP: usize = 600;

/// How often the server samples.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One vertex at one sample.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VertexSample {
    /// Records received per second over the last period.
    pub in_per_s: f64,
    /// Records emitted per second over the last period.
    pub out_per_s: f64,
    /// The busiest subtask's share of the period spent processing.
    pub busy: f64,
    /// The most backpressured subtask's share spent waiting downstream.
    pub backpressured: f64,
}

/// One subtask at the latest sample.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubtaskSample {
    /// Its index.
    pub subtask: usize,
    /// Shares of the last period.
    #[serde(flatten)]
    pub shares: Shares,
    /// How full its input queue is, 0..=1.
    pub queue_fill: f64,
    /// How full its output is, 0..=1: the fullest input queue of the
    /// subtasks it sends to.
    pub output_fill: f64,
}

/// A job's vertices at one moment.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Sample {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// Per vertex, in graph order.
    pub vertices: Vec<VertexSample>,
}

/// The counters a rate is computed from.
struct Snap {
    at: Instant,
    /// Per vertex: records in, records out, each subtask's load.
    vertices: Vec<(u64, u64, Vec<LoadTotals>)>,
}

#[derive(Default)]
struct JobHistory {
    last: Option<Snap>,
    samples: VecDeque<Sample>,
    /// Per vertex, per subtask, at the latest sample.
    subtasks: Vec<Vec<SubtaskSample>>,
}

/// Every job's recent samples.
#[derive(Default)]
pub struct History {
    jobs: Mutex<BTreeMap<String, JobHistory>>,
}

fn snap(m: &JobMetrics, at: Instant) -> Snap {
    Snap {
        at,
        vertices: m
            .vertices
            .iter()
            .map(|v| (v.records_in(), v.records_out(), v.loads()))
            .collect(),
    }
}

impl History {
    /// Samples every job in `jobs` that has counters, now.
    pub fn sample(&self, jobs: &[(String, Arc<JobControl>)]) {
        let now = Instant::now();
        let at_ms = crate::time::unix_ms();
        let mut h = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        h.retain(|name, _| jobs.iter().any(|(n, _)| n == name));
        for (name, control) in jobs {
            let Some(m) = control.metrics() else { continue };
            let cur = snap(&m, now);
            let jh = h.entry(name.clone()).or_default();
            if let Some(last) = jh
                .last
                .as_ref()
                .filter(|l| l.vertices.len() == cur.vertices.len())
            {
                let window = now
                    .saturating_duration_since(last.at)
                    .max(Duration::from_millis(1));
                let secs = window.as_secs_f64();
                let mut vertices = Vec::new();
                let mut subtasks = Vec::new();
                for ((i1, o1, l1), (i0, o0, l0)) in cur.vertices.iter().zip(&last.vertices) {
                    let subs: Vec<SubtaskSample> = l1
                        .iter()
                        .zip(l0)
                        .enumerate()
                        .map(|(s, (a, b))| SubtaskSample {
                            subtask: s,
                            shares: a.shares_since(b, window),
                            queue_fill: a.queue_fill(),
                            output_fill: a.output_fill,
                        })
                        .collect();
                    let max = |f: fn(&Shares) -> f64| {
                        subs.iter().map(|s| f(&s.shares)).fold(0.0, f64::max)
                    };
                    vertices.push(VertexSample {
                        in_per_s: i1.saturating_sub(*i0) as f64 / secs,
                        out_per_s: o1.saturating_sub(*o0) as f64 / secs,
                        busy: max(|s| s.busy),
                        backpressured: max(|s| s.backpressured),
                    });
                    subtasks.push(subs);
                }
                jh.samples.push_back(Sample { at_ms, vertices });
                while jh.samples.len() > KEEP {
                    jh.samples.pop_front();
                }
                jh.subtasks = subtasks;
            }
            jh.last = Some(cur);
        }
    }

    /// `job`'s newest sample, if any (without copying the rest).
    pub fn latest(&self, job: &str) -> Option<Sample> {
        let h = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        h.get(job).and_then(|j| j.samples.back().cloned())
    }

    /// `job`'s samples since `since_ms` (all kept, without), oldest first,
    /// and its subtasks at the latest.
    pub fn of(&self, job: &str, since_ms: Option<u64>) -> (Vec<Sample>, Vec<Vec<SubtaskSample>>) {
        let h = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match h.get(job) {
            Some(j) => (
                j.samples
                    .iter()
                    .filter(|s| since_ms.is_none_or(|t| s.at_ms > t))
                    .cloned()
                    .collect(),
                j.subtasks.clone(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_shares_come_from_two_samples() {
        let c = JobControl::new("j");
        let graph = crate::job::parse_manifest(
            "version = 1\nname = \"j\"\n[[source]]\nname = \"in\"\nkind = \"generator\"\ncount = 1\n\
             [[sink]]\nname = \"out\"\nkind = \"discard\"\n[[edge]]\nfrom = \"in\"\nto = \"out\"\n",
            "job.toml",
            std::path::Path::new("."),
            None,
        )
        .unwrap();
        let m = c.metrics_for(&graph);
        let h = History::default();
        let jobs = vec![("j".to_string(), c.clone())];
        h.sample(&jobs);
        assert!(h.of("j", None).0.is_empty(), "one snapshot is no rate yet");
        m.vertex(0).add_out(500);
        m.vertex(1).add_in(500);
        m.vertex(1).subtask(0).idle(Duration::from_secs(3600));
        h.sample(&jobs);
        let (samples, subtasks) = h.of("j", None);
        assert_eq!(samples.len(), 1);
        let v = &samples[0].vertices;
        assert!(v[0].out_per_s > 0.0 && v[1].in_per_s > 0.0, "{v:?}");
        assert_eq!(v[1].busy, 0.0, "idle the whole window");
        assert_eq!(subtasks[1][0].shares.idle, 1.0);
        // A job gone from the list is forgotten.
        h.sample(&[]);
        assert!(h.of("j", None).0.is_empty());
    }
}
