//! Fuzzing with proptest rather than cargo-fuzz: the targets run on the
//! stable toolchain in every `cargo test`, with the suite's real fixtures
//! (components, a real checkpoint, the real router), where cargo-fuzz
//! needs a nightly compiler, its own tool and a crate per target. Each
//! target feeds generated and mutated input to one parser and asserts it
//! returns an answer — a value or an error — and never panics.
//!
//! - the job manifest parser (`job.toml`);
//! - the checkpoint manifest reader (through the filesystem store);
//! - module upload validation (`module::push`), on mutated real components;
//! - the HTTP API's bodies and queries (the router of a real `wrun serve`
//!   runtime, in process).
//!
//! (The state codec's targets are unit tests in `state/snapshot.rs` and the
//! guest SDK.) `WRUN_FUZZ_SECONDS` (default: one round of
//! `WRUN_FUZZ_CASES`, 64, per target) runs each target for that long:
//! `scripts/fuzz 60`. A failing case is printed, shrunk, and belongs in
//! the regression list at the end of its target.

use crate::common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::time::{Duration, Instant};

/// Runs `test` over `strategy` for the time budget (or one round).
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let cases = std::env::var("WRUN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let budget = std::env::var("WRUN_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs);
    // A crash no test harness survives (a stack overflow aborts the
    // process) leaves its input here, when asked (`scripts/fuzz` asks).
    let last = std::env::var_os("WRUN_FUZZ_LAST").map(|p| {
        std::cell::RefCell::new(std::fs::File::create(p).expect("WRUN_FUZZ_LAST is writable"))
    });
    let started = Instant::now();
    let ran = std::cell::Cell::new(0u64);
    loop {
        // A runner per round: one runs `cases` cases once; a new one draws
        // new cases (proptest seeds it from the OS).
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let counted = |v: S::Value| {
            ran.set(ran.get() + 1);
            if let Some(file) = &last {
                // Rewritten in place: no open or close per case.
                use std::io::{Seek, Write};
                let mut f = file.borrow_mut();
                let text = format!("{name}: {v:?}");
                let _ = f.seek(std::io::SeekFrom::Start(0));
                let _ = f.write_all(text.as_bytes());
                let _ = f.set_len(text.len() as u64);
            }
            test(v)
        };
        if let Err(e) = runner.run(&strategy, counted) {
            panic!("fuzz target {name}: {e}");
        }
        if budget.is_none_or(|b| started.elapsed() >= b) {
            break;
        }
    }
    eprintln!(
        "fuzz {name}: {} cases in {:.1} s, no failure",
        ran.get(),
        started.elapsed().as_secs_f64()
    );
}

