//! `wrun:operator/state`: batched keyed state calls onto the subtask's
//! [`KeyedState`](crate::state::KeyedState). Misuse (a key outside the
//! subtask's key groups, an oversized key, a kind mismatch, a name of the
//! host's own) traps the guest with a message that says what to fix.
//!
//! The interface is the same in every supported `wrun:operator` version;
//! [`state_host!`] implements each version's generated trait with the one
//! body below.

use super::SubtaskData;
use crate::state::{KeyedState, StateError, StateKind};

fn malformed(name: &str, detail: String) -> wasmtime::Error {
    wasmtime::Error::new(StateError::Malformed {
        name: name.to_string(),
        detail,
    })
}

/// The end offsets of a packed list, checked: never decreasing and within
/// the data. A guest controls them, so they are validated before use.
fn checked_ends<'a>(
    name: &str,
    data: &[u8],
    ends: &'a [u32],
) -> wasmtime::Result<impl Iterator<Item = usize> + 'a> {
    let mut prev = 0u32;
    for &e in ends {
        if e < prev || e as usize > data.len() {
            return Err(malformed(
                name,
                format!(
                    "packed end offset {e} after {prev} in {} bytes of data",
                    data.len()
                ),
            ));
        }
        prev = e;
    }
    Ok(ends.iter().map(|&e| e as usize))
}

type Bytes = Vec<u8>;

/// A guest's state name as a state id: names of the host's own state
/// (timers) are refused.
fn guest_id(state: &mut KeyedState, name: &str, kind: StateKind) -> wasmtime::Result<usize> {
    if crate::state::is_reserved(name) {
        return Err(wasmtime::Error::new(StateError::Reserved {
            name: name.to_string(),
        }));
    }
    Ok(state.id(name, kind)?)
}

/// Counts the bytes a read call is about to hand back. The answer is copied
/// into the guest's linear memory, so one larger than the guest's memory
/// limit can never arrive; refusing it early keeps a guest from making the
/// host build a reply of many gigabytes (the same large value asked for
/// again and again) and take every job in the process down with it.
struct Reply<'a> {
    name: &'a str,
    left: usize,
    limit: usize,
}

impl<'a> Reply<'a> {
    fn new(name: &'a str, data: &SubtaskData) -> Reply<'a> {
        // A 32-bit guest addresses at most 4 GiB, and packed offsets are u32.
        let limit = data.limiter.memory_bytes.min(u32::MAX as usize);
        Reply {
            name,
            left: limit,
            limit,
        }
    }

    fn take(&mut self, bytes: usize) -> wasmtime::Result<()> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(wasmtime::Error::new(StateError::ReplyTooLarge {
                name: self.name.to_string(),
                limit: self.limit,
            })),
        }
    }
}

