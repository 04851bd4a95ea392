//! The engine: compile and cache components, validate them against the
//! `wrun:operator` world, and pre-link them for cheap instantiation.

use super::StateFormat;
use super::bindings::{v1, v2};
use super::host::SubtaskData;
use super::instance::{CallLimits, Description, OperatorInstance, SandboxError, SubtaskInfo};
use crate::ids::Digest;
use crate::state::{KeyGroupRange, KeyedState, StateLimits};
use std::collections::HashMap;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// Feeds `Hash` input into blake3 (only the bytes matter; `finish` is
/// never used for the key).
struct Blake3Hasher(blake3::Hasher);

impl std::hash::Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        let b = self.0.finalize();
        u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or_default())
    }
}

/// The `wrun:operator` versions this runtime accepts, as `major.minor`
/// (any patch release of each).
pub const SUPPORTED_WIT: &[&str] = &["0.1", "0.2"];

/// [`SUPPORTED_WIT`] for people: "0.1.x and 0.2.x".
pub fn supported_wit() -> String {
    let v: Vec<String> = SUPPORTED_WIT.iter().map(|v| format!("{v}.x")).collect();
    v.join(" and ")
}

/// Which `wrun:operator` contract a module implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitVersion {
    /// 0.1.x: events as `list<event>`, no timers, no named outputs.
    V0_1,
    /// 0.2.x: packed events, timers, named outputs.
    V0_2,
}

/// A module pre-linked for its contract version.
pub(crate) enum ModulePre {
    /// `wrun:operator@0.1.x`.
    V1(v1::OperatorPre<SubtaskData>),
    /// `wrun:operator@0.2.x`.
    V2(v2::OperatorPre<SubtaskData>),
}

/// How to build the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled components are cached (`None`: no disk cache).
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances; call deadlines are multiples of it.
    pub epoch_tick: Duration,
    /// Use the pooling instance allocator.
    pub pooling: bool,
    /// The largest memory any job may allow a subtask, in bytes.
    pub max_memory_bytes: usize,
    /// Most concurrently live component instances (pooling only).
    pub max_instances: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            cache_dir: None,
            epoch_tick: Duration::from_millis(5),
            pooling: true,
            max_memory_bytes: 4 << 30,
            max_instances: 256,
        }
    }
}

/// A compiled, validated and pre-linked operator component.
pub struct OperatorModule {
    /// The digest of its bytes.
    pub digest: Digest,
    /// The `wrun:operator` version it implements, as it says (`0.2.0`).
    pub wit_version: String,
    /// The contract that version belongs to.
    pub wit: WitVersion,
    /// Whether it imports keyed state (and so is stateful).
    pub imports_state: bool,
    /// Whether it imports WASI (toolchains such as componentize-py do).
    pub imports_wasi: bool,
    /// Every import name.
    pub imports: Vec<String>,
    /// Every export name.
    pub exports: Vec<String>,
    /// State format names (other than its own) whose state this module
    /// declares it migrates: the `wrun-migrates-from` custom section, one
    /// name a line (the Rust SDK's `export_operator!(T, migrates_from =
    /// [...])` writes it).
    pub migrates_from: Vec<String>,
    /// Its named outputs besides the main one (0.2 `describe`; a 0.1
    /// module has none).
    pub outputs: Vec<String>,
    /// The state format it declares (0.2 `describe`, asked when it is
    /// loaded; a 0.1 module declares it only when a subtask opens it).
    pub format: Option<StateFormat>,
    pub(crate) pre: ModulePre,
}

/// The custom section a module declares the state formats it migrates in.
pub const MIGRATES_FROM_SECTION: &str = "wrun-migrates-from";

/// The format names in every `wrun-migrates-from` custom section of a
/// component (or of the core modules inside it).
pub fn migrates_from(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(wasmparser::Payload::CustomSection(c)) = payload else {
            continue;
        };
        if c.name() == MIGRATES_FROM_SECTION
            && let Ok(text) = std::str::from_utf8(c.data())
        {
            out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

impl std::fmt::Debug for OperatorModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorModule")
            .field("digest", &self.digest.to_string())
            .field("wit_version", &self.wit_version)
            .field("imports", &self.imports)
            .finish()
    }
}

/// The shared wasmtime engine, linker and compile cache.
pub struct Sandbox {
    pub(crate) engine: Engine,
    linker: Linker<SubtaskData>,
    cfg: SandboxConfig,
    compiled: Mutex<HashMap<Digest, Arc<OperatorModule>>>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("cfg", &self.cfg).finish()
    }
}

