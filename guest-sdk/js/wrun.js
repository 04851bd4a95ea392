// Typed keyed state for wrun operators written in JavaScript
// (componentize-js).
//
// Keyed state is owned by the host and reached through the
// `wrun:operator/state` interface. These helpers do what the Rust SDK does:
// they cache state for the batch, read a value or list state for all the
// batch's keys with one host call, send each state's writes with one call
// per batch, and encode values in the codec of docs/state-format.md, so the
// bytes are the same whichever language wrote them.
//
// State kinds, each for the current event's key:
//
// - `new ValueState(name, codec)`: `get()`, `set(v)`, `clear()`.
// - `new ListState(name, codec)`: `get()`, `add(v)`, `update(vs)`, `clear()`.
// - `new MapState(name, keyCodec, valueCodec)`: `get(k)`, `contains(k)`,
//   `insert(k, v)`, `remove(k)`, `entries()` (ordered by encoded key bytes).
//
// Codecs: `U64`, `I64` (BigInt), `BOOL`, `F64` (number), `STR`, `BYTES`.
//
//     import { ValueState, ListState, U64, STR, processBatch, event } from 'wrun';
//     const count = new ValueState('count', U64);
//     const seen = new ListState('seen', STR);
//     export const handler = {
//       process(batch) {
//         return processBatch(batch, [count, seen], (ev, emit) => {
//           const n = (count.get() ?? 0n) + 1n;
//           count.set(n);
//           seen.add(new TextDecoder().decode(ev.value));
//           emit(event(ev.key, String(n), ev.timestamp));
//         });
//       },
//       ...
//     };
//
// See docs/languages.md. The guest build bundles this file into the
// operator (esbuild), leaving the `wrun:operator/*` imports to the host.

import {
  valueGetMany,
  valuePutMany,
  listGetMany,
  listAppendMany,
  listPutMany,
  mapGetMany,
  mapPutMany,
  mapEntries,
} from 'wrun:operator/state@0.1.0';
import { log } from 'wrun:operator/log@0.1.0';

/**
 * An event, as the host passes it and as `process` returns it.
 * @typedef {{ key?: Uint8Array, value: Uint8Array, timestamp?: bigint }} Event
 */

/**
 * Encodes one type of value to bytes and back; `decode` throws on bytes
 * that are not a value of the type.
 * @template T
 * @typedef {{ encode(value: T): Uint8Array, decode(bytes: Uint8Array): T }} Codec
 */

/**
 * Fails the current call with `message` (the job shows it).
 * @param {string} message
 * @returns {never}
 */
export function fail(message) {
  throw { message };
}

const utf8 = new TextEncoder();

/**
 * An event to emit; `value` may be a string (UTF-8) or bytes.
 * @param {Uint8Array | undefined} key
 * @param {Uint8Array | string} value
 * @param {bigint} [timestamp]
 * @returns {Event}
 */
export function event(key, value, timestamp) {
  return {
    key,
    value: typeof value === 'string' ? utf8.encode(value) : value,
    timestamp,
  };
}

/** @type {(message: string) => void} */
export const info = (m) => log('info', m);
/** @type {(message: string) => void} */
export const debug = (m) => log('debug', m);
/** @type {(message: string) => void} */
export const warn = (m) => log('warn', m);
/** @type {(message: string) => void} */
export const error = (m) => log('error', m);

/**
 * Fails `open` when restored state was written in another format.
 * @param {{ restoredFormat?: { name: string, version: number } }} ctx
 * @param {{ name: string, version: number }} expected
 */
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

/**
 * u64 as BigInt (a number is accepted when encoding).
 * @type {Codec<bigint>}
 */
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

/**
 * i64 as BigInt (zigzag).
 * @type {Codec<bigint>}
 */
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

/**
 * A boolean: one byte, 0 or 1.
 * @type {Codec<boolean>}
 */
