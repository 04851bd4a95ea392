//! The wordcount example against its golden output, at parallelism 1 and 3.

use crate::common::*;
use std::path::Path;

fn example_dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/wordcount"
    ))
}

/// The example's manifest with the sink redirected into `dir`.
fn manifest(out: &Path) -> String {
    let text = std::fs::read_to_string(example_dir().join("job.toml")).unwrap();
    let text = text.replace(
        "path = \"out/counts.jsonl\"",
        &format!("path = {:?}", out.display().to_string()),
    );
    text.replace(
        "../../target/guests/wordcount-tokenizer.wasm",
        guest("wordcount-tokenizer"),
    )
    .replace(
        "../../target/guests/wordcount-counter.wasm",
        guest("wordcount-counter"),
    )
}

fn golden() -> Vec<(String, String)> {
    sorted(read_jsonl(&example_dir().join("golden.jsonl")))
}

#[test]
fn wordcount_matches_golden_at_parallelism_1_and_3() {
    for p in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("counts.jsonl");
        let report = run_in(example_dir(), &manifest(&out), Some(p)).unwrap();
        assert_eq!(sorted(read_jsonl(&out)), golden(), "parallelism {p}");
        let count = report.vertices.iter().find(|v| v.name == "count").unwrap();
        assert_eq!(count.records_in, golden().len() as u64);
    }
}

#[test]
fn the_wrun_binary_runs_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("counts.jsonl");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        manifest(&out).replace(
            "path = \"input.txt\"",
            &format!(
                "path = {:?}",
                example_dir().join("input.txt").display().to_string()
            ),
        ),
    )
    .unwrap();
    let (code, _, stderr) = wrun(
        dir.path(),
        &["run", job.to_str().unwrap(), "--parallelism", "2"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(sorted(read_jsonl(&out)), golden());
}
