//! Keyed timers and named outputs with a real 0.2 component (the `timers`
//! test guest: per-key tumbling event-time counts, late events to its
//! `late` output): windows close once each across a savepoint and a
//! rescale, late events reach the wired output, unwired or unknown outputs
//! are refused at deploy, and hostile timer use is bounded.

use crate::common::*;
use crate::savepoint::{Data, data, savepoint_once_running, start, stop};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use wrun::exec::{RunOptions, StopMode};

/// A generator of `count` events (1,000 a second of event time, 200 ms out
/// of order, 20 keys) into the `timers` guest (uid `win`) into the
/// exactly-once file sink `out.jsonl`, its late output into `late.jsonl`.
fn windows_job(parallelism: u32, count: u64, rate: Option<u64>) -> String {
    let rate = rate.map(|r| format!("rate = {r}")).unwrap_or_default();
    format!(
        r#"version = 1
name = "counts"
max-parallelism = 16

[batch]
size = 64


[[source]]
name = "gen"
kind = "generator"
count = {count}
keys = 20
events-per-second = 1000
out-of-orderness-ms = 200
watermark = {{ out-of-orderness-ms = 200, interval-ms = 20 }}
{rate}

[[operator]]
name = "win"
uid = "win"
parallelism = {parallelism}
component = "{component}"
config = {{ window-ms = 1000 }}

[[sink]]
name = "out"
kind = "file"
path = "out.jsonl"

[[sink]]
name = "late"
kind = "file"
path = "late.jsonl"

[[edge]]
from = "gen"
to = "win"
partition = "hash"

[[edge]]
from = "win"
to = "out"

[[edge]]
from = "win.late"
to = "late"
"#,
        component = guest("timers"),
    )
}

