//! Paced sources (issue #13, item 4): a `generator` with a low `rate`
//! flushes on linger, lets barriers, cancel and failure through within a
//! bounded time, and the tolerable-failures rule fails the job. Time is a
//! `ManualClock` the test moves, never a sleep; real-time waits below are
//! only generous bounds on an outcome.

use crate::common::*;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wrun::batch::Batch;
use wrun::checkpoint::CheckpointStore;
use wrun::exec::{
    JobControl, JobReport, JobState, ManualClock, OperatorLogic, RunOptions, Snapshot,
};
use wrun::sandbox::{SandboxError, SubtaskInfo};

/// Far more than any test waits for; only a hang reaches it.
const BOUND: Duration = Duration::from_secs(60);

/// A generator at 20 events/s (a 1024-event batch would take 51 s) into
/// an operator `op` and a sink.
fn slow_job(extra: &str) -> String {
    format!(
        r#"version = 1
name = "slow"
{extra}

[[source]]
name = "gen"
kind = "generator"
count = 1000000
keys = 5
rate = 20

[[operator]]
name = "op"
component = "{component}"

[[sink]]
name = "out"
kind = "discard"

[[edge]]
from = "gen"
to = "op"

[[edge]]
from = "op"
to = "out"
"#,
        component = guest("wordcount-counter"),
    )
}

/// A native pass-through operator whose snapshot waits for `gate` (one
/// message per snapshot; a dropped gate opens for good).
struct Gated(Option<Arc<Mutex<Receiver<()>>>>);

impl OperatorLogic for Gated {
    fn open(&mut self, _: &SubtaskInfo) -> Result<(), SandboxError> {
        Ok(())
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, SandboxError> {
        Ok(batch.clone())
    }
    fn close(&mut self) -> Result<Batch, SandboxError> {
        Ok(Batch::default())
    }
    fn snapshot(&mut self, _full: bool) -> Result<Snapshot, SandboxError> {
        if let Some(g) = &self.0 {
            let _ = g.lock().unwrap().recv();
        }
        Ok(Snapshot::default())
    }
}

struct Slow {
    clock: Arc<ManualClock>,
    control: Arc<JobControl>,
    done: Receiver<anyhow::Result<JobReport>>,
}

/// Starts `toml` under a manual clock with a checkpoint store and a
/// control; `gate` makes the operator's snapshots wait.
fn start(dir: &Path, toml: &str, gate: Option<Receiver<()>>) -> Slow {
    let clock = Arc::new(ManualClock::new());
    let control = JobControl::new("slow");
    let gate = gate.map(|g| Arc::new(Mutex::new(g)));
    let mut opts = RunOptions {
        store: Some(Arc::new(CheckpointStore::in_memory()) as Arc<CheckpointStore>),
        control: Some(control.clone()),
        clock: Some(clock.clone()),
        ..RunOptions::default()
    };
    opts.native.insert(
        "op".into(),
        Arc::new(move |_: &SubtaskInfo, _: wrun::state::KeyedState| {
            Box::new(Gated(gate.clone())) as Box<dyn OperatorLogic>
        }),
    );
    let (tx, done) = channel();
    let (dir, toml) = (dir.to_path_buf(), toml.to_string());
    std::thread::spawn(move || {
        let _ = tx.send(run_supervised(&dir, &toml, &opts));
    });
    Slow {
        clock,
        control,
        done,
    }
}

impl Slow {
    /// Events the sink has received.
    fn delivered(&self) -> u64 {
        self.control
            .metrics()
            .map(|m| m.vertex(2).records_in())
            .unwrap_or(0)
    }

    /// Moves the clock in `step`s, giving the job a moment of real time
    /// after each, until `cond` holds.
    fn drive(&self, step: Duration, cond: impl Fn(&Slow) -> bool) {
        let deadline = Instant::now() + BOUND;
        while !cond(self) {
            assert!(Instant::now() < deadline, "no progress within {BOUND:?}");
            self.clock.advance(step);
            std::thread::park_timeout(Duration::from_millis(1));
        }
    }

    /// The job's outcome, waiting at most [`BOUND`] for it.
    fn outcome(&self) -> anyhow::Result<JobReport> {
        self.done.recv_timeout(BOUND).expect("the job did not end")
    }
}

#[test]
fn a_slow_source_flushes_on_linger_checkpoints_and_cancels_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let job = start(dir.path(), &slow_job(""), None);
    // Linger: the first event (due at 0 s) reaches the sink once its
    // partial batch has waited linger-ms (10) on the clock; then one
    // simulated second brings 20 more, far from a full batch of 1024.
    job.drive(Duration::from_millis(5), |j| j.delivered() >= 1);
    let first = job.delivered();
    // (Driven on in small steps after the jump: whether the jump's last
    // partial batch has already lingered depends on when the source looked
    // at the clock, so the clock must keep moving a little.)
    job.clock.advance(Duration::from_secs(1));
    job.drive(Duration::from_millis(5), |j| j.delivered() >= first + 20);
    assert!(job.delivered() < 100, "{}", job.delivered());

