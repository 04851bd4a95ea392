//! Components: every guest is a component exporting wrun:operator and
//! importing nothing but wrun:operator/* (and WASI for Python ones:
//! componentize-py's CPython needs it; it is linked with nothing granted);
//! and components that are not operators are refused with a message that
//! says why.

use crate::common::*;
use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
use wit_parser::{ManglingAndAbi, Resolve};
use wrun::sandbox::SandboxError;

#[test]
fn every_guest_exports_the_operator_and_imports_only_wrun() {
    for (name, path) in wrun_test_guests::ALL {
        let bytes = std::fs::read(path).unwrap();
        let m = sandbox()
            .load(&bytes)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // Every guest is built against `wit/operator.wit` (a helper of
        // another language may still be on 0.1.0).
        let other_language = ["-py", "-js", "-c"].iter().any(|l| name.ends_with(l));
        assert!(
            m.wit_version == current_wit() || (other_language && m.wit_version == "0.1.0"),
            "{name}: {}",
            m.wit_version
        );
        let python = name.ends_with("-py");
        assert_eq!(m.imports_wasi, python, "{name}: {:?}", m.imports);
        for i in &m.imports {
            assert!(
                i.starts_with("wrun:operator/") || (python && i.starts_with("wasi:")),
                "{name} imports {i}"
            );
        }
    }
}

/// The version of `wit/operator.wit`.
fn current_wit() -> String {
    let wit = include_str!("../../../wit/operator.wit");
    let line = wit
        .lines()
        .find_map(|l| l.strip_prefix("package wrun:operator@"))
        .unwrap();
    line.trim_end_matches(';').to_string()
}

/// A component built against `wrun:operator@0.2.0`, before `state.set-ttl`
/// was added in 0.2.1: the wordcount counter of the Rust SDK of then.
const COUNTER_0_2_0: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/wordcount-counter-0.2.0.wasm"
);

#[test]
fn a_component_of_an_earlier_patch_version_runs_unchanged() {
    assert_ne!(current_wit(), "0.2.0");
    let m = sandbox()
        .load(&std::fs::read(COUNTER_0_2_0).unwrap())
        .unwrap();
    assert_eq!(m.wit_version, "0.2.0");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wordcount");
    let job = std::fs::read_to_string(example.join("job.toml"))
        .unwrap()
        .replace(
            "../../target/guests/wordcount-tokenizer.wasm",
            guest("wordcount-tokenizer"),
        )
        .replace("../../target/guests/wordcount-counter.wasm", COUNTER_0_2_0)
        .replace(
            "input.txt",
            &example.join("input.txt").display().to_string(),
        )
        .replace("out/counts.jsonl", "out.jsonl");
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), &job, None).unwrap();
    let sorted = |p: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        sorted(&dir.path().join("out.jsonl")),
        sorted(&example.join("golden.jsonl"))
    );
}

#[test]
fn a_declared_migration_survives_componentizing() {
    // The SDK's `migrates_from` custom section is in the core module inside
    // the component; the host finds it there.
    let chaos = sandbox()
        .load(&std::fs::read(guest("chaos")).unwrap())
        .unwrap();
    assert_eq!(chaos.migrates_from, vec!["wordcount".to_string()]);
    let counter = sandbox()
        .load(&std::fs::read(guest("wordcount-counter")).unwrap())
        .unwrap();
    assert!(counter.migrates_from.is_empty());
}

#[test]
fn statefulness_is_read_from_imports() {
    let counter = sandbox()
        .load(&std::fs::read(guest("wordcount-counter")).unwrap())
        .unwrap();
    assert!(counter.imports_state);
    let tokenizer = sandbox()
        .load(&std::fs::read(guest("wordcount-tokenizer")).unwrap())
        .unwrap();
    assert!(!tokenizer.imports_state, "{:?}", tokenizer.imports);
}

/// A component for an arbitrary world, with trapping function bodies.
fn component_for(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let pkg = resolve.push_str("test.wit", wit).unwrap();
    let world = resolve.select_world(&[pkg], Some(world)).unwrap();
    let mut module = dummy_module(&resolve, world, ManglingAndAbi::Standard32);
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8).unwrap();
    ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// The real WIT of 0.1.0 (`wit/0.1.0/`) with its version changed. (A
