//! Accepting an uploaded module: size limit, component or core module with
//! an embedded component type (componentized here), the `wrun:operator`
//! world checked and the code compiled once (the sandbox caches it on
//! disk), then stored by digest and optionally named.

use super::{Digest, ModuleError, ModuleStore};
use crate::sandbox::{OperatorModule, Sandbox, SandboxError};
use serde::{Deserialize, Serialize};

/// What wrun knows about a stored module.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ModuleInfo {
    /// `blake3:<hex>` of the component's bytes.
    pub digest: String,
    /// Bytes of the component.
    pub size: u64,
    /// The world it implements: `wrun:operator@<version>`.
    pub world: String,
    /// Whether it keeps keyed state (imports `wrun:operator/state`).
    pub stateful: bool,
    /// Every import.
    pub imports: Vec<String>,
    /// Every export.
    pub exports: Vec<String>,
    /// The `name@version`s that name it.
    #[serde(default)]
    pub names: Vec<String>,
    /// When it was first pushed (ms since the Unix epoch).
    pub pushed_at_ms: u64,
    /// The digest of the core module it was made from, when a core module
    /// was uploaded.
    #[serde(default)]
    pub componentized_from: Option<String>,
    /// Milliseconds compiling it took on upload (0 when cached).
    #[serde(default)]
    pub compile_ms: u64,
    /// Its named outputs besides the main one (`wrun:operator@0.2`), each
    /// of which a job's manifest must wire.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The state format it declares (`name vN`), as its `describe` said
    /// on upload (`wrun:operator@0.2`); absent for a 0.1 module, or one
    /// pushed before wrun recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_format: Option<String>,
}

impl ModuleInfo {
    /// The digest's hex digits.
    pub fn hex(&self) -> String {
        self.digest
            .strip_prefix("blake3:")
            .unwrap_or(&self.digest)
            .to_string()
    }

    fn of(module: &OperatorModule, size: usize) -> ModuleInfo {
        ModuleInfo {
            digest: module.digest.to_string(),
            size: size as u64,
            world: format!("wrun:operator@{}", module.wit_version),
            stateful: module.imports_state,
            imports: module.imports.clone(),
            exports: module.exports.clone(),
            names: Vec::new(),
            pushed_at_ms: now_ms(),
            componentized_from: None,
            compile_ms: 0,
            outputs: module.outputs.clone(),
            state_format: module
                .format
                .as_ref()
                .map(|f| format!("{} v{}", f.name, f.version)),
        }
    }
}

use crate::time::unix_ms as now_ms;

