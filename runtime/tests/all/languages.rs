//! Operators in other languages, from the same WIT: the wordcount counter
//! in Rust, Python, JavaScript and C gives the same output; a savepoint of
//! the Rust counter resumes in Python, then JavaScript, then C (state is
//! language-neutral bytes); WASI grants a guest nothing.

use crate::common::*;
use crate::savepoint::{counts, data, savepoint_beyond, savepoint_once_running, start, stop};
use std::path::Path;
use wrun::exec::{RunOptions, StopMode};

/// The savepoint tests' job, with a call timeout for interpreted guests on
/// a loaded machine: a Python or JavaScript guest's first calls (its
/// runtime warming up) took over the default 1 s beside the rest of the
/// suite on two cores. What these tests check is state, not timeouts
/// (tests/all/limits.rs does those).
fn job(component: &str, uid: &str, parallelism: u32, count: u64, rate: Option<u64>) -> String {
    crate::savepoint::job(component, uid, parallelism, count, rate)
        + "\n[limits]\ncall-timeout-ms = 20000\n"
}

/// Every counter, by language.
const COUNTERS: &[(&str, &str)] = &[
    ("rust", "wordcount-counter"),
    ("python", "wordcount-counter-py"),
    ("javascript", "wordcount-counter-js"),
    ("c", "wordcount-counter-c"),
];

fn wordcount(counter: &str, parallelism: u32) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wordcount");
    format!(
        r#"version = 1
name = "wordcount"
max-parallelism = 128

[[source]]
name = "lines"
kind = "file"
path = "{input}"

[[operator]]
name = "tokenize"
component = "{tokenizer}"

[[operator]]
name = "count"
uid = "word-counter"
parallelism = {parallelism}
component = "{counter}"

[[sink]]
name = "counts"
kind = "file"
path = "out.jsonl"

[[edge]]
from = "lines"
to = "tokenize"
partition = "rebalance"

[[edge]]
from = "tokenize"
to = "count"
partition = "hash"

[[edge]]
from = "count"
to = "counts"
"#,
        input = example.join("input.txt").display(),
        tokenizer = guest("wordcount-tokenizer"),
        counter = guest(counter),
    )
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

#[test]
fn every_language_gives_the_golden_output() {
    let golden = sorted_lines(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wordcount/golden.jsonl"),
    );
    for (language, counter) in COUNTERS {
        for parallelism in [1, 3] {
            let dir = tempfile::tempdir().unwrap();
            run_in(dir.path(), &wordcount(counter, parallelism), None)
                .unwrap_or_else(|e| panic!("{language}: {}", chain(&e)));
            assert_eq!(
                sorted_lines(&dir.path().join("out.jsonl")),
                golden,
                "{language} counter at parallelism {parallelism}"
            );
        }
    }
}

/// Runs `job` with each of `hops` (component, parallelism) in turn, paced
/// at `rate`, each resuming from the previous one's stop with a savepoint
/// and counting something before its own; returns the last savepoint's
/// checkpoint.
fn hops_to_savepoints(
    dir: &Path,
    d: &crate::savepoint::Data,
    uid: &str,
    hops: &[(&str, u32)],
    total: u64,
    rate: u64,
) -> Option<wrun::checkpoint::CheckpointManifest> {
    let mut restore = None;
    let mut lines = 0;
    for &(component, parallelism) in hops {
        // A test guest's name, or a component's path.
        let path: &str = if component.ends_with(".wasm") {
            component
        } else {
            guest(component)
        };
        let run = start(
            dir,
            &job(path, uid, parallelism, total, Some(rate)),
            d,
            RunOptions {
                restore: restore.take(),
                ..RunOptions::default()
            },
        );
        savepoint_once_running(&run.control, None);
        let sp = stop(&run.control, StopMode::Suspend);
        run.join().unwrap();
        let now = read_jsonl(&dir.join("out.jsonl")).len();
        assert!(now > lines, "{component} processed nothing");
        lines = now;
        restore = Some(sp.checkpoint);
    }
    restore
}

/// A savepoint of the Rust counter resumes in Python, whose savepoint
/// resumes in JavaScript, then C, then Rust again (each at another
/// parallelism): every key's counts continue, each exactly once. State is
/// language-neutral bytes: every counter is on `wrun:operator@0.2.0`, each
/// built by its own language's toolchain and helper.
#[test]
fn a_rust_savepoint_resumes_in_python_then_javascript_then_c_then_rust() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let total = 100_000;
    let hops = [
        ("wordcount-counter", 2),
        ("wordcount-counter-py", 3),
        ("wordcount-counter-js", 1),
        ("wordcount-counter-c", 2),
    ];
    let restore = hops_to_savepoints(dir.path(), &d, "counter", &hops, total, 20_000);
    let c = start(
        dir.path(),
        &job(guest("wordcount-counter"), "counter", 3, total, None),
        &d,
        RunOptions {
            restore,
            ..RunOptions::default()
        },
    );
    c.join().unwrap();
    let all = counts(&dir.path().join("out.jsonl"));
    let mut n = 0;
    for (k, v) in &all {
        let mut s = v.clone();
        s.sort();
        assert_eq!(
            s,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "key {k}: counts did not continue across languages"
        );
        n += v.len() as u64;
    }
    assert_eq!(n, total);
}