/// Window results as (key, start, count), sorted.
fn windows(out: &Path) -> Vec<(String, i64, u64)> {
    let mut w: Vec<_> = read_jsonl(out)
        .into_iter()
        .map(|(_, v)| {
            let f: Vec<&str> = v.split(',').collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    w.sort();
    w
}

#[test]
fn pending_timers_fire_once_each_after_a_savepoint_and_a_rescale() {
    let dir = tempfile::tempdir().unwrap();
    let d: Data = data(dir.path());
    let total = 40_000;
    let run = start(
        dir.path(),
        &windows_job(1, total, Some(10_000)),
        &d,
        RunOptions::default(),
    );
    savepoint_once_running(&run.control, None);
    let sp = stop(&run.control, StopMode::Suspend);
    run.join().unwrap();
    let before = windows(&dir.path().join("out.jsonl")).len();

    // The savepoint holds the windows still open, as timers.
    let out = ok(dir.path(), &["savepoint", "inspect", &sp.id]);
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("timers"))
        .unwrap_or_else(|| panic!("no timers in:\n{out}"));
    let pending: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(pending > 0, "{line}");
    let dump = ok(
        dir.path(),
        &[
            "savepoint",
            "inspect",
            &sp.id,
            "--dump",
            "win",
            "wrun:timers",
        ],
    );
    assert_eq!(dump.lines().count(), pending, "{dump}");
    assert!(dump.contains("\"domain\":\"event-time\""), "{dump}");

    // Resume at parallelism 3 to the end of the input.
    start(
        dir.path(),
        &windows_job(3, total, None),
        &d,
        RunOptions {
            restore: Some(sp.checkpoint.clone()),
            ..RunOptions::default()
        },
    )
    .join()
    .unwrap();

    let golden = tempfile::tempdir().unwrap();
    run_in(golden.path(), &windows_job(1, total, None), None).unwrap();
    let want = windows(&golden.path().join("out.jsonl"));
    // 40 s of event time (and a little before 0, out of order), 20 keys:
    // every (key, second) window, once.
    assert!((40 * 20..=41 * 20).contains(&want.len()), "{}", want.len());
    assert_eq!(want.iter().map(|w| w.2).sum::<u64>(), total);
    let got = windows(&dir.path().join("out.jsonl"));
    assert!(before < got.len(), "nothing fired after the resume");
    assert_eq!(got, want, "each window once, as in an uninterrupted run");
    // Within the bound, nothing was late.
    assert!(read_jsonl(&dir.path().join("late.jsonl")).is_empty());
}

#[test]
fn stop_with_drain_closes_every_open_window_before_the_savepoint() {
    let dir = tempfile::tempdir().unwrap();
    let d: Data = data(dir.path());
    let total = 40_000;
    let run = start(
        dir.path(),
        &windows_job(2, total, Some(10_000)),
        &d,
        RunOptions::default(),
    );
    savepoint_once_running(&run.control, None);
    let sp = stop(&run.control, StopMode::Drain);
    run.join().unwrap();
    // Every event read before the stop is in a window result: the drain
    // sent the end of event time, so no window stayed open.
    let read: u64 = sp.checkpoint.sources.iter().map(|p| p.position).sum();
    let got = windows(&dir.path().join("out.jsonl"));
    assert!(read > 0 && read < total, "{read}");
    assert_eq!(got.iter().map(|w| w.2).sum::<u64>(), read);
    let out = ok(dir.path(), &["savepoint", "inspect", &sp.id]);
    assert!(
        !out.contains("pending"),
        "timers left after a drain:\n{out}"
    );
}

/// The job of the stdin tests: JSON events keyed by `/k`, timed by `/ts`.
fn stdin_job(late_edge: bool) -> String {
    format!(
        r#"version = 1
name = "late"

[[source]]
name = "in"
kind = "stdin"
format = "json"
key = "/k"
timestamp = "/ts"
watermark = {{ out-of-orderness-ms = 0, interval-ms = 1 }}

[[operator]]
name = "win"
component = "{}"

[[sink]]
name = "out"
kind = "file"
path = "out.jsonl"

[[edge]]
from = "in"
to = "win"
partition = "hash"

[[edge]]
from = "win"
to = "out"
{}"#,
        guest("timers"),
        if late_edge {
            "\n[[sink]]\nname = \"late\"\nkind = \"file\"\npath = \"late.jsonl\"\n\n[[edge]]\nfrom = \"win.late\"\nto = \"late\"\n"
        } else {
            ""
        }
    )
}

#[test]
fn a_late_event_goes_to_the_wired_named_output_and_windows_close() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), stdin_job(true)).unwrap();
    let mut child = std::process::Command::new(wrun_bin())
        .args(["run", "job.toml"])
        .current_dir(dir.path())
        .env("WRUN_LOG", "warn")
        .env("WRUN_DATA_DIR", dir.path().join(".wrun"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"{\"k\":\"a\",\"ts\":1000}\n{\"k\":\"a\",\"ts\":1500}\n{\"k\":\"b\",\"ts\":5000}\n",
        )
        .unwrap();
    stdin.flush().unwrap();
    // Wait until the operator's watermark has passed the first window.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out, _) = wrun(dir.path(), &["job", "status", "late"]);
        if code == 0
            && out
                .lines()
                .any(|l| l.contains("win") && l.contains("watermark") && l.contains("4999"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no watermark 4999: {out}");
        std::thread::park_timeout(Duration::from_millis(20));
    }
    // Window [1000, 2000) of key a is closed: this one is late, and
    // counted as an event of the named output.
    stdin
        .write_all(b"{\"k\":\"a\",\"ts\":1200,\"n\":\"late\"}\n")
        .unwrap();
    stdin.flush().unwrap();
    let data = dir.path().join(".wrun");
    let url = wait_for_api(&mut child, &data);
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let want = "wrun_named_output_records_total{job=\"late\",operator=\"win\",output=\"late\"} 1";
    loop {
        let text = ureq::get(format!("{url}/metrics"))
            .header("Authorization", format!("Bearer {}", token.trim()))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        if text.contains(want) {
            break;
        }
        assert!(Instant::now() < deadline, "no {want} in:\n{text}");
        std::thread::park_timeout(Duration::from_millis(20));
    }
    drop(stdin);
    let (status, _, err) = wait_output_within(child, COMMAND_DEADLINE);
    assert!(status.success(), "{err}");
    let late = read_jsonl(&dir.path().join("late.jsonl"));
    assert_eq!(late.len(), 1, "{late:?}");
    assert!(late[0].1.contains("\"n\":\"late\""), "{late:?}");
    assert_eq!(
        windows(&dir.path().join("out.jsonl")),
        vec![("a".into(), 1000, 2), ("b".into(), 5000, 1)]
    );
}

#[test]
fn named_outputs_must_match_the_manifest_at_deploy() {
    let dir = tempfile::tempdir().unwrap();
    // The module's `late` output read by no edge.
    std::fs::write(dir.path().join("job.toml"), stdin_job(false)).unwrap();
    let (code, _, err) = wrun(dir.path(), &["run", "job.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "operator 'win': its module emits to a named output 'late' that no [[edge]] reads"
        ) && err.contains("from = \"win.late\""),
        "{err}"
    );
    // An edge from an output the module does not declare.
    let toml = stdin_job(true).replace("from = \"win.late\"", "from = \"win.tardy\"");
    std::fs::write(dir.path().join("job.toml"), toml).unwrap();
    let (code, _, err) = wrun(dir.path(), &["run", "job.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("an [[edge]] reads its output 'tardy'") && err.contains("only [late]"),
        "{err}"
    );
    // Named outputs are an operator's: a source has none.
    let toml = stdin_job(true).replace("from = \"win.late\"", "from = \"in.late\"");
    std::fs::write(dir.path().join("job.toml"), toml).unwrap();
    let (code, _, err) = wrun(dir.path(), &["run", "job.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only operators have named outputs"), "{err}");
}

/// A bounded JSON file into the `timers` guest with `config`.
fn file_job(dir: &Path, lines: &[&str], config: &str, limits: &str) -> String {
    std::fs::write(dir.join("in.jsonl"), lines.join("\n")).unwrap();
    format!(
        r#"version = 1
name = "hostile"
{limits}

[[source]]
name = "in"
kind = "file"
path = "in.jsonl"
format = "json"
key = "/k"
timestamp = "/ts"

[[operator]]
name = "win"
component = "{}"
config = {config}

[[sink]]
name = "out"
kind = "file"
path = "out.jsonl"

[[sink]]
name = "late"
kind = "discard"

[[edge]]
from = "in"
to = "win"
partition = "hash"

[[edge]]
from = "win"
to = "out"

[[edge]]
from = "win.late"
to = "late"
"#,
        guest("timers")
    )
}

#[test]
fn timers_at_the_ends_of_time_fire_once_and_a_flood_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let toml = file_job(
        dir.path(),
        &[r#"{"k":"a","ts":0,"c":"extremes"}"#, r#"{"k":"a","ts":5}"#],
        "{}",
        "",
    );
    run_in(dir.path(), &toml, None).unwrap();
    let mut got: Vec<String> = read_jsonl(&dir.path().join("out.jsonl"))
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    got.sort();
    // i64::MIN and i64::MAX both fire, at the end of the input at the
    // latest; the window of the second event too.
    assert_eq!(got, vec!["a,0,1000,1", "a,extreme,2", "a,extreme,3"]);

    let dir = tempfile::tempdir().unwrap();
    let toml = file_job(
        dir.path(),
        &[r#"{"k":"a","ts":0,"c":"flood"}"#],
        "{ flood = 1000 }",
        "[limits]\nmax-timers = 500\n",
    );
    let err = format!("{:#}", run_in(dir.path(), &toml, None).unwrap_err());
    assert!(
        err.contains("500 pending timers") && err.contains("limits.max-timers"),
        "{err}"
    );
}

/// A bounded file of three keyed lines into the hand-written `hostile`
/// guest in `mode`, its main output and its `side` output to files.
fn hostile_job(dir: &Path, mode: &str) -> String {
    std::fs::write(
        dir.join("in.jsonl"),
        "{\"k\":\"a\",\"ts\":1}\n{\"k\":\"b\",\"ts\":2}\n{\"k\":\"c\",\"ts\":3}\n",
    )
    .unwrap();
    format!(
        r#"version = 1
name = "hostile"

[[source]]
name = "in"
kind = "file"
path = "in.jsonl"
format = "json"
key = "/k"
timestamp = "/ts"

[[operator]]
name = "h"
component = "{}"
config = {{ mode = "{mode}" }}

[[sink]]
name = "out"
kind = "file"
path = "out.jsonl"

[[sink]]
name = "side"
kind = "file"
path = "side.jsonl"

[[edge]]
from = "in"
to = "h"
partition = "hash"

[[edge]]
from = "h"
to = "out"

[[edge]]
from = "h.side"
to = "side"
"#,
        guest("hostile")
    )
}

#[test]
fn a_guest_that_breaks_the_packed_format_fails_with_a_message_and_harms_nothing() {
    for (mode, want) in [
        (
            "offsets",
            "returned malformed events from process: invalid packed events: event 0: end offset 99",
        ),
        (
            "lengths",
            "the packed lists differ in length: 2 key ends, 1 value ends, 1 flags, 1 timestamps",
        ),
        (
            "flags",
            "flags 0x80 set bits other than 1 (key) and 2 (timestamp)",
        ),
        (
            "output",
            "event 0 goes to output 7, but the operator declares 1 named outputs",
        ),
        ("outputs-length", "2 output indices for 1 events"),
        (
            "timers",
            "state 'wrun:timers': malformed call: timer 0: key end offset 5",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let err = run_in(dir.path(), &hostile_job(dir.path(), mode), None).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("operator h[0]") && err.contains(want),
            "{mode}: {err}"
        );
    }
    // The same process, the same sandbox: a well-behaved run after them,
    // its events to both outputs.
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), &hostile_job(dir.path(), "echo"), None).unwrap();
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 3);
    assert_eq!(read_jsonl(&dir.path().join("side.jsonl")).len(), 3);
}