export const BOOL = {
  encode(v) {
    if (typeof v !== 'boolean') throw new Error(`${v} is not a boolean`);
    return Uint8Array.of(v ? 1 : 0);
  },
  decode(b) {
    if (b.length !== 1 || b[0] > 1) throw new Error(`bad bool: ${b.length ? [...b].join(' ') : 'no bytes'}`);
    return b[0] === 1;
  },
};

/**
 * A number as an f64: 8 bytes, IEEE 754, little-endian.
 * @type {Codec<number>}
 */
export const F64 = {
  encode(v) {
    if (typeof v !== 'number') throw new Error(`${v} is not a number`);
    const out = new Uint8Array(8);
    new DataView(out.buffer).setFloat64(0, v, true);
    return out;
  },
  decode(b) {
    if (b.length !== 8) throw new Error(`an f64 is 8 bytes, not ${b.length}`);
    return new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, true);
  },
};

/**
 * Bytes (Uint8Array), length-prefixed.
 * @type {Codec<Uint8Array>}
 */
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

/**
 * A string (UTF-8, length-prefixed).
 * @type {Codec<string>}
 */
export const STR = {
  encode(v) {
    return BYTES.encode(utf8.encode(v));
  },
  decode(b) {
    return new TextDecoder('utf-8', { fatal: true }).decode(BYTES.decode(b));
  },
};

// ---- keyed state ---------------------------------------------------------

let current = null; // [keyStr, keyBytes] of the event being processed
let batchNo = 0; // the number of the current processBatch call

