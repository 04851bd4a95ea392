// The host's timers: `pending` maps "hex key|time|domain|tag" to
// [key, time, domain, tag]; `clock.watermark` and `clock.now` are what the
// helper reads; `timerCalls` counts the calls.
import { hex } from './fake-state.mjs';

export const pending = new Map();
export const clock = { watermark: undefined, now: 0n };
export const timerCalls = {};

const id = (k, t, d, g) => `${hex(k)}|${t}|${d}|${g}`;
const count = (fn) => (timerCalls[fn] = (timerCalls[fn] ?? 0) + 1);

function each(t) {
  if (!(t.times instanceof BigInt64Array) || !(t.tags instanceof Uint32Array) || !(t.keys.ends instanceof Uint32Array)) {
    throw new TypeError('timers are packed in typed arrays');
  }
  const out = [];
  let start = 0;
  t.keys.ends.forEach((end, i) => {
    if (t.domains[i] !== 'event-time' && t.domains[i] !== 'processing-time') throw new TypeError(`domain ${t.domains[i]}`);
    out.push([t.keys.data.slice(start, end), t.times[i], t.domains[i], t.tags[i]]);
    start = end;
  });
  return out;
}

export function registerMany(t) {
  count('registerMany');
  for (const x of each(t)) pending.set(id(...x), x);
}

export function deleteMany(t) {
  count('deleteMany');
  for (const x of each(t)) pending.delete(id(...x));
}

export function currentWatermark() {
  count('currentWatermark');
  return clock.watermark;
}

export function processingTime() {
  return clock.now;
}

/** Forgets every timer and count. */
export function resetTimers() {
  pending.clear();
  clock.watermark = undefined;
  for (const k of Object.keys(timerCalls)) delete timerCalls[k];
}

/**
 * Removes and returns, as a `timers` record in order of time, the
 * event-time timers at or before `watermark` (which it sets).
 */
export function due(watermark) {
  clock.watermark = watermark;
  const fired = [...pending.entries()]
    .filter(([, t]) => t[2] === 'event-time' && t[1] <= watermark)
    .sort(([a, x], [b, y]) => (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : a < b ? -1 : a > b ? 1 : 0));
  for (const [k] of fired) pending.delete(k);
  const ts = fired.map(([, t]) => t);
  const ends = [];
  let total = 0;
  for (const t of ts) ends.push((total += t[0].length));
  const data = new Uint8Array(total);
  let at = 0;
  for (const t of ts) {
    data.set(t[0], at);
    at += t[0].length;
  }
  return {
    keys: { data, ends: Uint32Array.from(ends) },
    times: BigInt64Array.from(ts.map((t) => t[1])),
    domains: ts.map((t) => t[2]),
    tags: Uint32Array.from(ts.map((t) => t[3])),
  };
}
