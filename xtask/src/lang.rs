//! Guests written in other languages than Rust: a directory under
//! `examples/` or `tests/guests/` with a `wrun-guest.toml`:
//!
//! ```toml
//! name = "wordcount-counter-py"   # target/guests/<name>.wasm
//! language = "python"             # python | javascript | c
//! entry = "app"                   # python: the module with `Handler`; javascript and c: the file
//! ```
//!
//! The toolchains are installed on first use into the machine's cache
//! ([`crate::machine_cache`]`/tools/componentize-{py,js}-<hash>`), pinned by
//! the files in `xtask/toolchains/`: a Python venv with componentize-py
//! (PyPI), and componentize-js with esbuild (npm, from a lock file). C guests use wit-bindgen's C generator (a library here),
//! Debian's clang-19 and wasi-libc (`scripts/setup` installs them), and
//! wit-component. Each guest is rebuilt only when its sources, the
//! language's helper in `guest-sdk/`, the WIT or the toolchain changed; a
//! guest that any clone on the machine built from the same inputs is taken
//! from the machine's cache (`guests/<name>-<fingerprint>.wasm`).

use crate::{Guest, Options, repo_root};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A language other than Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// componentize-py.
    Python,
    /// componentize-js.
    JavaScript,
    /// wit-bindgen C bindings, clang-19, wasi-libc.
    C,
}

/// A guest in another language.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Component name.
    pub name: String,
    /// Its language.
    pub language: Language,
    /// Its directory.
    pub dir: PathBuf,
    /// The entry module (Python) or file (JavaScript).
    pub entry: String,
}

/// Finds every `wrun-guest.toml`.
pub fn discover() -> Result<Vec<Spec>> {
    let root = repo_root();
    let mut found = Vec::new();
    for top in ["examples", "tests/guests"] {
        walk(&root.join(top), 3, &mut found)?;
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

fn walk(dir: &Path, depth: u32, out: &mut Vec<Spec>) -> Result<()> {
    let spec = dir.join("wrun-guest.toml");
    if spec.is_file() {
        let text = std::fs::read_to_string(&spec)
            .with_context(|| format!("reading {}", spec.display()))?;
        let doc: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", spec.display()))?;
        let field = |k: &str| -> Result<String> {
            doc.get(k)
                .and_then(|v| v.as_str())
                .map(String::from)
                .with_context(|| format!("{}: `{k}` (a string) is required", spec.display()))
        };
        let language = match field("language")?.as_str() {
            "python" => Language::Python,
            "javascript" => Language::JavaScript,
            "c" => Language::C,
            other => bail!(
                "{}: unknown language {other:?}; the guest build knows python, javascript and c (Rust guests are crates)",
                spec.display()
            ),
        };
        out.push(Spec {
            name: field("name")?,
            language,
            dir: dir.to_path_buf(),
            entry: field("entry")?,
        });
    }
    if depth == 0 || !dir.is_dir() {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n == "target" || n == "node_modules" || n == "__pycache__")
        })
        .collect();
    entries.sort();
    for e in entries {
        walk(&e, depth - 1, out)?;
    }
    Ok(())
}

/// The WIT the Python, JavaScript and C guests are built against:
/// `wrun:operator@0.2.0`, as the Rust SDK (`wit/0.1.0/`, which the runtime
/// still runs, is not read: wit-parser reads the directory's own files).
const OTHER_LANGUAGES_WIT: &str = "wit";

fn toolchains_dir() -> PathBuf {
    crate::machine_cache().join("tools")
}

/// Where a guest built from inputs with fingerprint `fp` is kept for every
/// clone on the machine.
fn cached_guest(name: &str, fp: &str) -> PathBuf {
    crate::machine_cache()
        .join("guests")
        .join(format!("{name}-{}.wasm", &fp[..32]))
}

fn pinned(lang: &str) -> PathBuf {
    repo_root().join("xtask").join("toolchains").join(lang)
}