/// The C counter as built against `wrun:operator@0.1.0`, before every
/// language moved to 0.2 (kept as a test fixture: no guest in the
/// repository is built against 0.1.0 any more).
const COUNTER_C_0_1_0: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/wordcount-counter-c-0.1.0.wasm"
);

/// A 0.1.0 component runs unchanged beside 0.2 ones (in the wordcount job,
/// after the 0.2 tokenizer: the golden output), and swaps under one uid
/// keep the state both ways: Rust (0.2) → C (0.1.0) → Rust (0.2), each
/// stopped with a savepoint, at changing parallelism; every key's counts
/// go on without a gap.
#[test]
fn a_0_1_component_runs_beside_0_2_ones_and_swaps_keep_the_state_both_ways() {
    let m = sandbox()
        .load(&std::fs::read(COUNTER_C_0_1_0).unwrap())
        .unwrap();
    assert_eq!(m.wit_version, "0.1.0");
    let golden = sorted_lines(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wordcount/golden.jsonl"),
    );
    let mixed =
        wordcount("wordcount-counter", 2).replace(guest("wordcount-counter"), COUNTER_C_0_1_0);
    assert!(mixed.contains(COUNTER_C_0_1_0));
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), &mixed, None).unwrap();
    assert_eq!(sorted_lines(&dir.path().join("out.jsonl")), golden);

    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let total = 60_000;
    let hops = [("wordcount-counter", 2), (COUNTER_C_0_1_0, 3)];
    let restore = hops_to_savepoints(dir.path(), &d, "counter", &hops, total, 20_000);
    start(
        dir.path(),
        &job(guest("wordcount-counter"), "counter", 1, total, None),
        &d,
        RunOptions {
            restore,
            ..RunOptions::default()
        },
    )
    .join()
    .unwrap();
    let all = counts(&dir.path().join("out.jsonl"));
    let mut n = 0;
    for (k, v) in &all {
        let mut s = v.clone();
        s.sort();
        assert_eq!(
            s,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "key {k}: counts did not continue across the 0.2 → 0.1 → 0.2 swaps"
        );
        n += v.len() as u64;
    }
    assert_eq!(n, total);
}

/// WASI is linked with nothing granted: no file, directory, environment
/// variable or network of the host is reachable by a guest that imports
/// WASI. The test listens on a loopback port the guest tries to connect
/// to, and checks that no connection ever arrived.
#[test]
fn wasi_grants_a_guest_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "the host's secret").unwrap();
    std::fs::write(
        dir.path().join("paths.txt"),
        format!("{}\n/etc/passwd\nsecret.txt\n", secret.display()),
    )
    .unwrap();
    let toml = format!(
        r#"version = 1
name = "probe"

[[source]]
name = "paths"
kind = "file"
path = "paths.txt"

[[operator]]
name = "probe"
component = "{}"
config = {{ port = {port} }}

[[sink]]
name = "out"
kind = "file"
path = "out.jsonl"

[[edge]]
from = "paths"
to = "probe"

[[edge]]
from = "probe"
to = "out"
"#,
        guest("wasi-probe-py")
    );
    run_in(dir.path(), &toml, None).unwrap_or_else(|e| panic!("{}", chain(&e)));
    let out = read_jsonl(&dir.path().join("out.jsonl"));
    let text = format!("{out:?}");
    assert!(!text.contains("the host's secret"), "{text}");
    assert!(!text.contains("root:"), "{text}");
    assert!(out.iter().all(|(k, _)| k != "read"), "{text}");
    assert_eq!(
        out.iter().filter(|(k, _)| k == "denied").count(),
        3,
        "{text}"
    );
    let get = |k: &str| out.iter().find(|(key, _)| key == k).unwrap().1.clone();
    assert_eq!(get("env"), "0", "{text}");
    assert!(get("root-list").starts_with("error"), "{text}");
    assert!(get("cwd-list").starts_with("error"), "{text}");
    assert!(get("net").starts_with("error"), "{text}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the guest reached the host's listening port"
    );
}