/// The `timers` guest counting `seen` events per key, with a watermark
/// after every event (one event per batch, no out-of-orderness), so which
/// state has expired depends only on the input.
fn ttl_job(dir: &Path, lines: &[&str], config: &str) -> String {
    std::fs::write(dir.join("in.jsonl"), lines.join("\n")).unwrap();
    format!(
        r#"version = 1
name = "ttl"
[batch]
size = 1

[[source]]
name = "in"
kind = "file"
path = "in.jsonl"
format = "json"
key = "/k"
timestamp = "/ts"
watermark = {{ out-of-orderness-ms = 0, interval-ms = 0 }}

[[operator]]
name = "win"
component = "{}"
config = {config}

[[sink]]
name = "out"
kind = "file"
path = "out.jsonl"

[[sink]]
name = "late"
kind = "discard"

[[edge]]
from = "in"
to = "win"
partition = "hash"

[[edge]]
from = "win"
to = "out"

[[edge]]
from = "win.late"
to = "late"
"#,
        guest("timers")
    )
}

#[test]
fn state_with_a_time_to_live_is_forgotten_once_event_time_passes_it() {
    // A refresh in event time is stamped with the watermark then: the
    // watermark before each line is the previous line's time - 1.
    let lines = [
        r#"{"k":"a","ts":0,"c":"seen"}"#,
        // Refreshed at -1: expires once the watermark reaches 99.
        r#"{"k":"a","ts":50,"c":"seen"}"#,
        // Written at 49: expires at 149.
        r#"{"k":"b","ts":1000,"c":"seen"}"#,
        // The watermark is 999: `a` and `b` have expired.
        r#"{"k":"a","ts":1001,"c":"seen"}"#,
        r#"{"k":"b","ts":1050,"c":"seen"}"#,
        // Written at 1049, read at 1099: still there.
        r#"{"k":"c","ts":1100,"c":"seen"}"#,
        r#"{"k":"c","ts":1150,"c":"seen"}"#,
    ];
    let counts = |config: &str| {
        let dir = tempfile::tempdir().unwrap();
        run_in(dir.path(), &ttl_job(dir.path(), &lines, config), None).unwrap();
        read_jsonl(&dir.path().join("out.jsonl"))
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts("{ ttl-ms = 100 }"),
        [
            "a,seen,1", "a,seen,2", "b,seen,1", "a,seen,1", "b,seen,1", "c,seen,1", "c,seen,2"
        ]
    );
    // Without a time to live the count goes on.
    assert_eq!(
        counts("{}"),
        [
            "a,seen,1", "a,seen,2", "b,seen,1", "a,seen,3", "b,seen,2", "c,seen,1", "c,seen,2"
        ]
    );
}

