// The host's value state: name -> Map(hex key -> bytes); counts calls.
export const tables = new Map();
export const calls = { gets: 0, puts: 0 };

const hex = (b) => Buffer.from(b).toString('hex');

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
  if (!tables.has(name)) tables.set(name, new Map());
  const t = tables.get(name);
  const vals = items({ data: values.data, ends: values.ends });
  items(keys).forEach((k, i) => {
    if (values.present[i]) t.set(hex(k), vals[i]);
    else t.delete(hex(k));
  });
}
