//! Event time (docs/time.md): timestamps assigned by the sources, watermarks
//! per split with idleness, carried in-band through operators to the sinks,
//! and the end of a bounded input as the end of event time. Time is a
//! `ManualClock` the test moves; real-time waits are only bounds.

use crate::common::*;
use crate::nats::{NatsServer, create_stream, publish};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};
use wrun::checkpoint::CheckpointStore;
use wrun::exec::{JobControl, JobReport, JobStatus, ManualClock, RunOptions};

/// Far more than any test waits for; only a hang reaches it.
const BOUND: Duration = Duration::from_secs(60);

/// The watermark of every subtask of `vertex`, as `wrun job status` shows
/// it (`None`: idle), in subtask order.
fn watermarks(s: &JobStatus, vertex: &str) -> Vec<Option<i64>> {
    let mut w: Vec<_> = s
        .watermarks
        .iter()
        .filter(|w| w.vertex == vertex)
        .map(|w| (w.subtask, w.watermark_ms))
        .collect();
    w.sort();
    w.into_iter().map(|(_, w)| w).collect()
}

#[test]
fn a_bounded_json_file_keeps_its_event_times_and_ends_with_the_end_of_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clicks.jsonl"),
        [
            r#"{"user":"ann","ts":1000}"#,
            r#"{"user":"bob","ts":"1970-01-01T00:00:03.500Z"}"#,
            r#"{"user":"ann","ts":2000.9}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let toml = format!(
        r#"version = 1
name = "clicks"

[[source]]
name = "clicks"
kind = "file"
path = "clicks.jsonl"
format = "json"
key = "/user"
timestamp = "/ts"
watermark = {{ out-of-orderness-ms = 500 }}

[[operator]]
name = "count"
component = "{component}"
parallelism = 2

[[sink]]
name = "counts"
kind = "discard"

[[sink]]
name = "raw"
kind = "file"
path = "raw.jsonl"

[[edge]]
from = "clicks"
to = "count"
partition = "hash"

[[edge]]
from = "count"
to = "counts"

[[edge]]
from = "clicks"
to = "raw"
"#,
        component = guest("wordcount-counter"),
    );
    let control = JobControl::new("clicks");
    let opts = RunOptions {
        control: Some(control.clone()),
        ..RunOptions::default()
    };
    run_with(dir.path(), &toml, None, &opts).unwrap();

    // Every event keeps the time its JSON gave it (ms, RFC 3339, a
    // fraction cut off).
    let raw = std::fs::read_to_string(dir.path().join("raw.jsonl")).unwrap();
    let times: Vec<i64> = raw
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["timestamp"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(times, [1000, 3500, 2000]);

    // The input ended: every subtask of every vertex saw the end of time,
    // through the operator's two subtasks to both sinks.
    let s = control.status();
    let end = Some(i64::MAX);
    assert_eq!(watermarks(&s, "clicks"), [end]);
    assert_eq!(watermarks(&s, "count"), [end, end]);
    assert_eq!(watermarks(&s, "counts"), [end]);
    assert_eq!(watermarks(&s, "raw"), [end]);
    // The file's own watermark: its highest time less the bound and 1 ms.
    let split: Vec<_> = s
        .split_watermarks
        .iter()
        .map(|w| (w.split.as_str(), w.watermark_ms))
        .collect();
    assert_eq!(split, [("clicks", Some(3500 - 500 - 1))]);

    // And /metrics says the same.
    let text = wrun::exec::metrics::render(&[control.metrics().unwrap()]);
    assert!(
        text.contains(
            "wrun_watermark_ms{job=\"clicks\",operator=\"count\",kind=\"operator\",subtask=\"1\"} 9223372036854775807"
        ),
        "{text}"
    );
    assert!(
        text.contains("wrun_source_split_watermark_ms{job=\"clicks\",operator=\"clicks\",split=\"clicks\"} 2999"),
        "{text}"
    );
    assert!(
        text.contains(
            "wrun_watermark_idle{job=\"clicks\",operator=\"raw\",kind=\"sink\",subtask=\"0\"} 0"
        ),
        "{text}"
    );
}

/// A NATS job under a manual clock, run in this process.
struct Running {
    clock: Arc<ManualClock>,
    control: Arc<JobControl>,
    done: Receiver<anyhow::Result<JobReport>>,
}

impl Running {
    /// Moves the clock in 10 ms steps, giving the job a moment of real time
    /// after each, until `cond` holds of its status.
    fn until(&self, what: &str, cond: impl Fn(&JobStatus) -> bool) {
        let deadline = Instant::now() + BOUND;
        while !cond(&self.control.status()) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {BOUND:?}; status: {:?}",
                self.control.status()
            );
            self.clock.advance(Duration::from_millis(10));
            std::thread::park_timeout(Duration::from_millis(2));
        }
    }
}

