//! A host [`Batch`] across the Wasm boundary, without an intermediate
//! vector of owned events on either side.
//!
//! [`GuestBatch`] lowers a batch straight into the guest's `list<event>`:
//! one guest allocation for the list of records, one per key and per value
//! (the canonical ABI gives every `list<u8>` its own allocation, which the
//! guest later frees on its own), each filled by one copy from the batch's
//! buffer. [`LiftedBatch`] lifts the guest's `list<event>` by reading the
//! records out of its linear memory and copying each key and value into a
//! host batch, before the guest's post-return frees them.
//!
//! Both type-check as `list<event>` through [`EventShape`], a record with
//! the WIT type's fields, so wasmtime refuses a component whose `event`
//! differs; the memory layout below is that record's canonical ABI layout,
//! checked against wasmtime's own at compile time.

use crate::batch::Batch;
use std::mem::MaybeUninit;
use wasmtime::ValRaw;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext, LowerContext,
};
use wasmtime::component::{ComponentType, Lift, Lower, WasmList};

/// `record event { key: option<list<u8>>, value: list<u8>, timestamp:
/// option<s64> }`, for type checks and its ABI size only.
#[derive(ComponentType)]
#[component(record)]
#[allow(dead_code)]
pub(super) struct EventShape {
    key: Option<WasmList<u8>>,
    value: WasmList<u8>,
    timestamp: Option<i64>,
}

// The canonical ABI layout of `event` in linear memory: `option<list<u8>>`
// is a tag byte then (ptr, len) at 4; `list<u8>` is (ptr, len) at 12;
// `option<s64>` is aligned to 8: a tag byte at 24, the value at 32.
const EVENT_SIZE: usize = 40;
const EVENT_ALIGN: u32 = 8;
const KEY_TAG: usize = 0;
const KEY_PTR: usize = 4;
const VALUE_PTR: usize = 12;
const TS_TAG: usize = 24;
const TS: usize = 32;

const _: () = {
    assert!(<EventShape as ComponentType>::SIZE32 == EVENT_SIZE);
    assert!(<EventShape as ComponentType>::ALIGN32 == EVENT_ALIGN);
};

/// A batch to lower as the guest's `list<event>`.
pub(super) struct GuestBatch<'a>(pub(super) &'a Batch);

/// A guest's `list<event>` lifted into a host batch.
pub(super) struct LiftedBatch(pub(super) Batch);

unsafe impl ComponentType for GuestBatch<'_> {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[EventShape] as ComponentType>::typecheck(ty, types)
    }
}

unsafe impl ComponentType for LiftedBatch {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[EventShape] as ComponentType>::typecheck(ty, types)
    }
}

fn put_u32(rec: &mut [u8], at: usize, v: usize) -> wasmtime::Result<()> {
    rec[at..at + 4].copy_from_slice(&u32::try_from(v)?.to_le_bytes());
    Ok(())
}

fn out_of_memory() -> wasmtime::Error {
    wasmtime::format_err!("the guest's allocator returned memory outside its linear memory")
}

