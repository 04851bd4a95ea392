//! `wrun:operator/timers` (0.2.0): keyed timers onto the subtask's
//! [`TimerQueue`](crate::state::TimerQueue), which keeps them in keyed
//! state. The watermark and the processing time a guest reads are the ones
//! the executor set before the call, so they stand still during a call.

use super::SubtaskData;
use crate::sandbox::bindings::v2::wrun::operator::{
    timers::Host,
    types::{TimeDomain, Timers},
};
use crate::state::{Domain, StateError, TIMERS_STATE, Timer};

/// The timers of a `timers` record, checked: a guest wrote it.
pub(crate) fn unpack(t: &Timers) -> Result<Vec<Timer>, StateError> {
    let n = t.keys.ends.len();
    if t.times.len() != n || t.domains.len() != n || t.tags.len() != n {
        return Err(StateError::Malformed {
            name: TIMERS_STATE.into(),
            detail: format!(
                "{n} keys, {} times, {} domains and {} tags",
                t.times.len(),
                t.domains.len(),
                t.tags.len()
            ),
        });
    }
    let mut out = Vec::with_capacity(n);
    let mut start = 0usize;
    for i in 0..n {
        let end = t.keys.ends[i] as usize;
        if end < start || end > t.keys.data.len() {
            return Err(StateError::Malformed {
                name: TIMERS_STATE.into(),
                detail: format!(
                    "timer {i}: key end offset {end} before {start} or past {} bytes",
                    t.keys.data.len()
                ),
            });
        }
        out.push(Timer {
            key: t.keys.data[start..end].to_vec(),
            time: t.times[i],
            domain: match t.domains[i] {
                TimeDomain::EventTime => Domain::EventTime,
                TimeDomain::ProcessingTime => Domain::ProcessingTime,
            },
            tag: t.tags[i],
        });
        start = end;
    }
    Ok(out)
}

/// Fired timers as a `timers` record.
pub(crate) fn pack(fired: &[Timer]) -> Timers {
    let mut t = Timers {
        keys: crate::sandbox::bindings::v2::wrun::operator::types::Packed {
            data: Vec::with_capacity(fired.iter().map(|f| f.key.len()).sum()),
            ends: Vec::with_capacity(fired.len()),
        },
        times: Vec::with_capacity(fired.len()),
        domains: Vec::with_capacity(fired.len()),
        tags: Vec::with_capacity(fired.len()),
    };
    for f in fired {
        t.keys.data.extend_from_slice(&f.key);
        t.keys.ends.push(t.keys.data.len() as u32);
        t.times.push(f.time);
        t.domains.push(match f.domain {
            Domain::EventTime => TimeDomain::EventTime,
            Domain::ProcessingTime => TimeDomain::ProcessingTime,
        });
        t.tags.push(f.tag);
    }
    t
}

impl Host for SubtaskData {
    fn register_many(&mut self, timers: Timers) -> wasmtime::Result<()> {
        for t in unpack(&timers)? {
            self.timers.register(&mut self.state, &t)?;
        }
        Ok(())
    }

    fn delete_many(&mut self, timers: Timers) -> wasmtime::Result<()> {
        for t in unpack(&timers)? {
            self.timers.delete(&mut self.state, &t)?;
        }
        Ok(())
    }

    fn current_watermark(&mut self) -> wasmtime::Result<Option<i64>> {
        Ok(self.watermark)
    }

    fn processing_time(&mut self) -> wasmtime::Result<i64> {
        Ok(self.now_ms)
    }
}