/// Implements `wrun:operator/state` of bindings module `$v`.
macro_rules! state_host {
    ($v:ident $(, $($extra:tt)*)?) => {
        mod $v {
            use super::*;
            use crate::sandbox::bindings::$v::wrun::operator::{
                state::Host,
                types::{MapEntry, Packed, PackedOptions},
            };

            impl Host for SubtaskData {
                fn value_get_many(
                    &mut self,
                    name: String,
                    keys: Packed,
                ) -> wasmtime::Result<PackedOptions> {
                    let id = guest_id(&mut self.state, &name, StateKind::Value)?;
                    let ends = checked_ends(&name, &keys.data, &keys.ends)?;
                    let n = keys.ends.len();
                    let mut reply = Reply::new(&name, self);
                    let mut out = PackedOptions {
                        data: Vec::new(),
                        ends: Vec::with_capacity(n),
                        present: Vec::with_capacity(n),
                    };
                    let mut start = 0;
                    for end in ends {
                        let v = self.state.value_ref(id, &keys.data[start..end])?;
                        if let Some(v) = v {
                            reply.take(v.len())?;
                            out.data.extend_from_slice(v);
                        }
                        out.present.push(v.is_some());
                        out.ends.push(out.data.len() as u32);
                        start = end;
                    }
                    Ok(out)
                }

                fn value_put_many(
                    &mut self,
                    name: String,
                    keys: Packed,
                    values: PackedOptions,
                ) -> wasmtime::Result<()> {
                    let id = guest_id(&mut self.state, &name, StateKind::Value)?;
                    let key_ends = checked_ends(&name, &keys.data, &keys.ends)?;
                    let value_ends = checked_ends(&name, &values.data, &values.ends)?;
                    if keys.ends.len() != values.ends.len()
                        || values.present.len() != values.ends.len()
                    {
                        return Err(malformed(
                            &name,
                            format!(
                                "{} keys, {} values and {} presence flags",
                                keys.ends.len(),
                                values.ends.len(),
                                values.present.len()
                            ),
                        ));
                    }
                    let (mut ks, mut vs) = (0, 0);
                    for ((ke, ve), present) in key_ends.zip(value_ends).zip(values.present) {
                        let value = present.then(|| &values.data[vs..ve]);
                        self.state.value_set(id, &keys.data[ks..ke], value)?;
                        (ks, vs) = (ke, ve);
                    }
                    Ok(())
                }

                fn list_get_many(
                    &mut self,
                    name: String,
                    keys: Vec<Bytes>,
                ) -> wasmtime::Result<Vec<Vec<Bytes>>> {
                    let id = guest_id(&mut self.state, &name, StateKind::List)?;
                    let mut reply = Reply::new(&name, self);
                    let mut out = Vec::with_capacity(keys.len());
                    for k in &keys {
                        let list = self.state.list_get(id, k)?;
                        // Each item also costs the guest a list header.
                        reply.take(list.iter().map(|i| i.len() + 8).sum())?;
                        out.push(list);
                    }
                    Ok(out)
                }

                fn list_append_many(
                    &mut self,
                    name: String,
                    items: Vec<(Bytes, Bytes)>,
                ) -> wasmtime::Result<()> {
                    let id = guest_id(&mut self.state, &name, StateKind::List)?;
                    for (k, v) in items {
                        self.state.list_append(id, k, v)?;
                    }
                    Ok(())
                }

                fn list_put_many(
                    &mut self,
                    name: String,
                    lists: Vec<(Bytes, Vec<Bytes>)>,
                ) -> wasmtime::Result<()> {
                    let id = guest_id(&mut self.state, &name, StateKind::List)?;
                    for (k, l) in lists {
                        self.state.list_put(id, k, l)?;
                    }
                    Ok(())
                }

                fn map_get_many(
                    &mut self,
                    name: String,
                    keys: Vec<(Bytes, Bytes)>,
                ) -> wasmtime::Result<Vec<Option<Bytes>>> {
                    let id = guest_id(&mut self.state, &name, StateKind::Map)?;
                    let mut reply = Reply::new(&name, self);
                    let mut out = Vec::with_capacity(keys.len());
                    for (k, mk) in &keys {
                        let v = self.state.map_get(id, k, mk)?;
                        reply.take(v.as_ref().map_or(0, Vec::len))?;
                        out.push(v);
                    }
                    Ok(out)
                }

                fn map_put_many(
                    &mut self,
                    name: String,
                    entries: Vec<MapEntry>,
                ) -> wasmtime::Result<()> {
                    let id = guest_id(&mut self.state, &name, StateKind::Map)?;
                    for e in entries {
                        self.state.map_put(id, e.key, e.map_key, e.value)?;
                    }
                    Ok(())
                }

                fn map_entries(
                    &mut self,
                    name: String,
                    key: Bytes,
                ) -> wasmtime::Result<Vec<(Bytes, Bytes)>> {
                    let id = guest_id(&mut self.state, &name, StateKind::Map)?;
                    let entries = self.state.map_entries(id, &key)?;
                    Reply::new(&name, self)
                        .take(entries.iter().map(|(k, v)| k.len() + v.len() + 16).sum())?;
                    Ok(entries)
                }

                fn clear_many(&mut self, name: String, keys: Vec<Bytes>) -> wasmtime::Result<()> {
                    let Some(kind) = self
                        .state
                        .names()
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, k)| *k)
                    else {
                        return Ok(());
                    };
                    let id = guest_id(&mut self.state, &name, kind)?;
                    for k in &keys {
                        self.state.clear(id, k)?;
                    }
                    Ok(())
                }

                $($($extra)*)?
            }
        }
    };
}

state_host!(v1);
state_host!(
    v2,
    fn set_ttl(
        &mut self,
        name: String,
        ttl: Option<crate::sandbox::bindings::v2::wrun::operator::types::StateTtl>,
    ) -> wasmtime::Result<()> {
        use crate::sandbox::bindings::v2::wrun::operator::types::{TimeDomain, TtlRefresh};
        use crate::state::{Domain, Refresh, Ttl};
        if crate::state::is_reserved(&name) {
            return Err(wasmtime::Error::new(StateError::Reserved { name }));
        }
        let ttl = ttl.map(|t| Ttl {
            millis: i64::try_from(t.millis).unwrap_or(i64::MAX),
            domain: match t.domain {
                TimeDomain::EventTime => Domain::EventTime,
                TimeDomain::ProcessingTime => Domain::ProcessingTime,
            },
            refresh: match t.refresh {
                TtlRefresh::OnWrite => Refresh::OnWrite,
                TtlRefresh::OnReadAndWrite => Refresh::OnReadAndWrite,
            },
        });
        let (watermark, now) = (self.watermark, self.now_ms);
        self.state.set_clock(watermark, now);
        Ok(self.state.set_ttl(&name, ttl)?)
    }
);
