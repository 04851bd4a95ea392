//! Manifest options that need no external system, each through a real job
//! in the `wrun` binary: `[checkpoint] min-pause-ms` spaces checkpoints as
//! docs/manifest.md says, and a generator's `seed` decides its key
//! sequence by the formula docs/manifest.md gives.

use crate::common::*;
use wrun::checkpoint::{CheckpointManifest, CheckpointStore};

/// A job `test`: a generator (`source`: its keys besides name and kind)
/// straight into the file sink `out.jsonl`; `job_extra` follows the job's
/// name.
fn generator_to_file(source: &str, job_extra: &str) -> String {
    format!(
        r#"version = 1
name = "test"
{job_extra}

[[source]]
name = "gen"
kind = "generator"
{source}

[[sink]]
name = "out"
kind = "file"
path = "out.jsonl"

[[edge]]
from = "gen"
to = "out"
"#
    )
}

/// Runs `manifest` to its end with `wrun run` in a new directory (its data
/// directory `data`): the directory.
fn run(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), manifest).unwrap();
    wrun_run_ok(dir.path(), "job.toml", &[]);
    dir
}

/// `min-pause-ms` is the least time from the end of one checkpoint to the
/// next trigger: with checkpoints due every 10 ms and a 400 ms pause, each
/// periodic checkpoint's trigger (`triggered-at-ms` in its manifest) comes
/// at least 400 ms after the previous one ended (its trigger plus its
/// `duration-ms`). Without the pause they would come every ~10 ms.
#[test]
fn min_pause_spaces_each_checkpoint_from_the_end_of_the_previous_one() {
    const PAUSE: u64 = 400;
    // A paced generator: 50 events at 20 a second, about 2.5 s of job.
    let dir = run(&generator_to_file(
        "count = 50\nrate = 20.0",
        &format!("[checkpoint]\ninterval-ms = 10\nmin-pause-ms = {PAUSE}\nretain = 1000"),
    ));
    let store = CheckpointStore::open_dir(&dir.path().join("data/checkpoints")).unwrap();
    let mut periodic: Vec<CheckpointManifest> = store
        .list_checkpoints("test")
        .unwrap()
        .into_iter()
        .map(|id| store.get_manifest("test", id).unwrap())
        // The final checkpoint (the input ended) is taken at once, not on
        // the timer.
        .filter(|m| !m.input_ended)
        .collect();
    periodic.sort_by_key(|m| m.id);
    assert!(
        periodic.len() >= 3,
        "{} periodic checkpoints in a job of 2.5 s",
        periodic.len()
    );
    for w in periodic.windows(2) {
        let ended = w[0].triggered_at_ms + w[0].duration_ms;
        // The coordinator measures the pause on its own monotonic clock
        // (exec::Clock), from when it had finished the checkpoint, which is
        // at or after the end its `duration-ms` records; the manifests'
        // times are wall-clock ms since the epoch, each cut to whole ms:
        // hence 2 ms of slack.
        assert!(
            w[1].triggered_at_ms + 2 >= ended + PAUSE,
            "checkpoint {} was triggered {} ms after checkpoint {} ended (min-pause-ms = {PAUSE})",
            w[1].id.0,
            w[1].triggered_at_ms as i64 - ended as i64,
            w[0].id.0
        );
    }
}

/// `(key, value)` of a generator's events by docs/manifest.md: event `seq`
/// has key `key-<splitmix64(seq XOR rotate_left(seed, 17)) % keys>` and
/// value `seq % 1000`.
fn documented(count: u64, keys: u64, seed: u64) -> Vec<(String, String)> {
    let splitmix64 = |mut x: u64| {
        x = x.wrapping_add(0x9e3779b97f4a7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
        x ^ (x >> 31)
    };
    (0..count)
        .map(|seq| {
            let k = splitmix64(seq ^ seed.rotate_left(17)) % keys;
            (format!("key-{k}"), (seq % 1000).to_string())
        })
        .collect()
}

/// A generator's `seed` decides its key sequence, as documented: the same
/// seed gives the same output in two runs, another seed another output,
/// each the one docs/manifest.md's formula gives.
#[test]
fn the_generator_seed_decides_the_key_sequence_as_documented() {
    // The formula gives docs/manifest.md's example (5 events, 3 keys, seed 0).
    let example: Vec<(String, String)> = [(1, 0), (2, 1), (1, 2), (0, 3), (1, 4)]
        .iter()
        .map(|(k, v)| (format!("key-{k}"), v.to_string()))
        .collect();
    assert_eq!(documented(5, 3, 0), example);
    let output = |seed: u64| {
        let dir = run(&generator_to_file(
            &format!("count = 300\nkeys = 7\nseed = {seed}"),
            "",
        ));
        read_jsonl(&dir.path().join("out.jsonl"))
    };
    let first = output(42);
    assert_eq!(first, documented(300, 7, 42));
    assert_eq!(output(42), first, "the same seed gave another output");
    let other = output(43);
    assert_ne!(other, first, "seeds 42 and 43 gave the same output");
    assert_eq!(other, documented(300, 7, 43));
}