/// The outcome of a push.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Pushed {
    /// The module.
    pub module: ModuleInfo,
    /// False when the same bytes were there already (a no-op).
    pub created: bool,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Over the size limit.
    #[error(
        "the module is {size} bytes, over this wrun's limit of {max} bytes; shrink it (build with --release, strip debug info) or start `wrun serve` with a larger --max-module-mb"
    )]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not WebAssembly at all.
    #[error(
        "the upload is not WebAssembly (it does not start with \\0asm); push the .wasm component your toolchain built"
    )]
    NotWasm,
    /// A core module that cannot be made a component.
    #[error(
        "the upload is a core WebAssembly module, and it cannot be made a component: {0}; build a component (wit-bindgen guests embed their component type; see docs/guest-rust.md), or run `wasm-tools component new` on it"
    )]
    Componentize(String),
    /// Fails validation or compilation.
    #[error("{0}")]
    Invalid(#[from] SandboxError),
    /// A name or version with characters a manifest cannot reference.
    #[error(transparent)]
    BadName(#[from] crate::names::NameError),
    /// The store.
    #[error(transparent)]
    Store(#[from] ModuleError),
}

/// Makes a component of a core module carrying its component type in a
/// custom section (as wit-bindgen emits).
fn componentize(core: &[u8]) -> Result<Vec<u8>, PushError> {
    // A module calling WASI preview 1 needs an adapter; say so plainly.
    let (mut preview1, mut typed) = (false, false);
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        match payload {
            Ok(wasmparser::Payload::CustomSection(c)) if c.name().starts_with("component-type") => {
                typed = true;
                if package_cycle(c.data()) {
                    return Err(malformed_type());
                }
            }
            Ok(wasmparser::Payload::ImportSection(r)) => {
                for imp in r.into_imports() {
                    if imp.is_ok_and(|i| i.module == "wasi_snapshot_preview1") {
                        preview1 = true;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => return Err(PushError::Componentize(format!("it does not parse: {e}"))),
        }
    }
    if !typed {
        return Err(PushError::Componentize(
            "it carries no component type (no `component-type` custom section, which wit-bindgen embeds)".into(),
        ));
    }
    if preview1 {
        return Err(PushError::Componentize(
            "it imports WASI preview 1 (wasi_snapshot_preview1), which needs an adapter; build for wasm32-wasip2, or componentize it with the preview 1 adapter yourself".into(),
        ));
    }
    // wit-component can panic on a malformed embedded type (found by
    // fuzzing: an `unreachable!` in wit-parser's decoder); an upload must
    // get an error, never take the server down.
    let encoded = std::panic::catch_unwind(|| {
        wit_component::ComponentEncoder::default()
            .module(core)
            .and_then(|e| e.validate(true).encode())
    })
    .map_err(|_| malformed_type())?;
    encoded.map_err(|e| {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        PushError::Componentize(chain.join(": "))
    })
}

fn malformed_type() -> PushError {
    PushError::Componentize(
        "its embedded component type is malformed (wit-component could not decode it)".into(),
    )
}

/// Whether a `component-type` section's WIT packages depend on each other
/// in a cycle. wit-parser orders packages by a recursive walk that never
/// ends on a cycle (found by fuzzing: a stack overflow, which no
/// `catch_unwind` can stop, aborting the process), so such a section is
/// refused before wit-component sees it. A section that does not decode
/// here is left to wit-component, which reports it.
/// wit-parser may panic on malformed input here too: that is a malformed
/// type as well.
fn package_cycle(section: &[u8]) -> bool {
    std::panic::catch_unwind(|| package_cycle_unchecked(section)).unwrap_or(true)
}

fn package_cycle_unchecked(section: &[u8]) -> bool {
    // The historical format: 0x03, a string encoding byte, the world's
    // name, then encoded WIT packages; otherwise a component.
    let resolve = (|| {
        let mut reader = wasmparser::BinaryReader::new(section, 0);
        match reader.read_u8().ok()? {
            0x03 => {
                reader.read_u8().ok()?;
                reader.read_string().ok()?;
                match wit_component::decode(&section[reader.original_position()..]).ok()? {
                    wit_component::DecodedWasm::WitPackage(r, _) => Some(r),
                    wit_component::DecodedWasm::Component(r, _) => Some(r),
                }
            }
            _ => wit_parser::decoding::decode_world(section)
                .ok()
                .map(|(r, _)| r),
        }
    })();
    let Some(resolve) = resolve else {
        return false;
    };
    // Depth-first, with an explicit stack: 0 unvisited, 1 on the path, 2 done.
    let mut state = vec![0u8; resolve.packages.len()];
    for (start, _) in resolve.packages.iter() {
        if state[start.index()] != 0 {
            continue;
        }
        state[start.index()] = 1;
        let mut path = vec![(
            start,
            resolve.package_direct_deps(start).collect::<Vec<_>>(),
        )];
        while let Some((id, deps)) = path.last_mut() {
            match deps.pop() {
                Some(dep) => match state[dep.index()] {
                    1 => return true,
                    0 => {
                        state[dep.index()] = 1;
                        let next = resolve.package_direct_deps(dep).collect();
                        path.push((dep, next));
                    }
                    _ => {}
                },
                None => {
                    state[id.index()] = 2;
                    path.pop();
                }
            }
        }
    }
    false
}

/// Validates, compiles and stores `bytes`; with `name`, names the stored
/// module `name@version`.
pub fn push(
    store: &ModuleStore,
    sandbox: &Sandbox,
    bytes: &[u8],
    name: Option<(&str, &str)>,
    max_bytes: usize,
) -> Result<Pushed, PushError> {
    if let Some((n, v)) = name {
        crate::names::check(crate::names::NameKind::Module, n)?;
        crate::names::check(crate::names::NameKind::ModuleVersion, v)?;
    }
    if bytes.len() > max_bytes {
        return Err(PushError::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(PushError::NotWasm);
    }
    let (component, from) = if wasmparser::Parser::is_core_wasm(bytes) {
        (componentize(bytes)?, Some(Digest::of(bytes).to_string()))
    } else {
        (bytes.to_vec(), None)
    };
    if component.len() > max_bytes {
        return Err(PushError::TooLarge {
            size: component.len(),
            max: max_bytes,
        });
    }
    let digest = Digest::of(&component);
    if let Some((n, v)) = name
        && let Some(existing) = store.named(n, v)?
        && existing != digest.hex()
    {
        return Err(PushError::Store(ModuleError::NameTaken {
            name: n.to_string(),
            version: v.to_string(),
            existing: format!("blake3:{existing}"),
        }));
    }
    let created = store.info(&digest.hex()).is_err();
    let started = std::time::Instant::now();
    let module = sandbox.load(&component)?;
    let compile_ms = started.elapsed().as_millis() as u64;
    // Also repairs a stored copy that no longer matches its digest.
    store.put(&component)?;
    if created {
        let mut info = ModuleInfo::of(&module, component.len());
        info.componentized_from = from;
        info.compile_ms = compile_ms;
        store.put_info(&info)?;
    }
    if let Some((n, v)) = name {
        store.name(n, v, digest)?;
    }
    Ok(Pushed {
        module: store.info(&digest.hex())?,
        created,
    })
}
