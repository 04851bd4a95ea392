// Operators for wrun in JavaScript (componentize-js), on
// `wrun:operator@0.2.0`.
//
// What the Rust SDK does, for JavaScript: packed batches read in place
// (an event is a small object whose `key`, `value` and `timestamp` are
// read from the batch's buffers when asked for), emitted events written
// into one growing buffer (to the main output or to named outputs,
// inheriting the input's timestamp without a BigInt in between), typed
// keyed state cached per batch with one host call per kind of read or
// write, keyed timers, and event-time windows built on both. Values are
// encoded in the codec of docs/state-format.md, so the bytes are the same
// whichever language wrote them.
//
// State kinds, each for the current event's (or fired timer's) key:
//
// - `new ValueState(name, codec)`: `get()`, `set(v)`, `clear()`.
// - `new ListState(name, codec)`: `get()`, `add(v)`, `update(vs)`, `clear()`.
// - `new MapState(name, keyCodec, valueCodec)`: `get(k)`, `contains(k)`,
//   `insert(k, v)`, `remove(k)`, `entries()` (ordered by encoded key bytes).
// - `new WindowState(name, spec, aggregate)`: `add(ev)`, `fire(timer)`.
//
// Codecs: `U64`, `I64` (BigInt), `U53` (a u64 as a Number), `BOOL`, `F64`
// (number), `STR`, `BYTES`, `tuple(...)`.
//
//     import { ValueState, U53, describe, processBatch, emitted } from 'wrun';
//     const FORMAT = { name: 'wordcount', version: 1 };
//     const count = new ValueState('count', U53);
//     export const handler = {
//       describe: () => describe(FORMAT),
//       process(batch) {
//         return processBatch(batch, [count], (ev, out) => {
//           const n = (count.get() ?? 0) + 1;
//           count.set(n);
//           out.emit(ev.key, String(n)); // the input's timestamp
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
  setTtl,
} from 'wrun:operator/state@0.2.1';
import {
  registerMany,
  deleteMany,
  currentWatermark as hostWatermark,
  processingTime as hostProcessingTime,
} from 'wrun:operator/timers@0.2.1';
import { log } from 'wrun:operator/log@0.2.1';

/**
 * An event of a batch. Its fields are read from the batch when asked for.
 * @typedef {{ key: Uint8Array | undefined, value: Uint8Array, timestamp: bigint | undefined }} Event
 */

/**
 * A fired timer: its key (the current key in `onTimer`), time (ms),
 * domain and tag.
 * @typedef {{ key: Uint8Array, time: bigint, domain: 'event-time' | 'processing-time', tag: number }} Timer
 */

