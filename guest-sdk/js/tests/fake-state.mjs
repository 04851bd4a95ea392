// The host's keyed state, by kind: value (`tables`: name -> Map(hex key ->
// bytes)), list (`lists`: name -> Map(hex key -> [bytes])) and map
// (`maps`: name -> Map(hex key -> Map(hex map key -> bytes))). A name keeps
// the kind of its first use. Counts calls: `gets`, `puts` (value state) and
// one count per list and map function.
export const tables = new Map();
export const lists = new Map();
export const maps = new Map();
const kinds = new Map();
export const calls = { gets: 0, puts: 0 };
/** Times to live set, by state name. */
export const ttls = new Map();

export function setTtl(name, ttl) {
  if (ttl !== undefined && (typeof ttl.millis !== 'bigint' || !['event-time', 'processing-time'].includes(ttl.domain) || !['on-write', 'on-read-and-write'].includes(ttl.refresh))) {
    throw new TypeError(`a malformed state-ttl: ${JSON.stringify(ttl, (_, v) => (typeof v === 'bigint' ? `${v}n` : v))}`);
  }
  ttls.set(name, ttl);
}

/** Sets every count to zero and drops the list and map ones. */
export function resetCalls() {
  for (const k of Object.keys(calls)) delete calls[k];
  calls.gets = 0;
  calls.puts = 0;
}

export const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (h) => Uint8Array.from(Buffer.from(h, 'hex'));

function use(fn, name, kind) {
  if (fn) calls[fn] = (calls[fn] ?? 0) + 1;
  if (!kinds.has(name)) kinds.set(name, kind);
  if (kinds.get(name) !== kind) throw new Error(`state '${name}' is ${kinds.get(name)} state but was used as ${kind} state`);
}

function bytes(b) {
  if (!(b instanceof Uint8Array)) throw new TypeError(`expected a Uint8Array, got ${b}`);
  return b.slice();
}

function items(p) {
  const out = [];
  let start = 0;
  for (const end of p.ends) {
    out.push(p.data.slice(start, end));
    start = end;
  }
  return out;
}

export function valueGetMany(name, keys) {
  calls.gets++;
  use(null, name, 'value');
  const t = tables.get(name) ?? new Map();
  const vals = items(keys).map((k) => t.get(hex(k)));
  const ends = [];
  const present = [];
  let total = 0;
  for (const v of vals) {
    present.push(v !== undefined);
    total += v ? v.length : 0;
    ends.push(total);
  }
  const data = new Uint8Array(total);
  let at = 0;
  for (const v of vals) {
    if (v) {
      data.set(v, at);
      at += v.length;
    }
  }
  return { data, ends: Uint32Array.from(ends), present };
}

export function valuePutMany(name, keys, values) {
  calls.puts++;
  use(null, name, 'value');
  if (!tables.has(name)) tables.set(name, new Map());
  const t = tables.get(name);
  const vals = items({ data: values.data, ends: values.ends });
  items(keys).forEach((k, i) => {
    if (values.present[i]) t.set(hex(k), vals[i]);
    else t.delete(hex(k));
  });
}

function table(all, name) {
  if (!all.has(name)) all.set(name, new Map());
  return all.get(name);
}

export function listGetMany(name, keys) {
  use('listGetMany', name, 'list');
  const t = lists.get(name) ?? new Map();
  return keys.map((k) => (t.get(hex(bytes(k))) ?? []).map((v) => v.slice()));
}

export function listAppendMany(name, pairs) {
  use('listAppendMany', name, 'list');
  const t = table(lists, name);
  for (const [k, v] of pairs) {
    const h = hex(bytes(k));
    t.set(h, [...(t.get(h) ?? []), bytes(v)]);
  }
}

export function listPutMany(name, pairs) {
  use('listPutMany', name, 'list');
  const t = table(lists, name);
  for (const [k, vs] of pairs) {
    if (vs.length) t.set(hex(bytes(k)), vs.map(bytes));
    else t.delete(hex(bytes(k)));
  }
}

export function mapGetMany(name, pairs) {
  use('mapGetMany', name, 'map');
  const t = maps.get(name) ?? new Map();
  return pairs.map(([k, mk]) => t.get(hex(bytes(k)))?.get(hex(bytes(mk)))?.slice());
}

export function mapPutMany(name, entries) {
  use('mapPutMany', name, 'map');
  const t = table(maps, name);
  for (const e of entries) {
    const k = hex(bytes(e.key));
    const mk = hex(bytes(e.mapKey));
    if (e.value != null) {
      if (!t.has(k)) t.set(k, new Map());
      t.get(k).set(mk, bytes(e.value));
    } else if (t.has(k)) {
      t.get(k).delete(mk);
      if (t.get(k).size === 0) t.delete(k);
    }
  }
}

export function mapEntries(name, key) {
  use('mapEntries', name, 'map');
  const m = maps.get(name)?.get(hex(bytes(key))) ?? new Map();
  // Hex strings compare as the bytes do.
  return [...m.keys()].sort().map((mk) => [unhex(mk), m.get(mk).slice()]);
}