/// Bytes: mostly mutations of `seed` (cuts, flipped bytes, splices), some
/// arbitrary.
fn mutations(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = seed.len().max(1);
    prop_oneof![
        3 => (0..n, 0..n, any::<u8>(), 0..4usize).prop_map(move |(cut, at, byte, how)| {
            let mut b = seed.clone();
            match how {
                0 => b.truncate(cut),
                1 => {
                    if at < b.len() {
                        b[at] ^= byte | 1;
                    }
                }
                2 => b.insert(at.min(b.len()), byte),
                _ => {
                    let end = (at + 16).min(b.len());
                    b.drain(at.min(end)..end);
                }
            }
            b
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

const MANIFEST: &str = include_str!("../ui/ok-full.toml");

#[test]
fn fuzz_the_job_manifest_parser() {
    fuzz(
        "job manifest",
        mutations(MANIFEST.as_bytes().to_vec()),
        |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            let _ = wrun::job::parse_manifest(&text, "fuzz.toml", std::path::Path::new("/"), None);
            Ok(())
        },
    );
    // Regressions found by fuzzing go here.
}

#[test]
fn fuzz_the_checkpoint_manifest_reader() {
    use wrun::checkpoint::CheckpointStore;
    // A real manifest, from a real run.
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(CheckpointStore::open_dir(&dir.path().join("cp")).unwrap());
    let job = generator_job(
        2000,
        10,
        guest("wordcount-counter"),
        "uid = \"c\"",
        "hash",
        "[checkpoint]\ninterval-ms = 5",
    )
    .replace("keys = 10\n", "keys = 10\nrate = 20000.0\n");
    let store_dyn: std::sync::Arc<CheckpointStore> = store.clone();
    let opts = wrun::exec::RunOptions {
        store: Some(store_dyn),
        ..wrun::exec::RunOptions::default()
    };
    run_supervised(dir.path(), &job, &opts).unwrap();
    let id = *store
        .list_checkpoints("test")
        .unwrap()
        .last()
        .expect("a checkpoint");
    let path = dir
        .path()
        .join(format!("cp/jobs/test/checkpoints/{}.json", id.0));
    let seed = std::fs::read(&path).unwrap();
    fuzz("checkpoint manifest", mutations(seed), |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        // An answer, never a panic; and what reads back whole is usable.
        if let Ok(m) = store.get_manifest("test", id) {
            let _ = m.chunks().count();
        }
        Ok(())
    });
}

#[test]
fn fuzz_module_upload_validation() {
    let dir = tempfile::tempdir().unwrap();
    let store = wrun::module::ModuleStore::new(dir.path());
    let seed = std::fs::read(guest("wordcount-tokenizer")).unwrap();
    let core = {
        let p = std::path::Path::new(guest("wordcount-tokenizer"));
        let target = p.parent().unwrap().parent().unwrap();
        std::fs::read(
            target.join("wasm-guests/wasm32-unknown-unknown/guest/wordcount_tokenizer.wasm"),
        )
        .unwrap()
    };
    let strategy = prop_oneof![mutations(seed), mutations(core)];
    fuzz("module upload", strategy, |bytes| {
        let _ = wrun::module::push(&store, sandbox(), &bytes, Some(("fuzz", "1")), 1 << 20);
        Ok(())
    });
    // Regressions found by fuzzing.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    for (file, what) in [
        // wit-parser's decoder reached an `unreachable!`.
        ("module-upload-wit-parser-unreachable.wasm", "a panic"),
        // Embedded WIT packages that depend on each other in a cycle:
        // wit-parser's package ordering recursed until the stack
        // overflowed, aborting the process.
        (
            "module-upload-wit-parser-package-cycle.wasm",
            "a stack overflow",
        ),
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let err = wrun::module::push(&store, sandbox(), &bytes, None, 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("embedded component type is malformed"),
            "{file} (once {what}): {err}"
        );
    }
}

/// The HTTP API's bodies, through the router of a real `wrun serve`
/// runtime (module store and deployer included): mutated savepoint and
/// stop bodies to a job's routes, mutated deploy requests (a real job that
/// deploys and runs when left whole), savepoint imports and module
/// uploads, with crafted names. Never a 500.
#[test]
fn fuzz_the_http_api_bodies() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sandbox = std::sync::Arc::new(
        wrun::sandbox::Sandbox::new(wrun::sandbox::SandboxConfig {
            cache_dir: Some(
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile-cache"),
            ),
            ..wrun::sandbox::SandboxConfig::default()
        })
        .unwrap(),
    );
    let rt = wrun::serve::Runtime::open(
        &wrun::serve::ServeConfig {
            data_dir: data.clone(),
            state_url: None,
            max_module_bytes: 1 << 20,
            cluster: None,
        },
        sandbox.clone(),
    )
    .unwrap();
    let api = rt.api();
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    api.add_job("j", wrun::exec::JobControl::new("j"));
    // A module in the store, so a deploy request can name it by digest.
    let bytes = std::fs::read(guest("wordcount-counter")).unwrap();
    let digest = wrun::module::push(
        &wrun::module::ModuleStore::new(&data),
        &sandbox,
        &bytes,
        None,
        1 << 20,
    )
    .unwrap()
    .module
    .digest;
    let manifest = generator_job(5, 2, &digest, "uid = \"c\"", "hash", "")
        .replace("name = \"test\"", "name = \"fz\"")
        .replace(
            "path = \"out.jsonl\"",
            &format!("path = \"{}\"", dir.path().join("out.jsonl").display()),
        );
    let deploy = serde_json::json!({
        "manifest": manifest,
        "base-dir": dir.path(),
        "parallelism": 1,
    });
    let router = wrun::api::router(api);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let routes = [
        "/v1/jobs/j/savepoints",
        "/v1/jobs/j/checkpoints",
        "/v1/jobs/j/cancel",
        "/v1/jobs",
        "/v1/savepoint-imports",
        "/v1/modules?name=a&version=1",
        "/v1/modules?name=../../x&version=1",
        "/v1/modules?name=a&version=..%2F..%2Fx",
        "/v1/jobs/..%2F..%2Fx/savepoints",
    ];
    let bodies = prop_oneof![
        mutations(br#"{"name": "nightly", "stop": "suspend"}"#.to_vec()),
        mutations(serde_json::to_vec(&deploy).unwrap()),
        mutations(br#"{"dir": "/tmp/x", "name": "n"}"#.to_vec()),
        mutations(br#"{"dir": "../../../etc", "name": "../x"}"#.to_vec()),
    ];
    fuzz("http api", (0..routes.len(), bodies), |(route, body)| {
        let req = Request::post(routes[route])
            .header("Authorization", format!("Bearer {}", token.trim()))
            .header("Content-Type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = tokio.block_on(router.clone().oneshot(req)).unwrap();
        let status = resp.status();
        prop_assert!(
            status != StatusCode::INTERNAL_SERVER_ERROR,
            "{} answered {status}",
            routes[route]
        );
        Ok(())
    });
    rt.shutdown();
}