/**
 * Encodes one type of value to bytes and back; `decode` throws on bytes
 * that are not a value of the type. `read(bytes, at)` decodes a value
 * that starts at `at` and returns it with the offset after it (for values
 * inside others: tuples, windows).
 * @template T
 * @typedef {{ encode(value: T): Uint8Array, decode(bytes: Uint8Array): T, read?(bytes: Uint8Array, at: number): [T, number] }} Codec
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

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** An i64 as a BigInt, clamped into range; a Number is accepted. */
function i64(t) {
  const n = typeof t === 'bigint' ? t : BigInt(t);
  return n > I64_MAX ? I64_MAX : n < I64_MIN ? I64_MIN : n;
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

/** A codec from `read` alone: `decode` reads exactly the bytes. */
function withDecode(codec) {
  codec.decode = (b) => {
    const [v, end] = codec.read(b, 0);
    if (end !== b.length) throw new Error(`${b.length - end} trailing bytes`);
    return v;
  };
  return codec;
}

/**
 * u64 as BigInt (a number is accepted when encoding).
 * @type {Codec<bigint>}
 */
export const U64 = withDecode({
  encode(v) {
    if (typeof v === 'number' && v >= 0 && v < 0x80 && Number.isInteger(v)) return Uint8Array.of(v);
    const n = BigInt(v);
    if (n < 0n || n >> 64n) throw new Error(`${v} is not a u64`);
    const out = [];
    varint(n, out);
    return Uint8Array.from(out);
  },
  read(b, at) {
    if (at < b.length && b[at] < 0x80) return [BigInt(b[at]), at + 1];
    return readVarint(b, at, 64);
  },
});

/**
 * A u64 as a Number, for values up to 2^53 - 1 (counts): the same bytes
 * as `U64`, without BigInt arithmetic. Decoding a larger value fails.
 * @type {Codec<number>}
 */
export const U53 = withDecode({
  encode(v) {
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${v} is not a u64 below 2^53`);
    if (v < 0x80) return Uint8Array.of(v);
    if (v < 0x4000) return Uint8Array.of((v & 0x7f) | 0x80, v >>> 7);
    const out = [];
    while (v >= 0x80) {
      out.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    out.push(v);
    return Uint8Array.from(out);
  },
  read(b, at) {
    let n = 0;
    let scale = 1;
    for (let i = at; i < b.length && i < at + 8; i++) {
      const byte = b[i];
      n += (byte & 0x7f) * scale;
      if (!(byte & 0x80)) {
        if (n > Number.MAX_SAFE_INTEGER) break;
        return [n, i + 1];
      }
      scale *= 0x80;
    }
    throw new Error('bad u64 varint, or one above 2^53');
  },
});

/**
 * i64 as BigInt (zigzag).
 * @type {Codec<bigint>}
 */
export const I64 = withDecode({
  encode(v) {
    const n = BigInt.asIntN(64, BigInt(v));
    return U64.encode(BigInt.asUintN(64, (n << 1n) ^ (n >> 63n)));
  },
  read(b, at) {
    const [z, end] = readVarint(b, at, 64);
    return [(z >> 1n) ^ -(z & 1n), end];
  },
});

/**
 * A boolean: one byte, 0 or 1.
 * @type {Codec<boolean>}
 */
export const BOOL = withDecode({
  encode(v) {
    if (typeof v !== 'boolean') throw new Error(`${v} is not a boolean`);
    return Uint8Array.of(v ? 1 : 0);
  },
  read(b, at) {
    if (at >= b.length || b[at] > 1) throw new Error(`bad bool: ${at < b.length ? b[at] : 'no bytes'}`);
    return [b[at] === 1, at + 1];
  },
});
BOOL.decode = (b) => {
  if (b.length !== 1 || b[0] > 1) throw new Error(`bad bool: ${b.length ? [...b].join(' ') : 'no bytes'}`);
  return b[0] === 1;
};

/**
 * A number as an f64: 8 bytes, IEEE 754, little-endian.
 * @type {Codec<number>}
 */
export const F64 = withDecode({
  encode(v) {
    if (typeof v !== 'number') throw new Error(`${v} is not a number`);
    const out = new Uint8Array(8);
    new DataView(out.buffer).setFloat64(0, v, true);
    return out;
  },
  read(b, at) {
    if (b.length - at < 8) throw new Error(`an f64 is 8 bytes, not ${b.length - at}`);
    return [new DataView(b.buffer, b.byteOffset + at, 8).getFloat64(0, true), at + 8];
  },
});

/**
 * Bytes (Uint8Array), length-prefixed.
 * @type {Codec<Uint8Array>}
 */
export const BYTES = withDecode({
  encode(v) {
    const head = [];
    varint(BigInt(v.length), head);
    const out = new Uint8Array(head.length + v.length);
    out.set(head, 0);
    out.set(v, head.length);
    return out;
  },
  read(b, at) {
    const [n, start] = readVarint(b, at, 64);
    const end = start + Number(n);
    if (end > b.length) throw new Error('length does not match the data');
    return [b.slice(start, end), end];
  },
});

const strict = new TextDecoder('utf-8', { fatal: true });

/**
 * A string (UTF-8, length-prefixed).
 * @type {Codec<string>}
 */
export const STR = withDecode({
  encode(v) {
    return BYTES.encode(utf8.encode(v));
  },
  read(b, at) {
    const [bytes, end] = BYTES.read(b, at);
    return [strict.decode(bytes), end];
  },
});

/**
 * A tuple (an array) of values, each in its codec, one after another:
 * postcard's tuple (Rust's `(i64, u64)` is `tuple(I64, U64)`).
 * @param {...Codec<any>} codecs
 * @returns {Codec<any[]>}
 */
export function tuple(...codecs) {
  return withDecode({
    encode(v) {
      if (v.length !== codecs.length) throw new Error(`not a tuple of ${codecs.length}`);
      return concat(codecs.map((c, i) => c.encode(v[i])));
    },
    read(b, at) {
      const out = [];
      for (const c of codecs) {
        const [v, next] = c.read(b, at);
        out.push(v);
        at = next;
      }
      return [out, at];
    },
  });
}

function concat(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Items as `packed` (data, ends). */
function pack(items) {
  const ends = new Uint32Array(items.length);
  let total = 0;
  for (let i = 0; i < items.length; i++) {
    total += items[i].length;
    ends[i] = total;
  }
  const data = new Uint8Array(total);
  for (let i = 0; i < items.length; i++) data.set(items[i], i ? ends[i - 1] : 0);
  return { data, ends };
}

/** A Map key for bytes: one char per byte (strings compare as the bytes do). */
function keyString(data, start, end) {
  if (end - start <= 4096) return String.fromCharCode.apply(null, data.subarray(start, end));
  let s = '';
  for (let i = start; i < end; i += 4096) s += String.fromCharCode.apply(null, data.subarray(i, Math.min(end, i + 4096)));
  return s;
}

// ---- what a call emits --------------------------------------------------

let outputs = []; // the named outputs, from `describe`
// The output buffers, reused from call to call (the bindings copy them
// out when the call returns).
let buf = new Uint8Array(4096);
let pos = 0;
let count = 0;
let keyEndsOut = new Uint32Array(256);
let valueEndsOut = new Uint32Array(256);
let flagsOut = new Uint8Array(256);
let tsOut = new BigInt64Array(256);
let ts32Out = new Int32Array(tsOut.buffer);
let outsOut = null; // per event output, once one went to a named output
// Where an emitted event without a timestamp takes one: item `inheritAt`
// of `inherit32` (an Int32Array view of s64s) when bit 1 of
// `inheritFlags[inheritAt]` is set.
let inherit32 = new Int32Array(0);
let inheritFlags = new Uint8Array(0);
let inheritAt = -1;

function reserve(bytes) {
  if (pos + bytes > buf.length) {
    const b = new Uint8Array(Math.max(buf.length * 2, pos + bytes));
    b.set(buf.subarray(0, pos));
    buf = b;
  }
}

function growEvents() {
  const cap = keyEndsOut.length * 2;
  const grow = (a, C) => {
    const b = new C(cap);
    b.set(a);
    return b;
  };
  keyEndsOut = grow(keyEndsOut, Uint32Array);
  valueEndsOut = grow(valueEndsOut, Uint32Array);
  flagsOut = grow(flagsOut, Uint8Array);
  tsOut = grow(tsOut, BigInt64Array);
  ts32Out = new Int32Array(tsOut.buffer);
  if (outsOut) outsOut = grow(outsOut, Uint8Array);
}

function writeBytes(b) {
  const n = b.length;
  reserve(n);
  buf.set(b, pos);
  pos += n;
}

function writeString(s) {
  const n = s.length;
  if (n <= 32) {
    reserve(n);
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) break;
      buf[pos + i] = c;
    }
    if (i === n) {
      pos += n;
      return;
    }
  }
  reserve(n * 3);
  pos += utf8.encodeInto(s, buf.subarray(pos)).written;
}

function push(key, value, timestamp, output) {
  const j = count;
  if (j === keyEndsOut.length) growEvents();
  let f = 0;
  if (key != null) {
    writeBytes(key);
    f = 1;
  }
  keyEndsOut[j] = pos;
  if (typeof value === 'string') writeString(value);
  else writeBytes(value);
  valueEndsOut[j] = pos;
  if (timestamp == null) {
    const i = inheritAt;
    if (i >= 0 && inheritFlags[i] & 2) {
      ts32Out[2 * j] = inherit32[2 * i];
      ts32Out[2 * j + 1] = inherit32[2 * i + 1];
      f |= 2;
    } else tsOut[j] = 0n;
  } else {
    tsOut[j] = i64(timestamp);
    f |= 2;
  }
  flagsOut[j] = f;
  if (output !== 0 && outsOut === null) outsOut = new Uint8Array(keyEndsOut.length);
  if (outsOut !== null) outsOut[j] = output;
  count = j + 1;
}

/**
 * Collects what a call emits; `each`, `onTimer` and the like get it. An
 * event emitted without a timestamp gets the one of the event being
 * processed (from an event-time timer: the timer's time).
 */
class Emitter {
  /**
   * Emits an event to the main output. `value` is bytes or a string
   * (sent as UTF-8); `key` may be undefined.
   * @param {Uint8Array | undefined} key
   * @param {Uint8Array | string} value
   * @param {bigint | number} [timestamp]
   */
  emit(key, value, timestamp) {
    push(key, value, timestamp, 0);
  }

  /**
   * Emits an event to the named output `output` (one of those given to
   * `describe`, wired in the manifest as `from = "vertex.output"`).
   * @param {string} output
   * @param {Uint8Array | undefined} key
   * @param {Uint8Array | string} value
   * @param {bigint | number} [timestamp]
   */
  emitTo(output, key, value, timestamp) {
    const i = outputs.indexOf(output);
    if (i < 0) {
      fail(
        `emitted to output '${output}', which the operator does not declare in describe() (it declares [${outputs.join(', ')}])`,
      );
    }
    push(key, value, timestamp, i + 1);
  }

  /** How many events were emitted so far in this call. */
  get length() {
    return count;
  }
}

const emitter = new Emitter();

function startOutput() {
  pos = 0;
  count = 0;
  outsOut = null;
  inheritAt = -1;
}

function finishOutput() {
  return {
    events: {
      data: buf.subarray(0, pos),
      keyEnds: keyEndsOut.subarray(0, count),
      valueEnds: valueEndsOut.subarray(0, count),
      flags: flagsOut.subarray(0, count),
      timestamps: tsOut.subarray(0, count),
    },
    outputs: outsOut === null ? new Uint8Array(0) : outsOut.subarray(0, count),
  };
}

/**
 * What `handler.describe` returns: the state format and the named outputs
 * besides the main one (which `emitTo` then accepts).
 * @param {{ name: string, version: number }} format
 * @param {string[]} [named]
 */
export function describe(format, named = []) {
  outputs = [...named];
  return { format, outputs: [...named] };
}

/**
 * An `emitted` record of what `run(out)` emits (nothing without `run`):
 * for `close`.
 * @param {(out: Emitter) => void} [run]
 */
export function emitted(run) {
  startOutput();
  if (run) run(emitter);
  return copyOutput();
}

/** The output, copied: for callers that keep it (tests, `emitted`). */
function copyOutput() {
  const o = finishOutput();
  const e = o.events;
  return {
    events: {
      data: e.data.slice(),
      keyEnds: e.keyEnds.slice(),
      valueEnds: e.valueEnds.slice(),
      flags: e.flags.slice(),
      timestamps: e.timestamps.slice(),
    },
    outputs: o.outputs.slice(),
  };
}

/** An event of a packed batch, read from it when asked for. */
class BatchEvent {
  constructor(b, i, start) {
    this.b = b;
    this.i = i;
    this.start = start;
  }

  /** @returns {Uint8Array | undefined} */
  get key() {
    const b = this.b;
    return b.flags[this.i] & 1 ? b.data.subarray(this.start, b.keyEnds[this.i]) : undefined;
  }

  /** @returns {Uint8Array} */
  get value() {
    const b = this.b;
    return b.data.subarray(b.keyEnds[this.i], b.valueEnds[this.i]);
  }

  /** @returns {bigint | undefined} */
  get timestamp() {
    const b = this.b;
    return b.flags[this.i] & 2 ? b.timestamps[this.i] : undefined;
  }
}

/**
 * An event as `packEvents` takes it; `value` may be a string (UTF-8).
 * @param {Uint8Array | undefined} key
 * @param {Uint8Array | string} value
 * @param {bigint | number} [timestamp]
 */
export function event(key, value, timestamp) {
  return { key, value, timestamp };
}

/**
 * Events as the packed `events` record (for tests): `{ key, value,
 * timestamp }` objects, `value` bytes or a string.
 * @param {Array<{ key?: Uint8Array, value: Uint8Array | string, timestamp?: bigint | number }>} events
 */
export function packEvents(events) {
  startOutput();
  for (const e of events) push(e.key, e.value, e.timestamp, 0);
  return copyOutput().events;
}

/**
 * The events of a packed `events` record, as plain objects.
 * @returns {Array<{ key: Uint8Array | undefined, value: Uint8Array, timestamp: bigint | undefined }>}
 */
export function unpackEvents(batch) {
  const out = [];
  let start = 0;
  for (let i = 0; i < batch.keyEnds.length; i++) {
    const e = new BatchEvent(batch, i, start);
    out.push({ key: e.key?.slice(), value: e.value.slice(), timestamp: e.timestamp });
    start = batch.valueEnds[i];
  }
  return out;
}

// ---- keyed state ---------------------------------------------------------

let cur = -1; // the index of the current key in `keys`, -1 for none
let batchNo = 1; // the number of the current call; states compare theirs
// The call's distinct keys: `strs[i]` (a Map key) and `bytes[i]`, and
// their packed form once asked for.
let keys = { strs: [], bytes: [], packed: null };

function packedKeys() {
  if (keys.packed === null) keys.packed = pack(keys.bytes);
  return keys.packed;
}

function noKey(what) {
  return `${what} used without a current key: keyed state is only available inside process() for an event that has a key, or in onTimers()`;
}

/**
 * What `processBatch` needs of a state: `_begin()` before the batch,
 * `_end()` after it, `_reset()` when it failed.
 */
class Keyed {
  /** @param {string} name */
  constructor(name) {
    /** The state's name. */
    this.name = name;
    this.batch = 0;
  }

  /**
   * Gives the state a time to live (docs/time.md, "State TTL"): an entry
   * (a key's value, list or map) not written (with `refreshOnRead`, nor
   * read) for `millis` ms of `domain` (the job's clock, or with
   * 'event-time' the watermark) is expired: never returned again, cleaned
   * up by the host, in no later checkpoint. Call it where the state is
   * made, in `open`. Returns the state.
   * @param {number} millis
   * @param {{ domain?: 'processing-time' | 'event-time', refreshOnRead?: boolean }} [options]
   * @returns {this}
   */
  withTtl(millis, { domain = 'processing-time', refreshOnRead = false } = {}) {
    if (!(millis >= 1)) fail(`state '${this.name}': a time to live must be at least 1 ms, not ${millis}`);
    setTtl(this.name, {
      millis: BigInt(Math.floor(millis)),
      domain,
      refresh: refreshOnRead ? 'on-read-and-write' : 'on-write',
    });
    return this;
  }

  misuse() {
    if (cur < 0) fail(noKey(`keyed state '${this.name}'`));
    fail(`keyed state '${this.name}' is used but was not passed to processBatch()`);
  }

  /** The current key as [keyStr, bytes]. */
  key() {
    if (this.batch !== batchNo || cur < 0) this.misuse();
    return [keys.strs[cur], keys.bytes[cur]];
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
 * One value per key, of one type (its `codec`). The first `get` of a batch
 * reads it for all the batch's keys with one `valueGetMany` (a `set`
 * without a `get` reads nothing); the changed keys are written back with
 * one `valuePutMany`.
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
    this.values = [];
    this.dirty = new Uint8Array(0);
    this.loaded = false;
    this.anyDirty = false;
  }

  /**
   * The current key's value, or undefined.
   * @returns {T | undefined}
   */
  get() {
    if (this.batch !== batchNo || cur < 0) this.misuse();
    if (!this.loaded) this.load();
    return this.values[cur];
  }

  /**
   * Sets the current key's value (null or undefined clears it).
   * @param {T} value
   */
  set(value) {
    if (this.batch !== batchNo || cur < 0) this.misuse();
    this.values[cur] = value ?? undefined;
    this.dirty[cur] = 1;
    this.anyDirty = true;
  }

  /** Removes the current key's value. */
  clear() {
    this.set(undefined);
  }

  load() {
    this.loaded = true;
    const n = keys.bytes.length;
    const got = valueGetMany(this.name, packedKeys());
    if (got.ends.length !== n || got.present.length !== n) {
      fail(`value state '${this.name}': the host returned ${got.ends.length} values for ${n} keys`);
    }
    const { data, ends, present } = got;
    const values = this.values;
    const dirty = this.dirty;
    const codec = this.codec;
    let start = 0;
    for (let i = 0; i < n; i++) {
      const end = ends[i];
      if (present[i] && !dirty[i]) values[i] = this.decode(codec, data.subarray(start, end));
      start = end;
    }
  }

  _begin() {
    this.batch = batchNo;
    const n = keys.bytes.length;
    this.values = new Array(n);
    if (this.dirty.length < n) this.dirty = new Uint8Array(Math.max(n, 2 * this.dirty.length));
    else this.dirty.fill(0, 0, n);
    this.loaded = false;
    this.anyDirty = false;
  }

  _end() {
    this.batch = 0;
    if (!this.anyDirty) return;
    const n = keys.bytes.length;
    const dirtyKeys = [];
    const values = [];
    const present = [];
    for (let i = 0; i < n; i++) {
      if (!this.dirty[i]) continue;
      const v = this.values[i];
      dirtyKeys.push(keys.bytes[i]);
      present.push(v !== undefined);
      values.push(v !== undefined ? this.codec.encode(v) : new Uint8Array(0));
    }
    const vals = pack(values);
    const k = dirtyKeys.length === n ? packedKeys() : pack(dirtyKeys);
    valuePutMany(this.name, k, { data: vals.data, ends: vals.ends, present });
    this.values = [];
  }

  _reset() {
    this.batch = 0;
    this.values = [];
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
    const got = listGetMany(this.name, keys.bytes);
    if (got.length !== keys.bytes.length) {
      fail(`list state '${this.name}': the host returned ${got.length} lists for ${keys.bytes.length} keys`);
    }
    keys.strs.forEach((k, i) => {
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

  _begin() {
    this.batch = batchNo;
    this._reset();
    this.batch = batchNo;
  }

  _end() {
    const appends = [];
    const puts = [];
    keys.strs.forEach((k, i) => {
      const bytes = keys.bytes[i];
      for (const v of this.appended.get(k) ?? []) appends.push([bytes, this.codec.encode(v)]);
      if (this.dirty.has(k)) puts.push([bytes, this.lists.get(k).map((v) => this.codec.encode(v))]);
    });
    if (appends.length) listAppendMany(this.name, appends);
    if (puts.length) listPutMany(this.name, puts);
    this._reset();
  }

  _reset() {
    this.batch = 0;
    this.appended = new Map();
    this.lists = new Map();
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
    const mks = keyString(mk, 0, mk.length);
    const hit = s.entries.get(mks);
    if (hit) return hit.value ?? undefined;
    const got = mapGetMany(this.name, [[s.key, mk]]);
    if (got.length !== 1) fail(`map state '${this.name}': the host returned ${got.length} values for 1 key`);
    const value = got[0] == null ? undefined : this.decode(this.valueCodec, got[0]);
    s.entries.set(mks, { mapKey: mk, value, dirty: false });
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
    this.slot().entries.set(keyString(mk, 0, mk.length), { mapKey: mk, value: value ?? undefined, dirty: true });
  }

  /**
   * Removes `mapKey` for the current key.
   * @param {K} mapKey
   */
  remove(mapKey) {
    this.insert(mapKey, undefined);
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
    for (const [mk, bytes] of mapEntries(this.name, s.key)) merged.set(keyString(mk, 0, mk.length), { mapKey: mk, bytes });
    for (const [k, e] of s.entries) if (e.dirty) merged.set(k, e);
    const out = [];
    for (const k of [...merged.keys()].sort()) {
      const e = merged.get(k);
      if ('bytes' in e) out.push([this.decode(this.keyCodec, e.mapKey), this.decode(this.valueCodec, e.bytes)]);
      else if (e.value !== undefined) out.push([this.decode(this.keyCodec, e.mapKey), e.value]);
    }
    return out;
  }

  _begin() {
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
    this._reset();
  }

  _reset() {
    this.batch = 0;
    this.cache = new Map();
  }
}

// ---- timers --------------------------------------------------------------

let watermark = null; // [value] once read in this call
let timerOps = []; // [register, key bytes, time (bigint), domain, tag]

function timerOp(register, time, domain, tag) {
  if (cur < 0) {
    fail('timers used without a current key: only inside process() for an event that has a key, or in onTimers()');
  }
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xffffffff) fail(`a timer's tag is a u32, not ${tag}`);
  timerOps.push([register, keys.bytes[cur], i64(time), domain, tag]);
}

/**
 * Registers an event-time timer for the current key at `time` (ms), with
 * `tag` (a number of yours, to tell your timers apart). It fires once the
 * watermark reaches `time`; registering it again changes nothing.
 * @param {bigint | number} time
 * @param {number} [tag]
 */
export function registerEventTime(time, tag = 0) {
  timerOp(true, time, 'event-time', tag);
}

/**
 * Registers a processing-time timer for the current key at `time` (Unix
 * ms): it fires once the job's clock reaches it.
 * @param {bigint | number} time
 * @param {number} [tag]
 */
export function registerProcessingTime(time, tag = 0) {
  timerOp(true, time, 'processing-time', tag);
}

/**
 * Deletes an event-time timer of the current key, if registered.
 * @param {bigint | number} time
 * @param {number} [tag]
 */
export function deleteEventTime(time, tag = 0) {
  timerOp(false, time, 'event-time', tag);
}

/**
 * Deletes a processing-time timer of the current key, if registered.
 * @param {bigint | number} time
 * @param {number} [tag]
 */
export function deleteProcessingTime(time, tag = 0) {
  timerOp(false, time, 'processing-time', tag);
}

/**
 * The subtask's event-time watermark (ms): events still to come have later
 * timestamps, or are late. Undefined before the first watermark. Read from
 * the host once per call.
 * @returns {bigint | undefined}
 */
export function currentWatermark() {
  if (watermark === null) watermark = [hostWatermark() ?? undefined];
  return watermark[0];
}

/**
 * The job's clock, in milliseconds since the Unix epoch.
 * @returns {bigint}
 */
export function processingTime() {
  return hostProcessingTime();
}

/** Timers ([key, time, domain, tag]) as the `timers` record. */
export function packTimers(timers) {
  return {
    keys: pack(timers.map((t) => t[0])),
    times: BigInt64Array.from(timers, (t) => i64(t[1])),
    domains: timers.map((t) => t[2]),
    tags: Uint32Array.from(timers, (t) => t[3]),
  };
}

function flushTimers(send) {
  const ops = timerOps;
  timerOps = [];
  if (!send) return;
  let i = 0;
  while (i < ops.length) {
    const register = ops[i][0];
    let j = i;
    while (j < ops.length && ops[j][0] === register) j++;
    const t = packTimers(ops.slice(i, j).map((op) => op.slice(1)));
    if (register) registerMany(t);
    else deleteMany(t);
    i = j;
  }
}

// ---- running a call ------------------------------------------------------

/** An Int32Array over the bytes of s64s. */
function words(ts) {
  if (!(ts instanceof BigInt64Array)) ts = BigInt64Array.from(ts, (t) => BigInt(t));
  return new Int32Array(ts.buffer, ts.byteOffset, ts.length * 2);
}

/**
 * Sets up `keys` from the items' keys: item `i`'s key is
 * `data[start..keyEnds[i]]`, with `start` the previous item's
 * `nextStarts` (0 for the first); without `flags`, every item has one.
 * Returns the key index per item (-1: no key).
 */
function indexKeys(n, data, keyEnds, nextStarts, flags) {
  const idx = new Int32Array(n);
  const index = new Map();
  const strs = [];
  const bytes = [];
  let start = 0;
  for (let i = 0; i < n; i++) {
    const end = keyEnds[i];
    if (flags === null || flags[i] & 1) {
      const str = end - start <= 4096 ? String.fromCharCode.apply(null, data.subarray(start, end)) : keyString(data, start, end);
      let k = index.get(str);
      if (k === undefined) {
        k = strs.length;
        index.set(str, k);
        strs.push(str);
        bytes.push(data.subarray(start, end));
      }
      idx[i] = k;
    } else idx[i] = -1;
    start = nextStarts[i];
  }
  keys = { strs, bytes, packed: null };
  return idx;
}

function run(n, idx, states, call) {
  batchNo++;
  watermark = null;
  if (states.length) {
    if (idx.includes(-1)) fail(noKey(`keyed state '${states[0].name}'`));
    for (const s of states) s._begin();
  }
  let ok = false;
  try {
    call();
    ok = true;
  } finally {
    cur = -1;
    inheritAt = -1;
    if (ok) for (const s of states) s._end();
    else for (const s of states) s._reset();
    batchNo++;
    flushTimers(ok);
  }
  return finishOutput();
}

/**
 * Runs `each(ev, out)` for every event of the packed `batch`, with
 * `states` (any mix of ValueState, ListState, MapState and WindowState)
 * set up for the batch's keys first and their changes written back after
 * (at most one host call per kind of write per state, and one per run of
 * timer registrations). `out.emit(key, value)` emits, with the event's
 * timestamp unless given one. Returns the `emitted` record.
 * @param {{ data: Uint8Array, keyEnds: Uint32Array, valueEnds: Uint32Array, flags: Uint8Array, timestamps: BigInt64Array }} batch
 * @param {Array<Keyed | WindowState<any>>} states
 * @param {(ev: Event, out: Emitter) => void} each
 */
export function processBatch(batch, states, each) {
  const { data, keyEnds, valueEnds, flags } = batch;
  const n = keyEnds.length;
  if (valueEnds.length !== n || flags.length !== n || batch.timestamps.length !== n) {
    fail('the host sent a packed batch whose lists differ in length');
  }
  startOutput();
  const idx = indexKeys(n, data, keyEnds, valueEnds, flags);
  inherit32 = words(batch.timestamps);
  inheritFlags = flags;
  return run(n, idx, states, () => {
    let start = 0;
    for (let i = 0; i < n; i++) {
      cur = idx[i];
      inheritAt = i;
      each(new BatchEvent(batch, i, start), emitter);
      start = valueEnds[i];
    }
  });
}

/**
 * Runs `onTimer(timer, out)` for every fired timer, with the timer's key as
 * the current key (so keyed state and timers are that key's) and `states`
 * set up as in `processBatch`. An event emitted from an event-time timer
 * without a timestamp gets the timer's time.
 * @param {{ keys: { data: Uint8Array, ends: Uint32Array }, times: BigInt64Array, domains: string[], tags: Uint32Array }} fired
 * @param {Array<Keyed | WindowState<any>>} states
 * @param {(timer: Timer, out: Emitter) => void} onTimer
 */
export function onTimers(fired, states, onTimer) {
  const { data, ends } = fired.keys;
  const n = ends.length;
  if (fired.times.length !== n || fired.domains.length !== n || fired.tags.length !== n) {
    fail('the host sent fired timers whose lists differ in length');
  }
  startOutput();
  const idx = indexKeys(n, data, ends, ends, null);
  inherit32 = words(fired.times);
  inheritFlags = Uint8Array.from(fired.domains, (d) => (d === 'event-time' ? 2 : 0));
  return run(n, idx, states, () => {
    for (let i = 0; i < n; i++) {
      cur = idx[i];
      inheritAt = i;
      const timer = { key: keys.bytes[idx[i]], time: fired.times[i], domain: fired.domains[i], tag: fired.tags[i] };
      onTimer(timer, emitter);
    }
  });
}

// ---- windows -------------------------------------------------------------

const max = (a, b) => (a > b ? a : b);
const min = (a, b) => (a < b ? a : b);
const sat = (n) => (n > I64_MAX ? I64_MAX : n < I64_MIN ? I64_MIN : n);
const big = (n) => (typeof n === 'bigint' ? n : BigInt(n));

/**
 * Which windows, and how late an event may still be added.
 * @typedef {{ kind: 'tumbling' | 'sliding' | 'session', size: bigint, slide: bigint, lateness: bigint, allowedLateness(ms: bigint | number): WindowSpec }} WindowSpec
 */

function spec(kind, size, slide) {
  return {
    kind,
    size,
    slide,
    lateness: 0n,
    /**
     * Keeps a window `ms` after the watermark passed its end: a late event
     * within that time is still added and the window fires again; later
     * ones are refused (`add` returns false). Default 0.
     */
    allowedLateness(ms) {
      return { ...this, lateness: max(0n, big(ms)) };
    },
  };
}

/**
 * Windows of `sizeMs` one after another: [0, size), [size, 2 size)…
 * @param {bigint | number} sizeMs
 * @returns {WindowSpec}
 */
export function tumbling(sizeMs) {
  const size = max(1n, big(sizeMs));
  return spec('tumbling', size, size);
}

/**
 * Windows of `sizeMs` starting every `slideMs`.
 * @param {bigint | number} sizeMs
 * @param {bigint | number} slideMs
 * @returns {WindowSpec}
 */
export function sliding(sizeMs, slideMs) {
  const size = max(1n, big(sizeMs));
  return spec('sliding', size, min(max(1n, big(slideMs)), size));
}

/**
 * A window per burst of a key's activity, closed after `gapMs` without an
 * event of the key; an event that bridges two sessions merges them.
 * @param {bigint | number} gapMs
 * @returns {WindowSpec}
 */
export function session(gapMs) {
  const gap = max(1n, big(gapMs));
  return spec('session', gap, gap);
}

/** The windows [start, end] an event at `ts` belongs to, oldest first. */
function assign(s, ts) {
  const floorMod = (a, m) => ((a % m) + m) % m;
  if (s.kind === 'tumbling') {
    const start = ts - floorMod(ts, s.size);
    return [[start, sat(start + s.size)]];
  }
  if (s.kind === 'sliding') {
    const out = [];
    let start = ts - floorMod(ts, s.slide);
    while (start > ts - s.size) {
      out.push([start, sat(start + s.size)]);
      start -= s.slide;
    }
    return out.reverse();
  }
  return [[ts, sat(ts + s.size)]];
}

/**
 * An incremental aggregate: what a window keeps instead of its events.
 * `create()` a new accumulator; `add(acc, ev)` and `merge(acc, other)`
 * return the updated one; `codec` encodes it in the window's state.
 * @template A
 * @typedef {{ create(): A, add(acc: A, ev: Event): A, merge(acc: A, other: A): A, codec: Codec<A> }} Aggregate
 */

/**
 * An aggregate from three functions and the accumulator's codec, e.g. a
 * sum: `aggregate(() => 0n, (s, ev) => s + BigInt(text(ev.value)), (a, b) => a + b, I64)`.
 * @template A
 * @returns {Aggregate<A>}
 */
export function aggregate(create, add, merge, codec) {
  return { create, add, merge, codec };
}

/**
 * Counts events (the Rust SDK's `Count`: the same state bytes).
 * @type {Aggregate<bigint>}
 */
export const COUNT = aggregate(
  () => 0n,
  (n) => n + 1n,
  (a, b) => a + b,
  U64,
);

/** A key's open windows, [[start, end, acc], …]: the Rust SDK's `Vec<(i64, i64, Acc)>`. */
function openWindows(acc) {
  return withDecode({
    encode(v) {
      const parts = [U64.encode(BigInt(v.length))];
      for (const [s, e, a] of v) parts.push(I64.encode(s), I64.encode(e), acc.encode(a));
      return concat(parts);
    },
    read(b, at) {
      const [n, start] = readVarint(b, at, 64);
      at = start;
      const out = [];
      for (let i = 0n; i < n; i++) {
        const [s, a1] = I64.read(b, at);
        const [e, a2] = I64.read(b, a1);
        const [x, a3] = acc.read(b, a2);
        out.push([s, e, x]);
        at = a3;
      }
      return [out, at];
    },
  });
}

/** FNV-1a of the name: the window's timer tags, as the Rust SDK's. */
function nameHash(name) {
  let h = 0x811c9dc5;
  for (const b of utf8.encode(name)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

/**
 * Windows by `spec`, aggregated by `agg`, per key: the key's open windows
 * with their accumulators in the value state `name`, and an event-time
 * timer per window at its last millisecond (`end - 1`). The same state
 * bytes and timer tags as the Rust SDK's `WindowState`, so a windowed job
 * moves between languages across a savepoint. Pass it to `processBatch`
 * and `onTimers` like any state; call `add` in `each` and `fire` in
 * `onTimer`.
 * @template A
 */
export class WindowState {
  /**
   * @param {string} name
   * @param {WindowSpec} spec
   * @param {Aggregate<A>} agg
   */
  constructor(name, spec, agg) {
    this.name = name;
    this.spec = spec;
    this.agg = agg;
    this.open = new ValueState(name, openWindows(agg.codec));
    const base = (nameHash(name) & ~1) >>> 0;
    this.fireTag = base;
    this.cleanupTag = base + 1;
  }

  _begin() {
    this.open._begin();
  }

  _end() {
    this.open._end();
  }

  _reset() {
    this.open._reset();
  }

  schedule([, end]) {
    registerEventTime(end - 1n, this.fireTag);
    if (this.spec.lateness > 0n) registerEventTime(sat(end - 1n + this.spec.lateness), this.cleanupTag);
  }

  unschedule([, end]) {
    deleteEventTime(end - 1n, this.fireTag);
    if (this.spec.lateness > 0n) deleteEventTime(sat(end - 1n + this.spec.lateness), this.cleanupTag);
  }

  /**
   * Adds an event of the current key to each of its windows, by its
   * timestamp. Returns false, adding it nowhere, when it is too late for
   * every window it belongs to (the watermark passed their end plus the
   * allowed lateness): send it to a late output. An event added to a
   * window the watermark has passed (within the lateness) makes that
   * window fire again. Fails for an event without a timestamp.
   * @param {Event} ev
   * @returns {boolean}
   */
  add(ev) {
    const ts = ev.timestamp;
    if (ts === undefined) {
      fail(
        `window state '${this.name}': an event without a timestamp cannot be windowed by event time (give the source \`timestamp\`, see docs/time.md)`,
      );
    }
    const wm = currentWatermark();
    const lateness = this.spec.lateness;
    let assigned = assign(this.spec, ts);
    if (wm !== undefined) assigned = assigned.filter(([, end]) => end - 1n + lateness > wm);
    if (!assigned.length) return false;
    const isSession = this.spec.kind === 'session';
    const agg = this.agg;
    let open = this.open.get() ?? [];
    for (const w of assigned) {
      const o = open.find(([s, e]) => s === w[0] && e === w[1]);
      if (o) o[2] = agg.add(o[2], ev);
      else {
        open.push([w[0], w[1], agg.add(agg.create(), ev)]);
        if (!isSession) this.schedule(w);
      }
      if (wm !== undefined && w[1] - 1n <= wm) registerEventTime(w[1] - 1n, this.fireTag);
    }
    if (isSession) open = this.mergeSessions(open, assigned[0]);
    this.open.set(open);
    return true;
  }

  mergeSessions(open, added) {
    open.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    const same = (a, b) => a[0] === b[0] && a[1] === b[1];
    const before = open.map(([s, e]) => [s, e]);
    const merged = [];
    for (const [s, e, acc] of open) {
      const last = merged[merged.length - 1];
      if (last && s < last[1]) {
        last[1] = max(last[1], e);
        last[2] = this.agg.merge(last[2], acc);
      } else merged.push([s, e, acc]);
    }
    const after = merged.map(([s, e]) => [s, e]);
    for (const w of before) if (!same(w, added) && !after.some((a) => same(a, w))) this.unschedule(w);
    for (const w of after) if (same(w, added) || !before.some((b) => same(b, w))) this.schedule(w);
    return merged;
  }

  /**
   * For a timer of this state (call it in `onTimer` with every timer): the
   * window that closed, `{ start, end }`, and its accumulator, to emit;
   * undefined for a timer that is not this state's or only cleans up.
   * @param {Timer} timer
   * @returns {[{ start: bigint, end: bigint }, A] | undefined}
   */
  fire(timer) {
    const { time, domain, tag } = timer;
    if (domain !== 'event-time' || (tag !== this.fireTag && tag !== this.cleanupTag)) return undefined;
    let open = this.open.get() ?? [];
    let result;
    if (tag === this.fireTag) {
      const i = open.findIndex(([, e]) => e - 1n === time);
      if (i >= 0) {
        const [start, end, acc] = open[i];
        result = [{ start, end }, acc];
        if (this.spec.lateness === 0n) open.splice(i, 1);
      }
    } else {
      open = open.filter(([, e]) => sat(e - 1n + this.spec.lateness) !== time);
    }
    this.open.set(open.length ? open : undefined);
    return result;
  }
}