/// A running job's savepoint holds no expired entry: keys `a`, `b` and
/// `c` (refreshed at watermark 49) have expired once the watermark is
/// 10000, so the savepoint taken then holds only `d` (refreshed at 9999),
/// in the state and in its refresh times; without a time to live it holds
/// all four.
#[test]
fn a_savepoint_holds_no_expired_state() {
    for (config, want) in [
        ("{ ttl-ms = 100 }", vec!["d"]),
        ("{}", vec!["a", "b", "c", "d"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let job = stdin_job(true)
            .replacen("name = \"late\"", "name = \"ttl\"", 1)
            .replace(
                "\n[[sink]]\nname = \"out\"",
                &format!("config = {config}\n\n[[sink]]\nname = \"out\""),
            );
        assert!(job.contains("config = "), "{job}");
        std::fs::write(dir.path().join("job.toml"), job).unwrap();
        let mut child = std::process::Command::new(wrun_bin())
            .args(["run", "job.toml"])
            .current_dir(dir.path())
            .env("WRUN_LOG", "warn")
            .env("WRUN_DATA_DIR", dir.path().join(".wrun"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let watermark_at = |w: &str| loop {
            let (code, out, _) = wrun(dir.path(), &["job", "status", "ttl"]);
            if code == 0
                && out
                    .lines()
                    .any(|l| l.contains("win") && l.contains("watermark") && l.contains(w))
            {
                break;
            }
            assert!(Instant::now() < deadline, "no watermark {w}: {out}");
            std::thread::park_timeout(Duration::from_millis(20));
        };
        // Written before the first watermark, `a` and `b` count as
        // refreshed at it: 49.
        stdin
            .write_all(
                b"{\"k\":\"a\",\"ts\":0,\"c\":\"seen\"}\n{\"k\":\"b\",\"ts\":50,\"c\":\"seen\"}\n",
            )
            .unwrap();
        stdin.flush().unwrap();
        watermark_at("49");
        // `c` is written at watermark 49 too; then the watermark jumps.
        stdin
            .write_all(b"{\"k\":\"c\",\"ts\":10000,\"c\":\"seen\"}\n")
            .unwrap();
        stdin.flush().unwrap();
        watermark_at("9999");
        // `d` is written at 9999: alive until the watermark reaches 10099.
        stdin
            .write_all(b"{\"k\":\"d\",\"ts\":10001,\"c\":\"seen\"}\n")
            .unwrap();
        stdin.flush().unwrap();
        watermark_at("10000");
        let out = ok(dir.path(), &["savepoint", "trigger", "ttl"]);
        let id = out
            .split_whitespace()
            .find(|w| w.starts_with("sp-"))
            .unwrap_or_else(|| panic!("no savepoint id in: {out}"))
            .to_string();
        let keys = |state: &str| -> Vec<String> {
            let dump = ok(
                dir.path(),
                &["savepoint", "inspect", &id, "--dump", "win", state],
            );
            let mut keys: Vec<String> = dump
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["key"]["utf8"].as_str().unwrap().to_string()
                })
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(keys("seen"), want, "with config {config}");
        if config.contains("ttl") {
            assert_eq!(keys("wrun:ttl:seen"), want);
        }
        drop(stdin);
        let (status, _, err) = wait_output_within(child, COMMAND_DEADLINE);
        assert!(status.success(), "{err}");
    }
}