fn start(dir: &Path, toml: &str) -> Running {
    let clock = Arc::new(ManualClock::new());
    let control = JobControl::new("wm");
    let opts = RunOptions {
        store: Some(Arc::new(CheckpointStore::in_memory()) as Arc<CheckpointStore>),
        control: Some(control.clone()),
        clock: Some(clock.clone()),
        ..RunOptions::default()
    };
    let (tx, done) = channel();
    let (dir, toml) = (dir.to_path_buf(), toml.to_string());
    std::thread::spawn(move || {
        let _ = tx.send(run_with(&dir, &toml, None, &opts));
    });
    Running {
        clock,
        control,
        done,
    }
}

#[test]
fn watermarks_follow_the_slowest_split_until_it_goes_idle_and_windows_close() {
    let nats = NatsServer::start();
    let url = nats.url();
    create_stream(&url, "IN", &["in.>"], Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"version = 1
name = "wm"

[[source]]
name = "in"
kind = "nats"
servers = ["{url}"]
stream = "IN"
subjects = ["in.a", "in.b"]
timestamp = "/ts"
watermark = {{ out-of-orderness-ms = 100, idle-timeout-ms = 1000, interval-ms = 10 }}

[[operator]]
name = "count"
component = "{component}"

[[sink]]
name = "out"
kind = "discard"

[[sink]]
name = "late"
kind = "discard"

[[edge]]
from = "in"
to = "count"
partition = "hash"

[[edge]]
from = "count"
to = "out"

[[edge]]
from = "count.late"
to = "late"
"#,
        // Per-key tumbling windows of 1 s in event time.
        component = guest("timers"),
    );
    let at = |subject: &str, ts: i64| (subject.to_string(), format!(r#"{{"ts":{ts}}}"#));
    publish(&url, &[at("in.a", 5000), at("in.b", 3000)]);
    let job = start(dir.path(), &toml);
    let everywhere = |w: i64| {
        move |s: &JobStatus| {
            ["in", "count", "out"]
                .iter()
                .all(|v| watermarks(s, v) == [Some(w)])
        }
    };

    // The slower split decides, in every vertex (the watermark travels
    // with the events).
    job.until("the slower split's watermark", everywhere(3000 - 101));
    let splits = |s: &JobStatus| -> Vec<(String, Option<i64>)> {
        s.split_watermarks
            .iter()
            .map(|w| (w.split.clone(), w.watermark_ms))
            .collect()
    };
    assert_eq!(
        splits(&job.control.status()),
        [
            ("stream/IN/in.a".to_string(), Some(4899)),
            ("stream/IN/in.b".to_string(), Some(2899))
        ]
    );

    // in.b goes quiet: once it has been quiet for the idle timeout (1 s
    // of the job's clock), in.a alone decides, while in.a is not idle.
    job.clock.advance(Duration::from_millis(600));
    publish(&url, &[at("in.a", 9000)]);
    job.until("in.a's new event read", |s| {
        splits(s).contains(&("stream/IN/in.a".to_string(), Some(8899)))
    });
    assert!(
        everywhere(2899)(&job.control.status()),
        "in.b holds it back"
    );
    // Windows [3000, 4000) and [5000, 6000) are open: nothing emitted.
    let metrics = job.control.metrics().unwrap();
    let count = 1;
    let emitted = || metrics.vertex(count).records_out();
    let late = || metrics.vertex(count).named_out();
    assert_eq!(
        emitted(),
        0,
        "no window closes while in.b holds the watermark"
    );
    job.clock.advance(Duration::from_millis(600));
    job.until("in.a alone, once in.b is idle", everywhere(9000 - 101));
    // ... and with in.b idle, both windows close.
    job.until("both windows closed", |_| emitted() == 2);

    // in.b comes back behind the watermark: its events are late, and the
    // watermark does not go back.
    publish(&url, &[at("in.b", 4000)]);
    job.until("in.b's new event read", |s| {
        splits(s).contains(&("stream/IN/in.b".to_string(), Some(3899)))
    });
    assert!(everywhere(8899)(&job.control.status()));
    // Its window has closed: the event goes to the late output.
    job.until("in.b's late event on the late output", |_| emitted() == 3);
    assert_eq!(late(), [("late".to_string(), 1)]);

    job.control.cancel();
    let outcome = job.done.recv_timeout(BOUND).expect("the job did not end");
    assert!(outcome.is_err(), "a cancelled job ends with an error");
}

#[test]
fn a_line_without_its_timestamp_fails_the_job_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"ts\":1}\n{\"user\":\"x\"}\n",
    )
    .unwrap();
    let toml = r#"version = 1
name = "ts"

[[source]]
name = "in"
kind = "file"
path = "in.jsonl"
format = "json"
timestamp = "/ts"

[[sink]]
name = "out"
kind = "discard"

[[edge]]
from = "in"
to = "out"
"#;
    let e = run_in(dir.path(), toml, None).unwrap_err();
    let msg = chain(&e);
    assert!(
        msg.contains("in.jsonl line 2: no timestamp at JSON pointer \"/ts\""),
        "{msg}"
    );
    assert!(msg.contains("source 'in'"), "{msg}");
}