fn run_script(program: &str, args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let child = std::process::Command::new(program)
        .args(args)
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (scripts/setup installs it): {e}"));
    let (status, out, err) = wait_output_within(child, COMMAND_DEADLINE);
    assert!(status.success(), "{program} {args:?} failed:\n{out}{err}");
}

/// The Python helper's own tests (codec vectors, one host call per batch),
/// on the host's Python with the bindings faked.
#[test]
fn python_helper_tests() {
    run_script("python3", &["guest-sdk/python/tests/test_wrun_guest.py"]);
}

/// The JavaScript helper's own tests, on Node with the host's interfaces
/// faked.
#[test]
fn javascript_helper_tests() {
    run_script(
        "node",
        &[
            "--import",
            "./guest-sdk/js/tests/register.mjs",
            "--test",
            // A file, not the folder: Node 21 and later read a folder
            // argument as a module to load.
            "guest-sdk/js/tests/wrun.test.mjs",
        ],
    );
}

/// List and map state (`kinds`, `kinds-py`, `kinds-js`: the same logic in
/// Rust, Python and JavaScript) give the same output, and a savepoint of
/// the Rust one resumes in Python, then JavaScript, with the output of an
/// uninterrupted Rust run: their list and map state are the same bytes.
#[test]
fn list_and_map_state_are_the_same_in_every_language() {
    let total = 20_000;
    let uninterrupted = |component: &str| {
        let dir = tempfile::tempdir().unwrap();
        let d = data(dir.path());
        start(
            dir.path(),
            &job(guest(component), "kinds", 2, total, None),
            &d,
            RunOptions::default(),
        )
        .join()
        .unwrap_or_else(|e| panic!("{component}: {e}"));
        sorted_lines(&dir.path().join("out.jsonl"))
    };
    let golden = uninterrupted("kinds");
    assert_eq!(golden.len() as u64, total);
    // Lists of several values ("12,345") and maps of several entries.
    assert!(
        golden.iter().any(|l| {
            l.contains("|d")
                && l.as_bytes()
                    .windows(2)
                    .any(|w| w[0].is_ascii_digit() && w[1] == b',')
        }),
        "lists and maps hold several entries: {:?}",
        &golden[..3]
    );
    for twin in ["kinds-py", "kinds-js"] {
        assert!(uninterrupted(twin) == golden, "{twin} differs from kinds");
    }

    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let hops = [("kinds", 2), ("kinds-py", 3)];
    let restore = hops_to_savepoints(dir.path(), &d, "kinds", &hops, total, 5_000);
    start(
        dir.path(),
        &job(guest("kinds-js"), "kinds", 1, total, None),
        &d,
        RunOptions {
            restore,
            ..RunOptions::default()
        },
    )
    .join()
    .unwrap();
    assert!(
        sorted_lines(&dir.path().join("out.jsonl")) == golden,
        "Rust → Python → JavaScript across savepoints differs from an uninterrupted run"
    );
}

/// The clicks example (examples/clicks: session and tumbling windows over
/// out-of-order clicks, late clicks to a named output) with its Rust
/// windows replaced by the Python and by the JavaScript twin
/// (tests/guests/clicks-py, clicks-js: the helpers' `WindowState`) gives
/// the example's golden output, at parallelism 1 and 3.
#[test]
fn windows_in_python_and_javascript_give_the_rust_windows_golden_output() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/clicks");
    let input = std::fs::read_to_string(example.join("clicks.jsonl")).unwrap();
    let manifest = std::fs::read_to_string(example.join("job.toml")).unwrap();
    for twin in ["clicks-windows-py", "clicks-windows-js"] {
        for parallelism in [1, 3] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("clicks.jsonl"), &input).unwrap();
            let toml = manifest.replace("../../target/guests/clicks-windows.wasm", guest(twin));
            run_in(dir.path(), &toml, Some(parallelism))
                .unwrap_or_else(|e| panic!("{twin}: {}", chain(&e)));
            for name in ["sessions", "per-minute", "late"] {
                assert_eq!(
                    sorted_lines(&dir.path().join(format!("out/{name}.jsonl"))),
                    sorted_lines(&example.join(format!("golden/{name}.jsonl"))),
                    "{twin}: {name} at parallelism {parallelism}"
                );
            }
        }
    }
}

/// A generator of `count` keyed events in event time (1,000 a second, 200
/// ms out of order, 20 keys) into `component` (a clicks windows operator,
/// tumbling 1 s windows, uid `win`), its results into `out.jsonl` and its
/// late events into `late.jsonl`.
fn windows_job(component: &str, parallelism: u32, count: u64, rate: Option<u64>) -> String {
    let rate = rate.map(|r| format!("rate = {r}")).unwrap_or_default();
    format!(
        r#"version = 1
name = "windows"
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
config = {{ window = "tumbling", size-ms = 1000 }}

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
        component = guest(component),
    )
}

