//! The binary the crash tests launch has its crash points (and, built as
//! this package's binary, is built whenever this test is: `cargo test
//! --workspace` always brings `target/<profile>/wrun-crash` up to date).

#[test]
fn the_crash_build_says_it_has_crash_points() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wrun-crash"))
        .arg("--version")
        .output()
        .expect("run wrun-crash --version");
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{v}");
    assert!(v.contains("crash points"), "{v}");
}
