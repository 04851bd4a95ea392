//! Builds every guest crate into a component (once; the guest build skips
//! itself when nothing changed) and writes their paths as constants.

fn main() {
    let root = wrun_xtask::repo_root();
    for dir in [
        "wit",
        "guest-sdk",
        "examples",
        "tests/guests",
        "Cargo.lock",
        "xtask/toolchains",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let guests = match wrun_xtask::build_guests(&wrun_xtask::Options {
        force: false,
        verbose: false,
    }) {
        Ok(g) => g,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            panic!("building the guest components failed: {}", chain.join(": "));
        }
    };
    let mut src = String::new();
    for g in &guests {
        let name = g.package.to_uppercase().replace('-', "_");
        src.push_str(&format!(
            "/// The `{}` component.\npub const {name}: &str = {:?};\n",
            g.package,
            g.component.display().to_string()
        ));
    }
    src.push_str(
        "/// Every guest: (package name, component path).\npub const ALL: &[(&str, &str)] = &[\n",
    );
    for g in &guests {
        src.push_str(&format!(
            "    ({:?}, {}),\n",
            g.package,
            g.package.to_uppercase().replace('-', "_")
        ));
    }
    src.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("guests.rs");
    std::fs::write(&out, src).expect("writing guests.rs");
}
