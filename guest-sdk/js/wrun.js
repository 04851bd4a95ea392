// Typed keyed state for wrun operators written in JavaScript
// (componentize-js).
//
// Keyed state is owned by the host and reached through the
// `wrun:operator/state` interface. These helpers do what the Rust SDK does:
// for each batch they read a state for all the batch's keys with one host
// call and write the changes back with one, and they encode values in the
// codec of docs/state-format.md, so the bytes are the same whichever
// language wrote them.
//
//     import { ValueState, U64, processBatch, event } from 'wrun';
//     const count = new ValueState('count', U64);
//     export const handler = {
//       process(batch) {
//         return processBatch(batch, [count], (ev, emit) => {
//           const n = (count.get() ?? 0n) + 1n;
//           count.set(n);
//           emit(event(ev.key, String(n), ev.timestamp));
//         });
//       },
//       ...
//     };
//
// See docs/languages.md. The guest build bundles this file into the
// operator (esbuild), leaving the `wrun:operator/*` imports to the host.

import { valueGetMany, valuePutMany } from 'wrun:operator/state@0.1.0';
import { log } from 'wrun:operator/log@0.1.0';

/** Fails the current call with `message` (the job shows it). */
export function fail(message) {
  throw { message };
}

const utf8 = new TextEncoder();

/** An event to emit; `value` may be a string (UTF-8) or bytes. */
export function event(key, value, timestamp) {
  return {
    key,
    value: typeof value === 'string' ? utf8.encode(value) : value,
    timestamp,
  };
}

export const info = (m) => log('info', m);
export const debug = (m) => log('debug', m);
export const warn = (m) => log('warn', m);
export const error = (m) => log('error', m);

/** Fails `open` when restored state was written in another format. */
export function checkFormat(ctx, expected) {
  const f = ctx.restoredFormat;
  if (f != null && (f.name !== expected.name || f.version !== expected.version)) {
    fail(
      `cannot read state written as ${f.name}/${f.version}: this operator reads ${expected.name}/${expected.version}`,
    );
  }
}

// ---- the codec of docs/state-format.md (postcard) ----------------------

function varint(n, out) {
  do {
    const b = Number(n & 0x7fn);
    n >>= 7n;
    out.push(n ? b | 0x80 : b);
  } while (n);
}

function readVarint(b, at, bits) {
  let n = 0n;
  let shift = 0n;
  for (let i = at; i < b.length && i < at + 10; i++) {
    n |= BigInt(b[i] & 0x7f) << shift;
    shift += 7n;
    if (!(b[i] & 0x80)) {
      if (n >> BigInt(bits)) break;
      return [n, i + 1];
    }
  }
  throw new Error(`bad u${bits} varint`);
}

/** u64 as BigInt. */
export const U64 = {
  encode(v) {
    const n = BigInt(v);
    if (n < 0n || n >> 64n) throw new Error(`${v} is not a u64`);
    const out = [];
    varint(n, out);
    return Uint8Array.from(out);
  },
  decode(b) {
    const [n, end] = readVarint(b, 0, 64);
    if (end !== b.length) throw new Error(`${b.length - end} trailing bytes`);
    return n;
  },
};

/** i64 as BigInt (zigzag). */
export const I64 = {
  encode(v) {
    const n = BigInt.asIntN(64, BigInt(v));
    return U64.encode(BigInt.asUintN(64, (n << 1n) ^ (n >> 63n)));
  },
  decode(b) {
    const z = U64.decode(b);
    return (z >> 1n) ^ -(z & 1n);
  },
};

/** Bytes (Uint8Array), length-prefixed. */
export const BYTES = {
  encode(v) {
    const head = [];
    varint(BigInt(v.length), head);
    const out = new Uint8Array(head.length + v.length);
    out.set(head, 0);
    out.set(v, head.length);
    return out;
  },
  decode(b) {
    const [n, at] = readVarint(b, 0, 64);
    if (BigInt(at) + n !== BigInt(b.length)) throw new Error('length does not match the data');
    return b.slice(at);
  },
};