/** A Map key for bytes: one char per byte (strings compare as the bytes do). */
function keyStr(bytes) {
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

/**
 * What `processBatch` needs of a state: `_begin(keys)` before the batch
 * (its distinct keys, as [keyStr, bytes]) and `_end()` after it.
 */
class Keyed {
  /** @param {string} name */
  constructor(name) {
    /** The state's name. */
    this.name = name;
    this.batch = -1;
  }

  /** The current key as [keyStr, bytes]. */
  key() {
    if (current === null) {
      fail(
        `keyed state '${this.name}' used without a current key: keyed state is only available inside process() for an event that has a key`,
      );
    }
    if (this.batch !== batchNo) {
      fail(`keyed state '${this.name}' is used but was not passed to processBatch()`);
    }
    return current;
  }

  decode(codec, bytes) {
    try {
      return codec.decode(bytes);
    } catch (e) {
      fail(`${this.kind} state '${this.name}': cannot decode state value: ${e.message ?? e}`);
    }
  }
}

/**
 * One value per key, of one type (its `codec`). `processBatch` reads it for
 * all the batch's keys with one `valueGetMany` and writes the changed keys
 * back with one `valuePutMany`.
 * @template T
 */
export class ValueState extends Keyed {
  /**
   * @param {string} name
   * @param {Codec<T>} [codec] U64 by default
   */
  constructor(name, codec = /** @type {any} */ (U64)) {
    super(name);
    this.kind = 'value';
    this.codec = codec;
    this.values = new Map();
    this.dirty = new Map(); // keyStr -> key bytes
  }

  /**
   * The current key's value, or undefined.
   * @returns {T | undefined}
   */
  get() {
    return this.values.get(this.key()[0]) ?? undefined;
  }

  /**
   * Sets the current key's value (null or undefined clears it).
   * @param {T} value
   */
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

  _begin(keys) {
    this.batch = batchNo;
    this.values = new Map();
    this.dirty = new Map();
    const got = valueGetMany(this.name, pack(keys.map(([, b]) => b)));
    if (got.ends.length !== keys.length || got.present.length !== keys.length) {
      fail(`value state '${this.name}': the host returned ${got.ends.length} values for ${keys.length} keys`);
    }
    let start = 0;
    keys.forEach(([k], i) => {
      const end = got.ends[i];
      if (got.present[i]) this.values.set(k, this.decode(this.codec, got.data.subarray(start, end)));
      start = end;
    });
  }

  _end() {
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
 * A list per key; each element is encoded on its own with `codec`. `add`
 * without a read is a buffered append (one `listAppendMany` per batch); the
 * first `get` of a batch reads the lists of all the batch's keys with one
 * `listGetMany`; lists replaced by `update`/`clear`, or read and then added
 * to, are written whole with one `listPutMany`.
 * @template T
 */
export class ListState extends Keyed {
  /**
   * @param {string} name
   * @param {Codec<T>} codec
   */
  constructor(name, codec) {
    super(name);
    this.kind = 'list';
    this.codec = codec;
    this.keys = [];
    this.appended = new Map(); // keyStr -> T[]: keys not read, blind appends
    this.lists = new Map(); // keyStr -> T[]: keys read or replaced
    this.dirty = new Set(); // keyStrs whose list is written whole
  }

  /**
   * The current key's list (empty when it has none), a copy.
   * @returns {T[]}
   */
  get() {
    const [k] = this.key();
    if (!this.lists.has(k)) this.load();
    return [...this.lists.get(k)];
  }

  /**
   * Appends `value` to the current key's list.
   * @param {T} value
   */
  add(value) {
    const [k] = this.key();
    const list = this.lists.get(k);
    if (list) {
      list.push(value);
      this.dirty.add(k);
    } else {
      const a = this.appended.get(k);
      if (a) a.push(value);
      else this.appended.set(k, [value]);
    }
  }

  /**
   * Replaces the current key's list.
   * @param {Iterable<T>} values
   */
  update(values) {
    const [k] = this.key();
    this.appended.delete(k);
    this.lists.set(k, [...values]);
    this.dirty.add(k);
  }

  /** Empties the current key's list. */
  clear() {
    this.update([]);
  }

  load() {
    const got = listGetMany(this.name, this.keys.map(([, b]) => b));
    if (got.length !== this.keys.length) {
      fail(`list state '${this.name}': the host returned ${got.length} lists for ${this.keys.length} keys`);
    }
    this.keys.forEach(([k], i) => {
      if (this.lists.has(k)) return;
      const list = got[i].map((b) => this.decode(this.codec, b));
      const appended = this.appended.get(k);
      if (appended) {
        list.push(...appended);
        this.appended.delete(k);
        this.dirty.add(k);
      }
      this.lists.set(k, list);
    });
  }

  _begin(keys) {
    this.batch = batchNo;
    this.keys = keys;
    this.appended = new Map();
    this.lists = new Map();
    this.dirty = new Set();
  }

  _end() {
    const appends = [];
    const puts = [];
    for (const [k, bytes] of this.keys) {
      for (const v of this.appended.get(k) ?? []) appends.push([bytes, this.codec.encode(v)]);
      if (this.dirty.has(k)) puts.push([bytes, this.lists.get(k).map((v) => this.codec.encode(v))]);
    }
    if (appends.length) listAppendMany(this.name, appends);
    if (puts.length) listPutMany(this.name, puts);
    this.appended = new Map();
    this.dirty = new Set();
  }
}

/**
 * A map per key, from map keys (`keyCodec`) to values (`valueCodec`).
 * `get` is a point lookup (one `mapGetMany`), cached for the batch;
 * `insert` and `remove` are sent with one `mapPutMany` at the end of the
 * batch.
 * @template K, V
 */
export class MapState extends Keyed {
  /**
   * @param {string} name
   * @param {Codec<K>} keyCodec
   * @param {Codec<V>} valueCodec
   */
  constructor(name, keyCodec, valueCodec) {
    super(name);
    this.kind = 'map';
    this.keyCodec = keyCodec;
    this.valueCodec = valueCodec;
    // keyStr of the event key -> { key, entries: keyStr of the encoded map
    // key -> { mapKey (encoded), value, dirty } }
    this.cache = new Map();
  }

  /** The cache of the current key. */
  slot() {
    const [k, key] = this.key();
    let s = this.cache.get(k);
    if (!s) {
      s = { key, entries: new Map() };
      this.cache.set(k, s);
    }
    return s;
  }

  /**
   * The value under `mapKey` for the current key, or undefined.
   * @param {K} mapKey
   * @returns {V | undefined}
   */
  get(mapKey) {
    const s = this.slot();
    const mk = this.keyCodec.encode(mapKey);
    const hit = s.entries.get(keyStr(mk));
    if (hit) return hit.value ?? undefined;
    const got = mapGetMany(this.name, [[s.key, mk]]);
    if (got.length !== 1) fail(`map state '${this.name}': the host returned ${got.length} values for 1 key`);
    const value = got[0] == null ? undefined : this.decode(this.valueCodec, got[0]);
    s.entries.set(keyStr(mk), { mapKey: mk, value, dirty: false });
    return value;
  }

  /**
   * Whether `mapKey` has a value for the current key.
   * @param {K} mapKey
   * @returns {boolean}
   */
  contains(mapKey) {
    return this.get(mapKey) !== undefined;
  }

  /**
   * Sets the value under `mapKey` for the current key (null or undefined
   * removes it).
   * @param {K} mapKey
   * @param {V} value
   */
  insert(mapKey, value) {
    const mk = this.keyCodec.encode(mapKey);
    this.slot().entries.set(keyStr(mk), { mapKey: mk, value: value ?? undefined, dirty: true });
  }

  /**
   * Removes `mapKey` for the current key.
   * @param {K} mapKey
   */
  remove(mapKey) {
    const mk = this.keyCodec.encode(mapKey);
    this.slot().entries.set(keyStr(mk), { mapKey: mk, value: undefined, dirty: true });
  }

  /**
   * Every [map key, value] of the current key's map, with this batch's
   * unwritten changes, ordered by the encoded map-key bytes (one
   * `mapEntries` call each time).
   * @returns {Array<[K, V]>}
   */
  entries() {
    const s = this.slot();
    const merged = new Map(); // keyStr -> { mapKey, bytes } or { mapKey, value }
    for (const [mk, bytes] of mapEntries(this.name, s.key)) merged.set(keyStr(mk), { mapKey: mk, bytes });
    for (const [k, e] of s.entries) if (e.dirty) merged.set(k, e);
    const out = [];
    for (const k of [...merged.keys()].sort()) {
      const e = merged.get(k);
      if ('bytes' in e) out.push([this.decode(this.keyCodec, e.mapKey), this.decode(this.valueCodec, e.bytes)]);
      else if (e.value !== undefined) out.push([this.decode(this.keyCodec, e.mapKey), e.value]);
    }
    return out;
  }

  _begin(_keys) {
    this.batch = batchNo;
    this.cache = new Map();
  }

  _end() {
    const entries = [];
    for (const { key, entries: es } of this.cache.values()) {
      for (const e of es.values()) {
        if (e.dirty) {
          entries.push({
            key,
            mapKey: e.mapKey,
            value: e.value === undefined ? undefined : this.valueCodec.encode(e.value),
          });
        }
      }
    }
    if (entries.length) mapPutMany(this.name, entries);
    this.cache = new Map();
  }
}

/**
 * Runs `each(event, emit)` for every event of `batch`, with `states` (any
 * mix of ValueState, ListState and MapState) set up for the batch's keys
 * first and their changes written back after. Returns what `each` emitted.
 * @param {Event[]} batch
 * @param {Array<ValueState<any> | ListState<any> | MapState<any, any>>} states
 * @param {(ev: Event, emit: (e: Event) => void) => void} each
 * @returns {Event[]}
 */
export function processBatch(batch, states, each) {
  const out = [];
  const emit = (e) => out.push(e);
  batchNo++;
  const keyed = batch.map((ev) => (ev.key == null ? null : [keyStr(ev.key), ev.key]));
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
    for (const s of states) s._begin(keys);
  }
  try {
    batch.forEach((ev, i) => {
      current = keyed[i];
      each(ev, emit);
    });
  } finally {
    current = null;
  }
  for (const s of states) s._end();
  return out;
}