    // A checkpoint completes without the clock moving: the barrier does
    // not wait for the next event, let alone a full batch.
    let deadline = Instant::now() + BOUND;
    let rx = loop {
        match job.control.trigger(None, None) {
            Ok(rx) => break rx,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                std::thread::park_timeout(Duration::from_millis(1));
            }
        }
    };
    let t = rx
        .recv_timeout(BOUND)
        .expect("no answer")
        .expect("checkpoint");
    assert!(t.checkpoint >= 1);

    // Cancel ends the job without the clock moving either.
    job.control.cancel();
    let err = job.outcome().unwrap_err();
    assert!(chain(&err).contains("cancelled"), "{}", chain(&err));
}

#[test]
fn a_checkpoint_through_a_slow_source_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let job = start(
        dir.path(),
        &slow_job("[checkpoint]\ninterval-ms = 1000\ntimeout-ms = 10000"),
        None,
    );
    // Each simulated second takes a checkpoint, which would time out if the
    // barrier waited for a batch to fill.
    job.drive(Duration::from_millis(100), |j| {
        j.control
            .metrics()
            .is_some_and(|m| m.checkpoints_completed() >= 3)
    });
    let m = job.control.metrics().unwrap();
    assert_eq!(m.checkpoints_failed(), 0);
    job.control.cancel();
    assert!(job.outcome().is_err());
}

#[test]
fn more_timeouts_than_tolerated_fail_the_job_under_its_restart_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (open, gate): (Sender<()>, _) = channel();
    let job = start(
        dir.path(),
        &slow_job(
            "[checkpoint]\ninterval-ms = 100\ntimeout-ms = 500\ntolerable-failures = 0\n\n[restart]\nattempts = 1\ndelay-ms = 0",
        ),
        Some(gate),
    );
    // Every checkpoint's snapshot waits at the gate, so it times out; the
    // first timeout is one more than tolerated. Each time, let the stuck
    // snapshot go so the failed attempt can end.
    let mut released = 0;
    let deadline = Instant::now() + BOUND;
    let result = loop {
        assert!(Instant::now() < deadline, "the job never failed");
        if let Ok(r) = job.done.try_recv() {
            break r;
        }
        let failed = job
            .control
            .metrics()
            .map(|m| m.checkpoints_failed())
            .unwrap_or(0);
        while released < failed {
            let _ = open.send(());
            released += 1;
        }
        job.clock.advance(Duration::from_millis(50));
        std::thread::park_timeout(Duration::from_millis(1));
    };
    drop(open);
    let err = result.unwrap_err();
    let msg = chain(&err);
    assert!(
        msg.contains("checkpoints failed in a row")
            && msg.contains("tolerable-failures = 0")
            && msg.contains("timed out"),
        "{msg}"
    );
    let status = job.control.status();
    assert_eq!(status.state, JobState::Failed);
    assert_eq!(status.restarts, 1, "the restart policy applied");
    assert!(
        status
            .error
            .is_some_and(|e| e.contains("tolerable-failures")),
        "the status says why"
    );
}

/// Through the binary, in real time: `wrun run` of a generator at 20
/// events/s takes checkpoints, and `wrun stop --savepoint` (a barrier that
/// must get through the slow source) ends it. Only outcomes are asserted,
/// each within a generous bound.
#[test]
fn wrun_run_of_a_slow_generator_checkpoints_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    std::fs::write(
        dir.path().join("slow.toml"),
        r#"version = 1
name = "slow"

[checkpoint]
interval-ms = 200
timeout-ms = 5000

[[source]]
name = "gen"
kind = "generator"
count = 1000000
keys = 5
rate = 20

[[sink]]
name = "out"
kind = "file"
path = "out.jsonl"

[[edge]]
from = "gen"
to = "out"
"#,
    )
    .unwrap();
    let mut child = spawn_run(dir.path(), "slow.toml", &data);
    let deadline = Instant::now() + BOUND;
    let mut until = |what: &str, cond: &mut dyn FnMut() -> bool| {
        while !cond() {
            assert!(Instant::now() < deadline, "{what} within {BOUND:?}");
            assert!(child.try_wait().unwrap().is_none(), "wrun run ended early");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    until("the API endpoint", &mut || data.join("api.json").exists());
    until("a completed checkpoint", &mut || {
        let (code, out, _) = wrun(dir.path(), &["checkpoint", "list", "--data-dir", d]);
        code == 0 && out.lines().any(|l| l.starts_with("slow "))
    });
    let out = ok(
        dir.path(),
        &["stop", "slow", "--savepoint", "--data-dir", d],
    );
    assert!(out.contains("job 'slow' stopped"), "{out}");
    let end = Instant::now() + BOUND;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "wrun run did not end after the stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "wrun run after stop: {status}");
}