/** A string (UTF-8, length-prefixed). */
export const STR = {
  encode(v) {
    return BYTES.encode(utf8.encode(v));
  },
  decode(b) {
    return new TextDecoder('utf-8', { fatal: true }).decode(BYTES.decode(b));
  },
};

// ---- keyed state ---------------------------------------------------------

let current = null; // [mapKey, keyBytes] of the event being processed

/** A Map key for bytes: one char per byte. */
function mapKey(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

function pack(items) {
  const ends = new Uint32Array(items.length);
  let total = 0;
  items.forEach((it, i) => {
    total += it.length;
    ends[i] = total;
  });
  const data = new Uint8Array(total);
  items.forEach((it, i) => data.set(it, i ? ends[i - 1] : 0));
  return { data, ends };
}

/** One value per key, of one type (its `codec`). */
export class ValueState {
  constructor(name, codec = U64) {
    this.name = name;
    this.codec = codec;
    this.values = new Map();
    this.dirty = new Map(); // mapKey -> key bytes
  }

  key() {
    if (current === null) {
      fail(
        `keyed state '${this.name}' used without a current key: keyed state is only available inside process() for an event that has a key`,
      );
    }
    return current;
  }

  /** The current key's value, or undefined. */
  get() {
    return this.values.get(this.key()[0]) ?? undefined;
  }

  /** Sets the current key's value. */
  set(value) {
    const [k, bytes] = this.key();
    this.values.set(k, value);
    this.dirty.set(k, bytes);
  }

  /** Removes the current key's value. */
  clear() {
    const [k, bytes] = this.key();
    this.values.set(k, null);
    this.dirty.set(k, bytes);
  }

  load(keys) {
    this.values = new Map();
    this.dirty = new Map();
    const got = valueGetMany(this.name, pack(keys.map(([, b]) => b)));
    if (got.ends.length !== keys.length || got.present.length !== keys.length) {
      fail(`value state '${this.name}': the host returned ${got.ends.length} values for ${keys.length} keys`);
    }
    let start = 0;
    keys.forEach(([k], i) => {
      const end = got.ends[i];
      if (got.present[i]) {
        try {
          this.values.set(k, this.codec.decode(got.data.subarray(start, end)));
        } catch (e) {
          fail(`value state '${this.name}': cannot decode state value: ${e.message ?? e}`);
        }
      }
      start = end;
    });
  }

  store() {
    if (this.dirty.size === 0) return;
    const keys = [];
    const values = [];
    const present = [];
    for (const [k, bytes] of this.dirty) {
      const v = this.values.get(k);
      keys.push(bytes);
      present.push(v != null);
      values.push(v != null ? this.codec.encode(v) : new Uint8Array(0));
    }
    const vals = pack(values);
    valuePutMany(this.name, pack(keys), { data: vals.data, ends: vals.ends, present });
    this.dirty = new Map();
  }
}

/**
 * Runs `each(event, emit)` for every event of `batch`, with `states` read
 * for the batch's keys first (one host call each) and written back after
 * (one host call each). Returns what `each` emitted.
 */
export function processBatch(batch, states, each) {
  const out = [];
  const emit = (e) => out.push(e);
  const keyed = batch.map((ev) => (ev.key == null ? null : [mapKey(ev.key), ev.key]));
  if (states.length) {
    const seen = new Map();
    for (const k of keyed) {
      if (k === null) {
        fail(
          `keyed state '${states[0].name}' used without a current key: keyed state is only available inside process() for an event that has a key`,
        );
      }
      if (!seen.has(k[0])) seen.set(k[0], k);
    }
    const keys = [...seen.values()];
    for (const s of states) s.load(keys);
  }
  try {
    batch.forEach((ev, i) => {
      current = keyed[i];
      each(ev, emit);
    });
  } finally {
    current = null;
  }
  for (const s of states) s.store();
  return out;
}
