//! The README's example scripts, run as a new user runs them (with this
//! build's `wrun` binary through `WRUN`, so the script does not build
//! another): each exits 0, and each prints the same ten most frequent
//! words, whether the wordcount job reads a file, a NATS JetStream stream
//! or a Kafka-API broker's topic.

use crate::common::*;
use std::path::Path;
use std::process::Command;

/// The `  <count>  <word>` lines a script ends with.
fn top_words(stdout: &str) -> Vec<(u64, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let n = parts.next()?.parse().ok()?;
            let word = parts.next()?.to_string();
            (parts.next().is_none() && l.starts_with("  ")).then_some((n, word))
        })
        .collect()
}

#[test]
fn the_example_scripts_exit_0_and_agree_on_the_top_words() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut tops = Vec::new();
    for script in ["example", "nats-example", "kafka-example"] {
        let (code, out, err) = output_within(
            Command::new(root.join("scripts").join(script))
                .current_dir(&root)
                .env("WRUN", wrun_bin())
                .env_remove("WRUN_DATA_DIR")
                .env_remove("WRUN_CRASH_AT"),
            std::time::Duration::from_secs(600),
        );
        assert_eq!(code, 0, "scripts/{script} exited with {code}: {out}\n{err}");
        let top = top_words(&out);
        assert_eq!(top.len(), 10, "scripts/{script} printed: {out}");
        tops.push((script, top));
    }
    for (script, top) in &tops[1..] {
        assert_eq!(
            top, &tops[0].1,
            "scripts/{script} and scripts/example disagree"
        );
    }
}

/// Event time in ms since 10:00 of a click line of examples/clicks (all of
/// its clicks are within that hour: `…T10:MM:SS.mmmZ`).
fn click_ms(line: &str) -> i64 {
    let ts = line.split("\"ts\": \"").nth(1).unwrap();
    let (m, s, ms) = (&ts[14..16], &ts[17..19], &ts[20..23]);
    (m.parse::<i64>().unwrap() * 60 + s.parse::<i64>().unwrap()) * 1000 + ms.parse::<i64>().unwrap()
}

/// Sorted lines of a file.
fn sorted_lines(path: &Path) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(String::from)
        .collect();
    l.sort();
    l
}

#[test]
fn the_clicks_example_gives_its_golden_output_at_any_parallelism_and_arrival_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = root.join("examples/clicks");
    // As a user runs it: the script checks the golden output itself.
    let (code, out, err) = output_within(
        Command::new(root.join("scripts/clicks-example"))
            .current_dir(&root)
            .env("WRUN", wrun_bin())
            .env_remove("WRUN_DATA_DIR")
            .env_remove("WRUN_CRASH_AT"),
        std::time::Duration::from_secs(600),
    );
    assert_eq!(
        code, 0,
        "scripts/clicks-example exited with {code}: {out}\n{err}"
    );
    assert!(out.contains("the output matches"), "{out}");

    // Any arrival order within the 5 s bound, at parallelism 1 and 3: the
    // same windows, and the same late clicks (the delayed ones stay last).
    let input = std::fs::read_to_string(example.join("clicks.jsonl")).unwrap();
    let (delayed, on_time): (Vec<&str>, Vec<&str>) =
        input.lines().partition(|l| l.contains("\"delayed\""));
    let toml = std::fs::read_to_string(example.join("job.toml"))
        .unwrap()
        .replace(
            "../../target/guests/clicks-windows.wasm",
            guest("clicks-windows"),
        );
    for (seed, parallelism) in [(1u64, 1), (2, 3), (3, 3)] {
        let mut rng = seed;
        let mut jitter = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((rng >> 33) % 5001) as i64
        };
        let mut order: Vec<(i64, &str)> = on_time
            .iter()
            .map(|l| (click_ms(l) + jitter(), *l))
            .collect();
        order.sort();
        let mut lines: Vec<&str> = order.into_iter().map(|(_, l)| l).collect();
        assert_ne!(lines, on_time, "seed {seed} shuffled nothing");
        lines.extend(&delayed);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("clicks.jsonl"), lines.join("\n")).unwrap();
        run_in(dir.path(), &toml, Some(parallelism)).unwrap();
        for name in ["sessions", "per-minute", "late"] {
            assert_eq!(
                sorted_lines(&dir.path().join(format!("out/{name}.jsonl"))),
                sorted_lines(&example.join(format!("golden/{name}.jsonl"))),
                "{name}, seed {seed}, parallelism {parallelism}"
            );
        }
    }
}
