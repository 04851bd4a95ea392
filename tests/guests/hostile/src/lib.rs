//! Test guest that speaks `wrun:operator@0.2.0` by hand (no SDK packing),
//! to send the host what a buggy or hostile guest could. It declares one
//! named output, `side`. Its config is `{ mode = "<mode>" }`:
//!
//! - `"echo"`: emits every event to the main output and a copy to `side`;
//! - `"offsets"`: returns an event whose value ends past the data;
//! - `"lengths"`: returns lists of different lengths;
//! - `"flags"`: returns an event with an unknown flag bit;
//! - `"output"`: sends an event to output 7 (it has one named output);
//! - `"outputs-length"`: gives two output indices for one event;
//! - `"timers"`: registers timers with a key offset past the data.

use std::cell::RefCell;
use wrun_guest::bindings::exports::wrun::operator::handler::Guest;
use wrun_guest::bindings::wrun::operator::{timers, types};

thread_local! {
    static MODE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The operator.
pub struct Hostile;

fn events(
    data: Vec<u8>,
    key_ends: Vec<u32>,
    value_ends: Vec<u32>,
    flags: Vec<u8>,
) -> types::Events {
    let n = flags.len();
    types::Events {
        data,
        key_ends,
        value_ends,
        flags,
        timestamps: vec![0; n],
    }
}

fn one(outputs: Vec<u8>) -> types::Emitted {
    types::Emitted {
        events: events(b"kv".to_vec(), vec![1], vec![2], vec![1]),
        outputs,
    }
}

impl Guest for Hostile {
    fn describe() -> types::Description {
        types::Description {
            format: types::StateFormat {
                name: "hostile".into(),
                version: 1,
            },
            outputs: vec!["side".into()],
        }
    }

    fn open(ctx: types::Context) -> Result<(), types::Error> {
        // `{"mode":"<mode>"}`, read without a JSON parser.
        let config = String::from_utf8_lossy(&ctx.config).into_owned();
        let mode = config
            .split("\"mode\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("echo")
            .to_string();
        MODE.with(|m| *m.borrow_mut() = mode);
        Ok(())
    }

    fn process(batch: types::Events) -> Result<types::Emitted, types::Error> {
        let mode = MODE.with(|m| m.borrow().clone());
        Ok(match mode.as_str() {
            "offsets" => types::Emitted {
                events: events(b"abc".to_vec(), vec![1], vec![99], vec![1]),
                outputs: Vec::new(),
            },
            "lengths" => types::Emitted {
                events: events(b"abc".to_vec(), vec![1, 2], vec![2], vec![1]),
                outputs: Vec::new(),
            },
            "flags" => types::Emitted {
                events: events(b"abc".to_vec(), vec![1], vec![2], vec![0x80]),
                outputs: Vec::new(),
            },
            "output" => one(vec![7]),
            "outputs-length" => one(vec![0, 1]),
            "timers" => {
                timers::register_many(&types::Timers {
                    keys: types::Packed {
                        data: Vec::new(),
                        ends: vec![5],
                    },
                    times: vec![1],
                    domains: vec![types::TimeDomain::EventTime],
                    tags: vec![0],
                });
                one(Vec::new())
            }
            _ => {
                // Echo: every event to main, and again to `side`.
                let n = batch.key_ends.len();
                let mut data = batch.data.clone();
                data.extend_from_slice(&batch.data);
                let shift = batch.data.len() as u32;
                let mut key_ends = batch.key_ends.clone();
                key_ends.extend(batch.key_ends.iter().map(|e| e + shift));
                let mut value_ends = batch.value_ends.clone();
                value_ends.extend(batch.value_ends.iter().map(|e| e + shift));
                let mut flags = batch.flags.clone();
                flags.extend_from_slice(&batch.flags);
                let mut timestamps = batch.timestamps.clone();
                timestamps.extend_from_slice(&batch.timestamps);
                let mut outputs = vec![0u8; n];
                outputs.extend(std::iter::repeat_n(1u8, n));
                types::Emitted {
                    events: types::Events {
                        data,
                        key_ends,
                        value_ends,
                        flags,
                        timestamps,
                    },
                    outputs,
                }
            }
        })
    }

    fn on_timers(_fired: types::Timers) -> Result<types::Emitted, types::Error> {
        Ok(types::Emitted {
            events: events(Vec::new(), Vec::new(), Vec::new(), Vec::new()),
            outputs: Vec::new(),
        })
    }

    fn close() -> Result<types::Emitted, types::Error> {
        Self::on_timers(types::Timers {
            keys: types::Packed {
                data: Vec::new(),
                ends: Vec::new(),
            },
            times: Vec::new(),
            domains: Vec::new(),
            tags: Vec::new(),
        })
    }

    fn snapshot() -> Result<Option<types::OperatorSnapshot>, types::Error> {
        Ok(None)
    }

    fn restore(_snapshot: types::OperatorSnapshot) -> Result<(), types::Error> {
        Ok(())
    }
}

#[cfg(target_arch = "wasm32")]
wrun_guest::bindings::export_raw!(Hostile with_types_in wrun_guest::bindings);
