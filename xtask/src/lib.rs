//! Builds the repository's guest crates into WebAssembly components.
//!
//! A guest crate is any crate under `examples/` or `tests/guests/` whose
//! `Cargo.toml` has `[package.metadata.wrun] guest = true`. Each is compiled
//! to a core module for `wasm32-unknown-unknown`, then turned into a
//! component with `wit-component`, and written to
//! `target/guests/<package>.wasm`.
//!
//! The toolchain: the rustup `wasm32-unknown-unknown` target where it is
//! installed; otherwise Debian's `rustc-web` with `-Zbuild-std` (rustup
//! cannot download targets on machines without internet access). The build
//! is skipped entirely when a fingerprint of every input is unchanged.
//! Guests in Python and JavaScript are built by [`lang`].

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod lang;

/// How to build.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Rebuild even when the fingerprint says nothing changed.
    pub force: bool,
    /// Print progress to stderr.
    pub verbose: bool,
}

/// A built guest.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The cargo package name.
    pub package: String,
    /// The component file.
    pub component: PathBuf,
}

/// The repository root (the directory of the workspace `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The machine's cache, shared by every clone: `$XDG_CACHE_HOME/wrun`, else
/// `$HOME/.cache/wrun`, else `target/machine-cache` in this clone. The guest
/// toolchains and built guests of other languages are kept there, keyed by
/// what they were made from, so a fresh clone reuses them.
pub fn machine_cache() -> PathBuf {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("XDG_CACHE_HOME")
        .or_else(|| from("HOME").map(|h| h.join(".cache")))
        .map(|c| c.join("wrun"))
        .unwrap_or_else(|| repo_root().join("target").join("machine-cache"))
}

/// Where components are written.
pub fn guests_dir() -> PathBuf {
    repo_root().join("target").join("guests")
}

/// Finds the guest crates: (package name, crate directory).
pub fn discover() -> Result<Vec<(String, PathBuf)>> {
    let root = repo_root();
    let mut found = Vec::new();
    for top in ["examples", "tests/guests"] {
        walk(&root.join(top), 3, &mut |manifest| {
            let text = std::fs::read_to_string(manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            let doc: toml::Table =
                toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
            let package = doc.get("package").and_then(|p| p.as_table());
            let is_guest = package
                .and_then(|p| p.get("metadata"))
                .and_then(|m| m.get("wrun"))
                .and_then(|w| w.get("guest"))
                .and_then(|g| g.as_bool())
                .unwrap_or(false);
            if is_guest {
                let name = package
                    .and_then(|p| p.get("name"))
                    .and_then(|n| n.as_str())
                    .context("guest crate without a package name")?;
                found.push((
                    name.to_string(),
                    manifest.parent().map(Path::to_path_buf).unwrap_or_default(),
                ));
            }
            Ok(())
        })?;
    }
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, depth: u32, f: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
    let manifest = dir.join("Cargo.toml");
    if manifest.is_file() {
        f(&manifest)?;
    }
    if depth == 0 || !dir.is_dir() {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for e in entries {
        if e.file_name().is_some_and(|n| n == "target" || n == "src") {
            continue;
        }
        walk(&e, depth - 1, f)?;
    }
    Ok(())
}

/// Which compiler builds the guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolchain {
    /// rustup's `wasm32-unknown-unknown` target.
    Rustup,
    /// Debian's `rustc-web` + `rust-web-src`, with `-Zbuild-std`.
    DebianWeb,
}

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust/library";
const DEBIAN_LINKER: &str = "wasm-ld-19";

/// Picks the toolchain, or says how to install one.
pub fn detect_toolchain() -> Result<Toolchain> {
    if let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        return Ok(Toolchain::Rustup);
    }
    let linker_ok = Command::new(DEBIAN_LINKER)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if Path::new(DEBIAN_RUSTC).is_file()
        && Path::new(DEBIAN_CARGO).is_file()
        && Path::new(DEBIAN_STD_SRC).is_dir()
        && linker_ok
    {
        return Ok(Toolchain::DebianWeb);
    }
    bail!(
        "no Rust toolchain for wasm32-unknown-unknown was found.\n\
         Install one with `scripts/setup` (Debian: apt-get install rustc-web cargo-web rust-web-src lld-19),\n\
         or, where rustup can download, `rustup target add wasm32-unknown-unknown`."
    )
}

