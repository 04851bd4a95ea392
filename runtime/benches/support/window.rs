//! The window count in the harness (`WRUN_BENCH_ONLY=window`; also part of
//! a full run): the job of `benches/window-count.toml` (1 s tumbling
//! event-time windows, a count per key; 10M generated events over 100k
//! keys, 200 ms out of order) run with the clicks example's component (the
//! Rust SDK's `window` with `Count`) and with a native Rust window
//! operator, interleaved in one process, without checkpoints, so the ratio
//! is what running the window in Wasm through keyed state and timers costs
//! against plain native code.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use wrun::batch::Batch;
use wrun::exec::{NativeFactory, OperatorLogic, RunOptions};
use wrun::sandbox::{SandboxError, SubtaskInfo};

/// Tumbling event-time windows counted in plain maps: per window start, a
/// count per key; a window is emitted (`key,start,end,count`, at its last
/// millisecond) once the watermark passes its last millisecond, as the
/// SDK's window does. Late events are dropped.
struct NativeWindows {
    size: i64,
    open: BTreeMap<i64, HashMap<Vec<u8>, u64>>,
    watermark: Option<i64>,
}

impl OperatorLogic for NativeWindows {
    fn open(&mut self, _: &SubtaskInfo) -> Result<(), SandboxError> {
        Ok(())
    }

    fn process(&mut self, batch: &Batch) -> Result<Batch, SandboxError> {
        for e in batch.iter() {
            let ts = e.timestamp.unwrap_or(0);
            let start = ts.div_euclid(self.size) * self.size;
            if self.watermark.is_some_and(|w| start + self.size - 1 <= w) {
                continue;
            }
            let key = e.key.unwrap_or_default();
            let counts = self.open.entry(start).or_default();
            match counts.get_mut(key) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(key.to_vec(), 1);
                }
            }
        }
        Ok(Batch::default())
    }

    fn set_time(&mut self, watermark: Option<i64>, _now_ms: i64) {
        self.watermark = watermark;
    }

    fn pending_timers(&self) -> usize {
        self.open.values().map(HashMap::len).sum()
    }

    fn fire_timers(
        &mut self,
        watermark: Option<i64>,
        _now_ms: i64,
        _side: &mut Vec<Batch>,
    ) -> Result<Batch, SandboxError> {
        self.watermark = watermark;
        let mut out = Batch::default();
        let Some(w) = watermark else {
            return Ok(out);
        };
        while let Some(entry) = self.open.first_entry() {
            let start = *entry.key();
            let end = start + self.size;
            if end - 1 > w {
                break;
            }
            for (key, n) in entry.remove() {
                out.push_with(
                    Some(end - 1),
                    |b| {
                        b.extend_from_slice(&key);
                        true
                    },
                    |b| {
                        b.extend_from_slice(&key);
                        let _ = write!(b, ",{start},{end},{n}");
                    },
                );
            }
        }
        Ok(out)
    }

    fn close(&mut self) -> Result<Batch, SandboxError> {
        Ok(Batch::default())
    }
}

/// The two variants' medians of `rounds` interleaved runs, as metrics.
pub fn window_figures(
    sandbox: &wrun::sandbox::Sandbox,
    rounds: u64,
    metric: fn(&str, f64, &str),
    medians: crate::Medians,
) -> anyhow::Result<()> {
    let benches = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches");
    let text = std::fs::read_to_string(benches.join("window-count.toml"))?;
    let mut graph = wrun::job::parse_manifest(&text, "window-count.toml", &benches, None)?;
    graph.checkpoint = None;
    let events = 10_000_000;
    let store = wrun::module::ModuleStore::new(std::path::Path::new("target/bench-data"));
    let modules = wrun::module::load_modules(&graph, &store, sandbox)?;
    let native: NativeFactory = Arc::new(|_, _| {
        Box::new(NativeWindows {
            size: 1000,
            open: BTreeMap::new(),
            watermark: None,
        })
    });
    let runs = vec![
        (
            "wasm",
            graph.clone(),
            modules.clone(),
            RunOptions::default(),
        ),
        (
            "native",
            graph,
            modules,
            RunOptions {
                native: HashMap::from([("count".to_string(), native)]),
                ..RunOptions::default()
            },
        ),
    ];
    let rates = medians(sandbox, &runs, rounds, events, "count")?;
    metric("window.wasm.records_per_s", rates["wasm"], "records/s");
    metric("window.native.records_per_s", rates["native"], "records/s");
    metric(
        "window.wasm_vs_native.ratio",
        rates["wasm"] / rates["native"],
        "ratio",
    );
    Ok(())
}