/// dummy 0.2 component cannot be loaded: loading calls its `describe`.)
fn wit_at_version(v: &str) -> String {
    let wit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../wit/0.1.0/operator.wit"
    ))
    .unwrap();
    wit.replace(
        "package wrun:operator@0.1.0;",
        &format!("package wrun:operator@{v};"),
    )
}

#[test]
fn an_unsupported_wit_version_is_refused() {
    let bytes = component_for(&wit_at_version("0.3.0"), "operator");
    let err = sandbox().load(&bytes).unwrap_err();
    assert!(
        matches!(err, SandboxError::UnsupportedVersion { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(
            "implements wrun:operator@0.3.0, which this wrun does not support (it supports 0.1.x and 0.2.x)"
        ),
        "{err}"
    );
}

#[test]
fn a_compatible_patch_version_is_accepted() {
    let bytes = component_for(&wit_at_version("0.1.3"), "operator");
    let m = sandbox().load(&bytes).unwrap();
    assert_eq!(m.wit_version, "0.1.3");
}

#[test]
fn a_component_that_is_not_an_operator_is_refused() {
    let bytes = component_for(
        "package acme:thing; interface api { run: func(); } world thing { export api; }",
        "thing",
    );
    let err = sandbox().load(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("does not implement the wrun:operator world: it exports [acme:thing/api]"),
        "{err}"
    );
}

#[test]
fn an_import_the_host_lacks_is_refused() {
    let wit = wit_at_version("0.1.0").replace(
        "    export handler;",
        "    export handler;\n    import acme:db/query;",
    ) + "\npackage acme:db { interface query { get: func(k: string) -> string; } }\n";
    let bytes = component_for(&wit, "operator");
    let err = sandbox().load(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("imports acme:db/query, which wrun does not provide"),
        "{err}"
    );
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let err = sandbox().load(b"hello").unwrap_err().to_string();
    assert!(err.contains("is not a WebAssembly component"), "{err}");
    let core = b"\0asm\x01\0\0\0";
    let err = sandbox().load(core).unwrap_err().to_string();
    assert!(err.contains("core WebAssembly module"), "{err}");
    let mut truncated = std::fs::read(guest("chaos")).unwrap();
    truncated.truncate(truncated.len() / 2);
    let err = sandbox().load(&truncated).unwrap_err().to_string();
    assert!(err.contains("does not compile"), "{err}");
}

#[test]
fn batches_cross_the_boundary_byte_for_byte() {
    // Keys present, absent and empty; empty and binary values; timestamps
    // present, absent and negative; a value larger than the inline sizes.
    use wrun::batch::Batch;
    use wrun::sandbox::{CallLimits, OperatorInstance, SubtaskInfo};
    use wrun::state::{KeyGroupRange, KeyedState, StateLimits};
    let module = sandbox()
        .load(&std::fs::read(guest("chaos")).unwrap())
        .unwrap();
    let info = SubtaskInfo {
        uid: "echo".into(),
        subtask_index: 0,
        parallelism: 1,
        max_parallelism: 128,
        config: br#"{"mode":"echo"}"#.to_vec(),
        restored: false,
        restored_format: None,
    };
    let limits = CallLimits {
        memory_bytes: 64 << 20,
        call_timeout: std::time::Duration::from_secs(10),
        max_output_events: 100_000,
    };
    let state = KeyedState::new(
        128,
        KeyGroupRange { start: 0, end: 128 },
        StateLimits::default(),
    );
    let mut op = OperatorInstance::instantiate(sandbox(), &module, &info, limits, state).unwrap();
    op.open(&info).unwrap();
    let big = vec![0xa5u8; 100_000];
    let mut batch = Batch::default();
    batch.push(Some(b"k"), b"v", Some(7));
    batch.push(None, b"", None);
    batch.push(Some(b""), &[0, 255, 1], Some(-3));
    batch.push(Some(b"big"), &big, Some(i64::MIN));
    for i in 0..2000u32 {
        batch.push(Some(&i.to_le_bytes()), &i.to_be_bytes(), Some(i64::from(i)));
    }
    for _ in 0..3 {
        let out = op.process(&batch).unwrap();
        assert_eq!(out.len(), batch.len());
        assert!(out.iter().eq(batch.iter()));
    }
    assert!(op.close().unwrap().is_empty());
}