/// Writes the batch into guest memory as a list of `event` records: first
/// every allocation (the list, then each key and value: the guest's
/// `realloc`, which checks each block lies inside the memory), then one
/// pass over the memory that copies the bytes and writes the records.
fn lower_events<U>(
    cx: &mut LowerContext<'_, U>,
    batch: &Batch,
) -> wasmtime::Result<(usize, usize)> {
    let size = batch
        .len()
        .checked_mul(EVENT_SIZE)
        .ok_or_else(|| wasmtime::format_err!("a batch too large for the guest's memory"))?;
    let list = cx.realloc(0, 0, EVENT_ALIGN, size)?;
    let mut blocks = Vec::with_capacity(batch.len());
    for e in batch.iter() {
        let key = match e.key {
            Some(k) => Some(cx.realloc(0, 0, 1, k.len())?),
            None => None,
        };
        blocks.push((key, cx.realloc(0, 0, 1, e.value.len())?));
    }
    let mem = cx.as_slice_mut();
    let mut copy = |at: usize, bytes: &[u8]| -> wasmtime::Result<()> {
        mem.get_mut(at..at + bytes.len())
            .ok_or_else(out_of_memory)?
            .copy_from_slice(bytes);
        Ok(())
    };
    for (e, (key, value)) in batch.iter().zip(&blocks) {
        if let (Some(k), Some(at)) = (e.key, key) {
            copy(*at, k)?;
        }
        copy(*value, e.value)?;
    }
    let recs = mem.get_mut(list..list + size).ok_or_else(out_of_memory)?;
    for ((e, (key, value)), rec) in batch
        .iter()
        .zip(&blocks)
        .zip(recs.chunks_exact_mut(EVENT_SIZE))
    {
        rec.fill(0);
        if let (Some(k), Some(at)) = (e.key, key) {
            rec[KEY_TAG] = 1;
            put_u32(rec, KEY_PTR, *at)?;
            put_u32(rec, KEY_PTR + 4, k.len())?;
        }
        put_u32(rec, VALUE_PTR, *value)?;
        put_u32(rec, VALUE_PTR + 4, e.value.len())?;
        if let Some(ts) = e.timestamp {
            rec[TS_TAG] = 1;
            rec[TS..TS + 8].copy_from_slice(&ts.to_le_bytes());
        }
    }
    Ok((list, batch.len()))
}

unsafe impl Lower for GuestBatch<'_> {
    fn linear_lower_to_flat<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        _ty: InterfaceType,
        dst: &mut MaybeUninit<[ValRaw; 2]>,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = lower_events(cx, self.0)?;
        dst.write([ValRaw::i64(ptr as i64), ValRaw::i64(len as i64)]);
        Ok(())
    }

    fn linear_lower_to_memory<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = lower_events(cx, self.0)?;
        *cx.get::<4>(offset) = u32::try_from(ptr)?.to_le_bytes();
        *cx.get::<4>(offset + 4) = u32::try_from(len)?.to_le_bytes();
        Ok(())
    }
}

fn get_u32(b: &[u8], at: usize) -> usize {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w) as usize
}

/// `len` bytes at `ptr` of guest memory, or an error naming what is out of
/// bounds.
fn guest_bytes<'m>(
    mem: &'m [u8],
    ptr: usize,
    len: usize,
    what: &str,
) -> wasmtime::Result<&'m [u8]> {
    mem.get(ptr..).and_then(|m| m.get(..len)).ok_or_else(|| {
        wasmtime::format_err!("the guest returned an event whose {what} lies outside its memory")
    })
}

/// Reads a guest `list<event>` at `ptr` (of `len` records) into a batch.
/// The bytes copied are bounded by the guest's memory size, so a guest that
/// points many events at the same bytes cannot make the host copy more
/// than it could legitimately return.
fn lift_events(mem: &[u8], ptr: usize, len: usize) -> wasmtime::Result<Batch> {
    if !ptr.is_multiple_of(EVENT_ALIGN as usize) {
        wasmtime::bail!("the guest returned a misaligned list of events");
    }
    let size = len.checked_mul(EVENT_SIZE).ok_or_else(|| {
        wasmtime::format_err!("the guest returned a list of events larger than its memory")
    })?;
    let recs = guest_bytes(mem, ptr, size, "list")?;
    let mut batch = Batch::with_capacity(len, 0);
    let mut budget = mem.len();
    for rec in recs.chunks_exact(EVENT_SIZE) {
        let key = match rec[KEY_TAG] {
            0 => None,
            1 => Some(guest_bytes(
                mem,
                get_u32(rec, KEY_PTR),
                get_u32(rec, KEY_PTR + 4),
                "key",
            )?),
            t => wasmtime::bail!("the guest returned an event with an invalid key option tag {t}"),
        };
        let value = guest_bytes(
            mem,
            get_u32(rec, VALUE_PTR),
            get_u32(rec, VALUE_PTR + 4),
            "value",
        )?;
        let ts = match rec[TS_TAG] {
            0 => None,
            1 => {
                let mut w = [0u8; 8];
                w.copy_from_slice(&rec[TS..TS + 8]);
                Some(i64::from_le_bytes(w))
            }
            t => wasmtime::bail!(
                "the guest returned an event with an invalid timestamp option tag {t}"
            ),
        };
        let n = key.map_or(0, <[u8]>::len) + value.len();
        budget = budget.checked_sub(n).ok_or_else(|| {
            wasmtime::format_err!("the guest returned more event bytes than its memory holds (events pointing at the same bytes)")
        })?;
        batch.push(key, value, ts);
    }
    Ok(batch)
}