fn toolchain_id(tc: &Toolchain) -> String {
    let rustc = match tc {
        Toolchain::Rustup => "rustc",
        Toolchain::DebianWeb => DEBIAN_RUSTC,
    };
    let version = Command::new(rustc)
        .arg("-vV")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    format!("{tc:?}\n{version}")
}

/// A blake3 over every file a guest build reads.
fn fingerprint(tc: &Toolchain, guests: &[(String, PathBuf)]) -> Result<String> {
    let root = repo_root();
    let mut h = blake3::Hasher::new();
    h.update(toolchain_id(tc).as_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    let mut files = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    let mut dirs = vec![root.join("wit"), root.join("guest-sdk")];
    dirs.extend(guests.iter().map(|(_, d)| d.clone()));
    for d in dirs {
        collect_files(&d, &mut files)?;
    }
    files.sort();
    for f in files {
        h.update(
            f.strip_prefix(&root)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(&std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?);
    }
    Ok(h.finalize().to_hex().to_string())
}

pub(crate) fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n == "target" || n == "node_modules" || n == "__pycache__")
            {
                continue;
            }
            collect_files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Builds every guest: the Rust crates, then the guests in other languages
/// ([`lang`]). Does nothing for a guest whose inputs did not change since
/// its last successful build.
pub fn build_guests(opts: &Options) -> Result<Vec<Guest>> {
    let mut all = build_rust_guests(opts)?;
    all.extend(lang::build(opts)?);
    Ok(all)
}

/// Builds every Rust guest crate. Does nothing when no input changed since
/// the last successful build and every component exists.
pub fn build_rust_guests(opts: &Options) -> Result<Vec<Guest>> {
    let root = repo_root();
    let guests = discover()?;
    let out_dir = guests_dir();
    let built: Vec<Guest> = guests
        .iter()
        .map(|(p, _)| Guest {
            package: p.clone(),
            component: out_dir.join(format!("{p}.wasm")),
        })
        .collect();
    let tc = detect_toolchain()?;
    let fp = fingerprint(&tc, &guests)?;
    let stamp = out_dir.join(".fingerprint");
    if !opts.force
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(fp.as_str())
        && built.iter().all(|g| g.component.is_file())
    {
        if opts.verbose {
            eprintln!(
                "guests: up to date ({} components in {})",
                built.len(),
                out_dir.display()
            );
        }
        return Ok(built);
    }

    let target_dir = root.join("target").join("wasm-guests");
    let mut cmd = match tc {
        Toolchain::Rustup => Command::new("cargo"),
        Toolchain::DebianWeb => Command::new(DEBIAN_CARGO),
    };
    // Called from a build script, cargo's environment would leak into the
    // inner build (RUSTC, RUSTFLAGS, CARGO_* ...): start from a clean one.
    cmd.env_clear();
    for var in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "TERM",
        "TMPDIR",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "no_proxy",
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.current_dir(&root)
        .arg("build")
        .args([
            "--profile",
            "guest",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(&target_dir);
    if !opts.verbose {
        cmd.arg("--quiet");
    }
    for (p, _) in &guests {
        cmd.args(["-p", p]);
    }
    if tc == Toolchain::DebianWeb {
        cmd.env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTC", DEBIAN_RUSTC)
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", DEBIAN_LINKER)
            .arg("-Zbuild-std=std,panic_abort");
    }
    if opts.verbose {
        eprintln!("guests: building {} crates with {:?}", guests.len(), tc);
    }
    let status = cmd.status().context("running cargo for the guest build")?;
    if !status.success() {
        bail!("the guest build failed ({status}); see cargo's output above");
    }

    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for g in &built {
        let core = target_dir
            .join("wasm32-unknown-unknown")
            .join("guest")
            .join(format!("{}.wasm", g.package.replace('-', "_")));
        let bytes = std::fs::read(&core)
            .with_context(|| format!("reading the core module {}", core.display()))?;
        let component =
            componentize(&bytes).with_context(|| format!("componentizing {}", g.package))?;
        let tmp = g.component.with_extension("wasm.tmp");
        std::fs::write(&tmp, &component).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &g.component)
            .with_context(|| format!("writing {}", g.component.display()))?;
    }
    std::fs::write(&stamp, fp).with_context(|| format!("writing {}", stamp.display()))?;
    if opts.verbose {
        eprintln!(
            "guests: {} components in {}",
            built.len(),
            out_dir.display()
        );
    }
    Ok(built)
}

/// Turns a core module with an embedded component type (as wit-bindgen
/// emits) into a component.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .module(core)?
        .validate(true)
        .encode()
}
