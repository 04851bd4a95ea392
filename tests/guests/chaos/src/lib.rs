//! Test guest that misbehaves on purpose, as its config says, so the
//! runtime's limits can be tested in pairs: one run that stays inside a
//! limit and one that breaks it.
//!
//! Config (JSON): `{"mode": "<mode>", "n": <number>}`. Modes:
//! - `echo`: emits every event unchanged.
//! - `loop-process` / `loop-open`: spins forever in `process` / `open`.
//! - `alloc`: allocates and touches `n` bytes per batch, keeping them.
//! - `fanout`: emits `n` copies of every event.
//! - `trap-after`: panics when it has seen `n` events.
//! - `recurse`: recurses `n` frames deep per event.
//! - `raw-key`: writes value state with a key of `n` bytes through the raw
//!   import, bypassing the SDK.
//! - `bad-packed`: calls `value-get-many` with end offsets past the data.
//! - `big-read`: stores a value of `n` bytes, then asks for it 1,000 times
//!   in one `value-get-many` call.
//! - `snapshot-trap`: echoes, but panics when snapshotted.
//!
//! It declares that it migrates the `wordcount` state format (it reads no
//! keyed state, so any is harmless to it): the host's restore rule for a
//! declared migration is tested with it.

use serde::Deserialize;
use std::hint::black_box;
use wrun_guest::{Context, Emitter, Error, Event, Operator};

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    mode: String,
    #[serde(default)]
    n: u64,
}

/// The chaos operator.
pub struct Chaos {
    config: Config,
    seen: u64,
    hoard: Vec<Vec<u8>>,
}

fn spin() -> ! {
    let mut i: u64 = 0;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

fn recurse(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let frame = black_box([n; 16]);
    black_box(recurse(n - 1)) + frame[3] % 2
}

impl Operator for Chaos {
    fn open(ctx: &Context) -> Result<Self, Error> {
        let config: Config = serde_json::from_slice(&ctx.config)
            .map_err(|e| Error::new(format!("bad chaos config: {e}")))?;
        if config.mode == "loop-open" {
            spin();
        }
        Ok(Chaos {
            config,
            seen: 0,
            hoard: Vec::new(),
        })
    }

    fn process(&mut self, event: Event, out: &mut Emitter) -> Result<(), Error> {
        self.seen += 1;
        match self.config.mode.as_str() {
            "loop-process" => spin(),
            "alloc" => {
                let mut block = vec![0u8; self.config.n as usize];
                for i in (0..block.len()).step_by(4096) {
                    block[i] = 1;
                }
                self.hoard.push(black_box(block));
                out.emit(event);
            }
            "fanout" => {
                for _ in 0..self.config.n {
                    out.emit(event.clone());
                }
            }
            "trap-after" => {
                if self.seen >= self.config.n {
                    panic!("chaos: trapping after {} events", self.seen);
                }
                out.emit(event);
            }
            "recurse" => {
                black_box(recurse(self.config.n));
                out.emit(event);
            }
            "raw-key" => {
                use wrun_guest::bindings::wrun::operator::{state, types};
                let n = self.config.n as u32;
                let keys = types::Packed {
                    data: vec![7u8; n as usize],
                    ends: vec![n],
                };
                let values = types::PackedOptions {
                    data: vec![1],
                    ends: vec![1],
                    present: vec![true],
                };
                state::value_put_many("raw", &keys, &values);
                out.emit(event);
            }
            "bad-packed" => {
                use wrun_guest::bindings::wrun::operator::{state, types};
                // End offsets past the data: a host must refuse, not read out of bounds.
                let keys = types::Packed {
                    data: vec![1, 2],
                    ends: vec![1, 9],
                };
                state::value_get_many("raw", &keys);
                out.emit(event);
            }
            "big-read" => {
                use wrun_guest::bindings::wrun::operator::{state, types};
                let key = vec![7u8];
                let values = types::PackedOptions {
                    data: vec![1u8; self.config.n as usize],
                    ends: vec![self.config.n as u32],
                    present: vec![true],
                };
                state::value_put_many(
                    "raw",
                    &types::Packed {
                        data: key.clone(),
                        ends: vec![1],
                    },
                    &values,
                );
                let keys = types::Packed {
                    data: key.repeat(1000),
                    ends: (1..=1000).collect(),
                };
                black_box(state::value_get_many("raw", &keys));
                out.emit(event);
            }
            _ => out.emit(event),
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<Vec<u8>>, Error> {
        if self.config.mode == "snapshot-trap" {
            panic!("chaos: trapping in snapshot");
        }
        Ok(Some(self.seen.to_le_bytes().to_vec()))
    }
}

wrun_guest::export_operator!(Chaos, migrates_from = ["wordcount"]);