unsafe impl Lift for LiftedBatch {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        _ty: InterfaceType,
        src: &[ValRaw; 2],
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = (src[0].get_u32() as usize, src[1].get_u32() as usize);
        lift_events(cx.memory(), ptr, len).map(LiftedBatch)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        _ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = (get_u32(bytes, 0), get_u32(bytes, 4));
        lift_events(cx.memory(), ptr, len).map(LiftedBatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: Option<(u32, u32)>, value: (u32, u32), ts: Option<i64>) -> [u8; EVENT_SIZE] {
        let mut r = [0u8; EVENT_SIZE];
        if let Some((p, l)) = key {
            r[KEY_TAG] = 1;
            r[KEY_PTR..KEY_PTR + 4].copy_from_slice(&p.to_le_bytes());
            r[KEY_PTR + 4..KEY_PTR + 8].copy_from_slice(&l.to_le_bytes());
        }
        r[VALUE_PTR..VALUE_PTR + 4].copy_from_slice(&value.0.to_le_bytes());
        r[VALUE_PTR + 4..VALUE_PTR + 8].copy_from_slice(&value.1.to_le_bytes());
        if let Some(t) = ts {
            r[TS_TAG] = 1;
            r[TS..TS + 8].copy_from_slice(&t.to_le_bytes());
        }
        r
    }

    #[test]
    fn lifts_records_and_refuses_what_is_out_of_bounds() {
        let mut mem = vec![0u8; 256];
        mem[200..203].copy_from_slice(b"key");
        mem[210..215].copy_from_slice(b"value");
        mem[0..40].copy_from_slice(&record(Some((200, 3)), (210, 5), Some(-9)));
        mem[40..80].copy_from_slice(&record(None, (210, 0), None));
        let b = lift_events(&mem, 0, 2).unwrap();
        assert_eq!(b.get(0).key, Some(&b"key"[..]));
        assert_eq!(b.get(0).value, b"value");
        assert_eq!(b.get(0).timestamp, Some(-9));
        assert_eq!(b.get(1).key, None);
        assert_eq!(b.get(1).timestamp, None);

        mem[0..40].copy_from_slice(&record(Some((250, 10)), (210, 5), None));
        let e = lift_events(&mem, 0, 1).unwrap_err().to_string();
        assert!(e.contains("key lies outside"), "{e}");
        assert!(
            lift_events(&mem, 4, 1)
                .unwrap_err()
                .to_string()
                .contains("misaligned")
        );
        assert!(
            lift_events(&mem, 0, 100)
                .unwrap_err()
                .to_string()
                .contains("list lies outside")
        );
        mem[0] = 7;
        assert!(
            lift_events(&mem, 0, 1)
                .unwrap_err()
                .to_string()
                .contains("tag 7")
        );
    }

    #[test]
    fn aliased_bytes_are_bounded_by_the_memory_size() {
        let mut mem = vec![0u8; 4096];
        // 50 events all pointing at the same 100 bytes: 5000 > 4096.
        for i in 0..50 {
            mem[i * 40..i * 40 + 40].copy_from_slice(&record(None, (3000, 100), None));
        }
        let e = lift_events(&mem, 0, 50).unwrap_err().to_string();
        assert!(e.contains("more event bytes than its memory"), "{e}");
    }
}
