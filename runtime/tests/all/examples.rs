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