/// blake3 of some files' names and contents.
fn hash_files(files: &[PathBuf], extra: &str) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(extra.as_bytes());
    let root = repo_root();
    for f in files {
        h.update(
            f.strip_prefix(&root)
                .unwrap_or(f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(&std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
    }
    Ok(h.finalize().to_hex().to_string())
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    crate::collect_files(dir, &mut out)?;
    out.retain(|p| {
        !p.components().any(|c| {
            let c = c.as_os_str();
            c == "node_modules" || c == "__pycache__"
        })
    });
    out.sort();
    Ok(out)
}

fn run(cmd: &mut Command, what: &str, hint: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start {:?}; {hint}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The C compiler and its flags for a wasm32 core module with wasi-libc
/// (only its allocator and string functions: no WASI imports).
const CLANG: &str = "clang-19";
const CLANG_FLAGS: &[&str] = &[
    "--target=wasm32-wasi",
    "--sysroot=/usr",
    "-isystem",
    "/usr/include/wasm32-wasi",
    "-L/usr/lib/wasm32-wasi",
    "-mexec-model=reactor",
    "-fuse-ld=/usr/bin/wasm-ld-19",
    "-O2",
    "-Wall",
    "-Wextra",
];

fn clang_version() -> Result<String> {
    let out = Command::new(CLANG).arg("--version").output();
    match out {
        Ok(o) if o.status.success() && Path::new("/usr/include/wasm32-wasi/stdlib.h").is_file() => {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        }
        _ => bail!(
            "C guests need clang-19 and wasi-libc: run `scripts/setup` (apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)"
        ),
    }
}

/// Installs (once) the toolchain of `lang`; returns its directory.
fn toolchain(lang: Language, opts: &Options) -> Result<PathBuf> {
    let (name, files) = match lang {
        Language::C => {
            clang_version()?;
            return Ok(toolchains_dir());
        }
        Language::Python => ("python", vec![pinned("python").join("requirements.txt")]),
        Language::JavaScript => (
            "js",
            vec![
                pinned("js").join("package.json"),
                pinned("js").join("package-lock.json"),
                pinned("js").join("build.mjs"),
            ],
        ),
    };
    let want = hash_files(&files, name)?;
    let dir = toolchains_dir().join(format!("componentize-{name}-{}", &want[..16]));
    let stamp = dir.join(".installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(dir);
    }
    if opts.verbose {
        eprintln!(
            "guests: installing the {name} guest toolchain into {}",
            dir.display()
        );
    }
    match lang {
        Language::Python => {
            let _ = std::fs::remove_dir_all(&dir);
            run(
                Command::new("python3").args(["-m", "venv"]).arg(&dir),
                "creating a Python venv for componentize-py",
                "install Python 3 with venv (`scripts/setup`, or apt-get install python3 python3-venv)",
            )?;
            run(
                Command::new(dir.join("bin").join("pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                    .arg(&files[0]),
                "installing componentize-py from PyPI",
                "",
            )?;
        }
        Language::JavaScript => {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            for f in &files {
                let to = dir.join(f.file_name().unwrap_or_default());
                std::fs::copy(f, &to).with_context(|| format!("copying {}", f.display()))?;
            }
            run(
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&dir),
                "installing componentize-js and esbuild from npm",
                "install Node.js and npm (`scripts/setup`, or apt-get install nodejs npm)",
            )?;
        }
        Language::C => {}
    }
    std::fs::write(&stamp, want)?;
    Ok(dir)
}

/// Writes wit-bindgen's C bindings of the `operator` world into `out`:
/// `operator.h`, `operator.c` and `operator_component_type.o` (the
/// component type, linked into the core module).
pub fn c_bindings(out: &Path) -> Result<()> {
    use wit_bindgen_core::wit_parser::Resolve;
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_dir(repo_root().join(OTHER_LANGUAGES_WIT))
        .context("reading wit/")?;
    let world = resolve.select_world(&[pkg], Some("operator"))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&resolve, world, &mut files)?;
    std::fs::create_dir_all(out)?;
    for (name, bytes) in files.iter() {
        std::fs::write(out.join(name), bytes)
            .with_context(|| format!("writing {}", out.join(name).display()))?;
    }
    Ok(())
}

/// Builds every guest in another language that changed.
pub fn build(opts: &Options) -> Result<Vec<Guest>> {
    let root = repo_root();
    let out_dir = crate::guests_dir();
    std::fs::create_dir_all(&out_dir)?;
    let mut built = Vec::new();
    for spec in discover()? {
        let component = out_dir.join(format!("{}.wasm", spec.name));
        let (sdk, tc_files) = match spec.language {
            Language::Python => (
                root.join("guest-sdk/python"),
                files_under(&pinned("python"))?,
            ),
            Language::JavaScript => (root.join("guest-sdk/js"), files_under(&pinned("js"))?),
            Language::C => (root.join("guest-sdk/c"), Vec::new()),
        };
        let mut inputs = files_under(&spec.dir)?;
        if sdk.is_dir() {
            inputs.extend(files_under(&sdk)?);
        }
        inputs.extend(files_under(&root.join(OTHER_LANGUAGES_WIT))?);
        inputs.extend(tc_files);
        let tc_version = match spec.language {
            Language::C => clang_version()?,
            _ => String::new(),
        };
        let fp = hash_files(
            &inputs,
            &format!("{:?} {} {tc_version}", spec.language, spec.entry),
        )?;
        let stamp = out_dir.join(format!(".{}.fingerprint", spec.name));
        if !opts.force
            && std::fs::read_to_string(&stamp).ok().as_deref() == Some(fp.as_str())
            && component.is_file()
        {
            built.push(Guest {
                package: spec.name,
                component,
            });
            continue;
        }
        let cached = cached_guest(&spec.name, &fp);
        if !opts.force && std::fs::copy(&cached, &component).is_ok() {
            if opts.verbose {
                eprintln!("guests: {} from {}", spec.name, cached.display());
            }
            std::fs::write(&stamp, fp)?;
            built.push(Guest {
                package: spec.name,
                component,
            });
            continue;
        }
        let tc = toolchain(spec.language, opts)?;
        if opts.verbose {
            eprintln!("guests: building {} ({:?})", spec.name, spec.language);
        }
        let tmp = component.with_extension("wasm.tmp");
        let what = format!("building guest {} in {}", spec.name, spec.dir.display());
        match spec.language {
            Language::Python => {
                // componentize-py writes __pycache__ beside the sources:
                // build from a copy under target/.
                let stage = root.join("target/wasm-guests/python").join(&spec.name);
                let _ = std::fs::remove_dir_all(&stage);
                for (from, to) in [(&spec.dir, stage.join("app")), (&sdk, stage.join("sdk"))] {
                    for f in files_under(from)? {
                        // The helper's own tests run on the host, not in
                        // the component.
                        if f.strip_prefix(from).is_ok_and(|r| r.starts_with("tests")) {
                            continue;
                        }
                        let dest = to.join(f.strip_prefix(from).unwrap_or(&f));
                        if let Some(p) = dest.parent() {
                            std::fs::create_dir_all(p)?;
                        }
                        std::fs::copy(&f, &dest)
                            .with_context(|| format!("copying {}", f.display()))?;
                    }
                }
                run(
                    Command::new(tc.join("bin").join("componentize-py"))
                        .arg("-d")
                        .arg(root.join(OTHER_LANGUAGES_WIT))
                        .args(["-w", "operator", "componentize", "-p"])
                        .arg(stage.join("app"))
                        .arg("-p")
                        .arg(stage.join("sdk"))
                        .arg(&spec.entry)
                        .arg("-o")
                        .arg(&tmp),
                    &what,
                    "",
                )?
            }
            Language::C => {
                let work = root.join("target/wasm-guests/c").join(&spec.name);
                let _ = std::fs::remove_dir_all(&work);
                let gen_dir = work.join("gen");
                c_bindings(&gen_dir)?;
                let core = work.join("core.wasm");
                let mut cmd = Command::new(CLANG);
                cmd.args(CLANG_FLAGS)
                    .arg("-I")
                    .arg(&gen_dir)
                    .arg("-o")
                    .arg(&core);
                for f in files_under(&spec.dir)? {
                    if f.extension().is_some_and(|e| e == "c") {
                        cmd.arg(f);
                    }
                }
                cmd.arg(gen_dir.join("operator.c"))
                    .arg(gen_dir.join("operator_component_type.o"));
                run(&mut cmd, &what, "run `scripts/setup`")?;
                let bytes = std::fs::read(&core)?;
                let component = crate::componentize(&bytes)
                    .with_context(|| format!("componentizing {}", spec.name))?;
                std::fs::write(&tmp, component)?;
            }
            Language::JavaScript => run(
                Command::new("node")
                    .arg(tc.join("build.mjs"))
                    .arg(spec.dir.join(&spec.entry))
                    .arg(&sdk)
                    .arg(root.join(OTHER_LANGUAGES_WIT))
                    .arg(&tmp)
                    .current_dir(&tc),
                &what,
                "install Node.js (`scripts/setup`)",
            )?,
        }
        // Into the machine's cache first (a copy, renamed into place so a
        // concurrent build never reads half a file), then into target/.
        if let Some(dir) = cached.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            let partial = cached.with_extension(format!("{}.partial", std::process::id()));
            if std::fs::copy(&tmp, &partial).is_ok() {
                let _ = std::fs::rename(&partial, &cached);
            }
            let _ = std::fs::remove_file(&partial);
        }
        std::fs::rename(&tmp, &component)
            .with_context(|| format!("writing {}", component.display()))?;
        std::fs::write(&stamp, fp)?;
        built.push(Guest {
            package: spec.name,
            component,
        });
    }
    Ok(built)
}