/// Window results, sorted: (key, JSON line).
fn window_lines(out: &Path) -> Vec<(String, String)> {
    let mut w = read_jsonl(out);
    w.sort();
    w
}

/// Timers are host-owned keyed state: a windowed job stopped with a
/// savepoint while its Python operator has windows open (pending
/// event-time timers the Python helper registered) resumes with the
/// JavaScript twin, which fires them, is stopped again with windows open
/// and resumes with the Rust one: every window is emitted exactly once,
/// with the count of an uninterrupted Rust run. The three keep the same
/// window state bytes and timer tags.
#[test]
fn pending_timers_of_python_fire_in_javascript_then_rust_after_savepoints() {
    let total = 30_000;
    let golden = tempfile::tempdir().unwrap();
    run_in(
        golden.path(),
        &windows_job("clicks-windows", 1, total, None),
        None,
    )
    .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let want = window_lines(&golden.path().join("out.jsonl"));
    assert!(want.len() >= 30 * 20, "{}", want.len());

    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let mut restore: Option<wrun::checkpoint::CheckpointManifest> = None;
    let mut before = 0;
    for (component, parallelism) in [("clicks-windows-py", 2), ("clicks-windows-js", 1)] {
        // Each hop reads 3 s of event time (3,000 events) before its
        // savepoint, so windows close in it, and stops with others open.
        let past: Vec<_> = match &restore {
            Some(cp) => cp.sources.clone(),
            None => vec![wrun::checkpoint::SourcePosition {
                vertex: "gen".into(),
                subtask: 0,
                position: 0,
                splits: Vec::new(),
            }],
        }
        .into_iter()
        .map(|mut p| {
            p.position += 3_000;
            p
        })
        .collect();
        let run = start(
            dir.path(),
            &windows_job(component, parallelism, total, Some(6_000)),
            &d,
            RunOptions {
                restore: restore.take(),
                ..RunOptions::default()
            },
        );
        savepoint_beyond(&run.control, None, &past);
        let sp = stop(&run.control, StopMode::Suspend);
        run.join().unwrap();
        let now = window_lines(&dir.path().join("out.jsonl")).len();
        assert!(now > before, "{component} fired no window");
        before = now;
        // The savepoint holds the windows still open, as timers.
        let out = ok(dir.path(), &["savepoint", "inspect", &sp.id]);
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("timers"))
            .unwrap_or_else(|| panic!("{component}: no timers in:\n{out}"));
        let pending: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(pending > 0, "{component}: {line}");
        restore = Some(sp.checkpoint);
    }
    start(
        dir.path(),
        &windows_job("clicks-windows", 3, total, None),
        &d,
        RunOptions {
            restore,
            ..RunOptions::default()
        },
    )
    .join()
    .unwrap();
    let got = window_lines(&dir.path().join("out.jsonl"));
    assert!(
        got == want,
        "Python → JavaScript → Rust windows differ from an uninterrupted Rust run ({} against {} results)",
        got.len(),
        want.len()
    );
    assert!(read_jsonl(&dir.path().join("late.jsonl")).is_empty());
}

/// The C counter with `config = { final = true }` registers an event-time
/// timer per word at the end of time, with one `register-many` per
/// batch: at the end of the input every one fires once (at parallelism 3,
/// in the subtask that owns its word) and emits the word's final count,
/// read from its keyed state in `on-timers`; the counts are the golden
/// output's.
#[test]
fn the_c_counter_fires_a_timer_per_word_at_the_end_of_input() {
    let golden = sorted_lines(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wordcount/golden.jsonl"),
    );
    let mut last = std::collections::BTreeMap::new();
    for l in &golden {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let n: u64 = v["value"].as_str().unwrap().parse().unwrap();
        let e = last
            .entry(v["key"].as_str().unwrap().to_string())
            .or_insert(0);
        *e = n.max(*e);
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = wordcount("wordcount-counter-c", 3).replace(
        "uid = \"word-counter\"",
        "uid = \"word-counter\"\nconfig = { final = true }",
    );
    run_in(dir.path(), &toml, None).unwrap_or_else(|e| panic!("{}", chain(&e)));
    let out = read_jsonl(&dir.path().join("out.jsonl"));
    let (finals, counts): (Vec<_>, Vec<_>) =
        out.into_iter().partition(|(_, v)| v.starts_with("final "));
    assert_eq!(counts.len(), golden.len());
    let finals: std::collections::BTreeMap<String, u64> = finals
        .into_iter()
        .map(|(k, v)| (k, v["final ".len()..].parse().unwrap()))
        .collect();
    assert_eq!(finals, last);
}