fn engine_config(cfg: &SandboxConfig, pooling: bool) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.cranelift_opt_level(OptLevel::Speed);
    c.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(20));
    // A guest's stack is bounded; deep recursion traps instead of taking
    // the host thread down.
    c.max_wasm_stack(1 << 20);
    // For profiling guests with `perf`: /tmp/perf-<pid>.map names the
    // compiled functions (docs/benchmarks.md).
    if std::env::var_os("WRUN_WASM_PERFMAP").is_some_and(|v| v == "1") {
        c.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if pooling {
        let mut p = PoolingAllocationConfig::default();
        p.total_component_instances(cfg.max_instances)
            .total_core_instances(cfg.max_instances * 4)
            .total_memories(cfg.max_instances * 2)
            .total_tables(cfg.max_instances * 4)
            .total_stacks(cfg.max_instances)
            .max_memory_size(cfg.max_memory_bytes)
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(32)
            .table_elements(100_000)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            // Keep a few slots warm for fast re-instantiation after restarts.
            .max_unused_warm_slots(16);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

impl Sandbox {
    /// Creates the engine, links the host interfaces and starts the epoch
    /// ticker thread.
    pub fn new(cfg: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let engine = match Engine::new(&engine_config(&cfg, cfg.pooling)) {
            Ok(e) => e,
            Err(e) if cfg.pooling => {
                // The pooling allocator reserves address space up front; some
                // environments refuse that. Instances then cost a little more.
                tracing::warn!(
                    "pooling allocator unavailable ({e}); using on-demand instance allocation"
                );
                Engine::new(&engine_config(&cfg, false))
                    .map_err(|e| SandboxError::Engine(e.to_string()))?
            }
            Err(e) => return Err(SandboxError::Engine(e.to_string())),
        };
        let mut linker = Linker::new(&engine);
        super::host::add_to_linker(&mut linker)
            .map_err(|e| SandboxError::Engine(format!("linking host interfaces: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop, tick) = (engine.clone(), stop.clone(), cfg.epoch_tick);
            std::thread::Builder::new()
                .name("wrun-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| SandboxError::Engine(format!("starting the epoch thread: {e}")))?
        };
        Ok(Sandbox {
            engine,
            linker,
            cfg,
            compiled: Mutex::new(HashMap::new()),
            stop,
            ticker: Some(ticker),
        })
    }

    /// The epoch tick.
    pub fn epoch_tick(&self) -> Duration {
        self.cfg.epoch_tick
    }

    fn cache_path(&self, digest: &Digest) -> Option<PathBuf> {
        let dir = self.cfg.cache_dir.as_ref()?;
        // Keyed by a stable hash: DefaultHasher may change between Rust
        // releases, which would orphan (or, worse, share) cache entries.
        let mut h = Blake3Hasher(blake3::Hasher::new());
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let engine = h.0.finalize();
        Some(
            dir.join(&engine.to_hex()[..16])
                .join(format!("{}.cwasm", digest.hex())),
        )
    }

    /// Compiles (or loads from cache), validates and pre-links a component.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<OperatorModule>, SandboxError> {
        let digest = Digest::of(bytes);
        if let Some(m) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            return Ok(m.clone());
        }
        let component = self.compile(bytes, &digest)?;
        let mut module = self.validate(component, digest)?;
        module.migrates_from = migrates_from(bytes);
        if module.wit == WitVersion::V0_2 {
            let d = self.describe(&module)?;
            module.outputs = d.outputs;
            module.format = Some(d.format);
        }
        let module = Arc::new(module);
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, module.clone());
        Ok(module)
    }

    fn compile(&self, bytes: &[u8], digest: &Digest) -> Result<Component, SandboxError> {
        let cached = self.cache_path(digest);
        if let Some(path) = &cached
            && path.is_file()
        {
            // SAFETY: the file was written by `Component::serialize` of this
            // engine configuration (the directory is keyed by its
            // compatibility hash) into wrun's own data dir. wasmtime checks
            // the header and refuses an incompatible artifact.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(
                    "ignoring unreadable compile cache entry {}: {e}",
                    path.display()
                ),
            }
        }
        if bytes.starts_with(b"\0asm\x01\0\0\0") {
            return Err(SandboxError::NotAComponent { digest: digest.to_string(), detail: "it is a core WebAssembly module; build it into a component (wit-component / `wasm-tools component new`)".into() });
        }
        if !bytes.starts_with(b"\0asm\x0d\0\x01\0") {
            return Err(SandboxError::NotAComponent {
                digest: digest.to_string(),
                detail: "it has no WebAssembly component header (is it a .wasm file?)".into(),
            });
        }
        let started = std::time::Instant::now();
        let component =
            Component::new(&self.engine, bytes).map_err(|e| SandboxError::NotAComponent {
                digest: digest.to_string(),
                detail: format!("it does not compile: {}", chain(&e)),
            })?;
        tracing::debug!(module = %digest, ms = started.elapsed().as_millis() as u64, "compiled component");
        if let Some(path) = cached {
            match component.serialize() {
                Ok(bytes) => {
                    if let Err(e) = crate::fsutil::write_atomic_path(&path, &bytes) {
                        tracing::warn!("cannot write the compile cache: {e}");
                    }
                }
                Err(e) => tracing::warn!("cannot serialize compiled component: {e}"),
            }
        }
        Ok(component)
    }

    /// What a module says about itself, from a throwaway instance.
    fn describe(&self, module: &OperatorModule) -> Result<Description, SandboxError> {
        let info = SubtaskInfo {
            uid: module.digest.to_string(),
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: 1,
            config: b"{}".to_vec(),
            restored: false,
            restored_format: None,
        };
        let limits = CallLimits {
            memory_bytes: self.cfg.max_memory_bytes.min(1 << 30),
            call_timeout: Duration::from_secs(10),
            max_output_events: 0,
        };
        let state = KeyedState::new(
            1,
            KeyGroupRange::for_subtask(1, 1, 0),
            StateLimits::default(),
        );
        OperatorInstance::instantiate(self, module, &info, limits, state)?.describe()
    }

    fn validate(
        &self,
        component: Component,
        digest: Digest,
    ) -> Result<OperatorModule, SandboxError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let handler = exports
            .iter()
            .find(|n| n.starts_with("wrun:operator/handler"));
        let wit_version = match handler
            .and_then(|n| n.split_once('@'))
            .map(|(_, v)| v.to_string())
        {
            Some(v) => v,
            None => {
                return Err(SandboxError::NotAnOperator {
                    digest: digest.to_string(),
                    exports,
                });
            }
        };
        let Some(wit) = supported(&wit_version) else {
            return Err(SandboxError::UnsupportedVersion {
                digest: digest.to_string(),
                found: wit_version,
            });
        };
        let mut imports = Vec::new();
        let (mut imports_state, mut imports_wasi) = (false, false);
        for (name, item) in ty.imports(&self.engine) {
            imports.push(name.to_string());
            if let Some(rest) = name.strip_prefix("wrun:operator/") {
                let (iface, v) = rest.split_once('@').unwrap_or((rest, ""));
                if supported(v) != Some(wit) {
                    return Err(SandboxError::UnsupportedVersion {
                        digest: digest.to_string(),
                        found: format!("{v} (in import {name})"),
                    });
                }
                imports_state |= iface == "state";
            } else if name.starts_with("wasi:")
                && matches!(item.ty, ComponentItem::ComponentInstance(_))
            {
                imports_wasi = true;
            } else {
                return Err(SandboxError::UnsupportedImport {
                    digest: digest.to_string(),
                    import: name.to_string(),
                });
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| SandboxError::Link {
                digest: digest.to_string(),
                detail: chain(&e),
            })?;
        let link = |e: wasmtime::Error| SandboxError::Link {
            digest: digest.to_string(),
            detail: chain(&e),
        };
        let pre = match wit {
            WitVersion::V0_1 => ModulePre::V1(v1::OperatorPre::new(pre).map_err(link)?),
            WitVersion::V0_2 => ModulePre::V2(v2::OperatorPre::new(pre).map_err(link)?),
        };
        Ok(OperatorModule {
            digest,
            wit_version,
            wit,
            imports_state,
            imports_wasi,
            imports,
            exports,
            migrates_from: Vec::new(),
            outputs: Vec::new(),
            format: None,
            pre,
        })
    }
}

/// The contract of a `wrun:operator` version, if this runtime speaks it.
fn supported(version: &str) -> Option<WitVersion> {
    let (minor, patch) = version.strip_prefix("0.")?.split_once('.')?;
    if patch.is_empty() || !patch.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match minor {
        "1" => Some(WitVersion::V0_1),
        "2" => Some(WitVersion::V0_2),
        _ => None,
    }
}

/// A wasmtime error's causes on one line.
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        use super::{WitVersion, supported};
        assert_eq!(supported("0.1.0"), Some(WitVersion::V0_1));
        assert_eq!(supported("0.1.7"), Some(WitVersion::V0_1));
        assert_eq!(supported("0.2.0"), Some(WitVersion::V0_2));
        assert_eq!(supported("0.3.0"), None);
        assert_eq!(supported("0.10.0"), None);
        assert_eq!(supported("0.2."), None);
        assert_eq!(supported("0.2.x"), None);
        assert_eq!(supported(""), None);
        assert_eq!(super::supported_wit(), "0.1.x and 0.2.x");
    }
}
