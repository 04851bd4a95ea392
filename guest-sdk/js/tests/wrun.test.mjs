// Tests of wrun.js under Node, with the host's interfaces faked (see
// hooks.mjs): the codec against the vectors of docs/state-format.md, the
// host calls each kind of state (value, list, map) makes per batch,
// packed events in and out, named outputs, timers and windows (the Rust
// SDK's window tests, with the same results).
//
// Run: node --import ./guest-sdk/js/tests/register.mjs --test guest-sdk/js/tests/
// (cargo test runs it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  U64,
  I64,
  BOOL,
  F64,
  STR,
  BYTES,
  ValueState,
  ListState,
  MapState,
  U53,
  processBatch as processPacked,
  onTimers,
  event,
  checkFormat,
  describe,
  packEvents,
  unpackEvents,
  packTimers,
  registerEventTime,
  registerProcessingTime,
  deleteProcessingTime,
  currentWatermark,
  processingTime,
  WindowState,
  tumbling,
  sliding,
  session,
  aggregate,
  tuple,
  COUNT,
} from '../wrun.js';
import { tables, lists, maps, calls, resetCalls, ttls } from './fake-state.mjs';
import { pending, clock, timerCalls, resetTimers, due } from './fake-timers.mjs';

/** An `emitted` record, copied (the helper reuses its buffers). */
const copied = (em) => ({ events: unpackEvents(em.events), outputs: [...em.outputs] });

/** `processBatch` of a list of events; the events it emitted. */
const processBatch = (batch, states, each) => copied(processPacked(packEvents(batch), states, each)).events;

const hex = (b) => Buffer.from(b).toString('hex');
const utf8 = new TextEncoder();

test('codec vectors of state-format.md', () => {
  assert.equal(hex(U64.encode(0n)), '00');
  assert.equal(hex(U64.encode(127n)), '7f');
  assert.equal(hex(U64.encode(128n)), '8001');
  assert.equal(hex(U64.encode(300n)), 'ac02');
  assert.equal(hex(U64.encode(2n ** 64n - 1n)), 'ffffffffffffffffff01');
  assert.equal(hex(I64.encode(0n)), '00');
  assert.equal(hex(I64.encode(-1n)), '01');
  assert.equal(hex(I64.encode(1n)), '02');
  assert.equal(hex(I64.encode(-(2n ** 63n))), 'ffffffffffffffffff01');
  assert.equal(hex(STR.encode('hi')), '026869');
  assert.equal(hex(BYTES.encode(Uint8Array.from([0, 255]))), '0200ff');
  assert.equal(hex(BOOL.encode(false)), '00');
  assert.equal(hex(BOOL.encode(true)), '01');
  assert.equal(hex(F64.encode(1.5)), '000000000000f83f');
  assert.equal(hex(F64.encode(-2)), '00000000000000c0');
});

test('codec round trips and refusals', () => {
  for (const n of [0n, 1n, 300n, 2n ** 32n, 2n ** 64n - 1n]) assert.equal(U64.decode(U64.encode(n)), n);
  for (const n of [0n, -1n, 1n, -(2n ** 63n), 2n ** 63n - 1n]) assert.equal(I64.decode(I64.encode(n)), n);
  for (const s of ['', 'hi', '日本']) assert.equal(STR.decode(STR.encode(s)), s);
  for (const bad of [[], [0x80], [0, 0], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]]) {
    assert.throws(() => U64.decode(Uint8Array.from(bad)));
  }
  assert.throws(() => U64.encode(-1n));
  for (const b of [false, true]) assert.equal(BOOL.decode(BOOL.encode(b)), b);
  for (const f of [0, -0, 1.5, -1e308, 5e-324, Infinity, -Infinity, NaN]) assert.ok(Object.is(F64.decode(F64.encode(f)), f));
  // A subarray at an odd offset decodes too.
  assert.equal(F64.decode(Uint8Array.from([9, ...F64.encode(1.5)]).subarray(1)), 1.5);
  for (const bad of [[], [2], [255], [0, 0], [1, 0]]) assert.throws(() => BOOL.decode(Uint8Array.from(bad)));
  for (const bad of [[], new Array(7).fill(0), new Array(9).fill(0)]) assert.throws(() => F64.decode(Uint8Array.from(bad)));
  assert.throws(() => BYTES.decode(Uint8Array.from([5, 97, 98])));
  assert.throws(() => BOOL.encode(1));
  assert.throws(() => F64.encode('1.5'));
});

test('one read and one write per batch', () => {
  const count = new ValueState('count', U64);
  const each = (ev, out) => {
    const n = (count.get() ?? 0n) + 1n;
    count.set(n);
    out.emit(ev.key, String(n));
  };
  resetCalls();
  const batch = ['a', 'b', 'a', 'a'].map((k) => ({ key: utf8.encode(k), value: new Uint8Array(), timestamp: undefined }));
  const out = processBatch(batch, [count], each);
  assert.deepEqual(out.map((e) => new TextDecoder().decode(e.value)), ['1', '1', '2', '3']);
  assert.deepEqual(calls, { gets: 1, puts: 1 });
  const again = processBatch([{ key: utf8.encode('a'), value: new Uint8Array(), timestamp: 7n }], [count], each);
  assert.equal(new TextDecoder().decode(again[0].value), '4');
  assert.equal(again[0].timestamp, 7n);
  assert.equal(hex(tables.get('count').get(hex(utf8.encode('a')))), '04');
});

test('withTtl tells the host', () => {
  const v = new ValueState('seen', U64).withTtl(60000);
  assert.equal(v.name, 'seen');
  assert.deepEqual(ttls.get('seen'), { millis: 60000n, domain: 'processing-time', refresh: 'on-write' });
  new MapState('m', STR, U64).withTtl(5, { domain: 'event-time', refreshOnRead: true });
  assert.deepEqual(ttls.get('m'), { millis: 5n, domain: 'event-time', refresh: 'on-read-and-write' });
  assert.throws(() => new ListState('l', STR).withTtl(0), { message: "state 'l': a time to live must be at least 1 ms, not 0" });
});

test('clear, a keyless event, corrupt state, formats', () => {
  const s = new ValueState('s', STR);
  const k = { key: utf8.encode('k'), value: new Uint8Array(), timestamp: undefined };
  processBatch([k], [s], () => s.set('x'));
  assert.ok(tables.get('s').has(hex(utf8.encode('k'))));
  processBatch([k], [s], () => s.clear());
  assert.ok(!tables.get('s').has(hex(utf8.encode('k'))));
  assert.throws(() => processBatch([{ key: undefined, value: new Uint8Array() }], [s], () => {}), (e) =>
    e.message.includes('without a current key'),
  );
  tables.set('bad', new Map([[hex(utf8.encode('k')), Uint8Array.from([0x80])]]));
  const bad = new ValueState('bad', U64);
  assert.throws(() => processBatch([k], [bad], () => bad.get()), (e) => e.message.includes('cannot decode state value'));
  checkFormat({ restoredFormat: undefined }, { name: 'wordcount', version: 1 });
  assert.throws(
    () => checkFormat({ restoredFormat: { name: 'wordcount', version: 2 } }, { name: 'wordcount', version: 1 }),
    (e) => e.message.includes('wordcount/2'),
  );
});

const ev = (k, v = '') => ({ key: utf8.encode(k), value: utf8.encode(v), timestamp: undefined });
const keys = (...ks) => ks.map((k) => ev(k));
const h = (k) => hex(utf8.encode(k));
const dec = new TextDecoder();

test('list: one listGetMany per batch however many gets', () => {
  resetCalls();
  lists.set('l1', new Map([[h('a'), [STR.encode('x')]]]));
  const l = new ListState('l1', STR);
  const seen = [];
  processBatch([ev('a', '1'), ev('b', '2'), ev('a', '3')], [l], (e) => {
    seen.push(l.get());
    l.add(dec.decode(e.value));
    seen.push(l.get());
  });
  assert.deepEqual(seen, [['x'], ['x', '1'], [], ['2'], ['x', '1'], ['x', '1', '3']]);
  assert.deepEqual(calls, { gets: 0, puts: 0, listGetMany: 1, listPutMany: 1 });
  assert.deepEqual(lists.get('l1').get(h('a')).map(hex), ['x', '1', '3'].map((v) => hex(STR.encode(v))));
  assert.deepEqual(lists.get('l1').get(h('b')).map(hex), [hex(STR.encode('2'))]);
});

test('list: appends without a get are one listAppendMany', () => {
  resetCalls();
  lists.set('l2', new Map([[h('a'), [U64.encode(1n)]]]));
  const l = new ListState('l2', U64);
  processBatch(keys('a', 'b', 'a'), [l], () => l.add(7n));
  assert.deepEqual(calls, { gets: 0, puts: 0, listAppendMany: 1 });
  assert.deepEqual(lists.get('l2').get(h('a')).map(hex), ['01', '07', '07']);
  assert.deepEqual(lists.get('l2').get(h('b')).map(hex), ['07']);
});

test('list: update and clear are one listPutMany', () => {
  resetCalls();
  lists.set('l3', new Map([[h('a'), [U64.encode(1n)]], [h('b'), [U64.encode(2n)]]]));
  const l = new ListState('l3', U64);
  processBatch(keys('a', 'b'), [l], (e) => {
    if (dec.decode(e.key) === 'a') {
      l.update([5n, 6n]);
      l.add(7n);
    } else {
      l.add(9n); // dropped by the clear that follows
      l.clear();
    }
  });
  assert.deepEqual(calls, { gets: 0, puts: 0, listPutMany: 1 });
  assert.deepEqual([...lists.get('l3').keys()], [h('a')]);
  assert.deepEqual(lists.get('l3').get(h('a')).map(hex), ['05', '06', '07']);
});

test('list: a get after adds merges them, for every key of the batch', () => {
  resetCalls();
  lists.set('l4', new Map([[h('a'), [STR.encode('x')]], [h('b'), [STR.encode('y')]]]));
  const l = new ListState('l4', STR);
  const got = [];
  processBatch(keys('a', 'b'), [l], (e) => {
    l.add('new');
    if (dec.decode(e.key) === 'b') got.push(l.get());
  });
  assert.deepEqual(got, [['y', 'new']]);
  // The get read both keys: both lists are written whole, nothing appended.
  assert.deepEqual(calls, { gets: 0, puts: 0, listGetMany: 1, listPutMany: 1 });
  assert.deepEqual(lists.get('l4').get(h('a')).map((b) => STR.decode(b)), ['x', 'new']);
  assert.deepEqual(lists.get('l4').get(h('b')).map((b) => STR.decode(b)), ['y', 'new']);
  resetCalls();
  processBatch(keys('a'), [l], () => got.push(l.get()));
  assert.deepEqual(got.at(-1), ['x', 'new']);
  assert.deepEqual(calls, { gets: 0, puts: 0, listGetMany: 1 });
  lists.set('l5', new Map([[h('k'), [U64.encode(1n), Uint8Array.of(0x80)]]]));
  const bad = new ListState('l5', U64);
  assert.throws(
    () => processBatch(keys('k'), [bad], () => bad.get()),
    (e) => e.message.includes("list state 'l5': cannot decode state value"),
  );
});

test('map: get is cached for the batch', () => {
  resetCalls();
  maps.set('m1', new Map([[h('a'), new Map([[hex(STR.encode('x')), U64.encode(3n)]])]]));
  const m = new MapState('m1', STR, U64);
  const got = [];
  const each = () => got.push([m.get('x'), m.get('y'), m.contains('x'), m.contains('y')]);
  processBatch(keys('a', 'a', 'a'), [m], each);
  assert.deepEqual(got, new Array(3).fill([3n, undefined, true, false]));
  assert.deepEqual(calls, { gets: 0, puts: 0, mapGetMany: 2 }); // "x" and "y", once each
  resetCalls();
  processBatch(keys('a'), [m], each);
  assert.deepEqual(calls, { gets: 0, puts: 0, mapGetMany: 2 }); // nothing kept between batches
});

test('map: insert and remove are one mapPutMany', () => {
  resetCalls();
  maps.set('m2', new Map([[h('a'), new Map([[hex(STR.encode('gone')), U64.encode(1n)]])]]));
  const m = new MapState('m2', STR, U64);
  const got = [];
  processBatch(keys('a', 'bb'), [m], (e) => {
    m.insert('n', BigInt(e.key.length));
    m.remove('gone');
    got.push([m.get('n'), m.get('gone')]);
  });
  assert.deepEqual(got, [
    [1n, undefined],
    [2n, undefined],
  ]);
  assert.deepEqual(calls, { gets: 0, puts: 0, mapPutMany: 1 });
  const t = maps.get('m2');
  assert.deepEqual([...t.keys()].sort(), [h('a'), h('bb')]);
  assert.deepEqual([...t.get(h('a'))].map(([k, v]) => [k, hex(v)]), [[hex(STR.encode('n')), '01']]);
  assert.deepEqual([...t.get(h('bb'))].map(([k, v]) => [k, hex(v)]), [[hex(STR.encode('n')), '02']]);
  // Removing the last entry removes the key's map.
  processBatch(keys('a'), [m], () => m.remove('n'));
  assert.ok(!t.has(h('a')));
});

test('map: entries merge pending changes, in encoded key order', () => {
  resetCalls();
  const enc = (s) => hex(STR.encode(s));
  maps.set(
    'm3',
    new Map([
      [
        h('k'),
        new Map([
          [enc('bb'), U64.encode(1n)],
          [enc('a'), U64.encode(2n)],
          [enc('ccc'), U64.encode(3n)],
        ]),
      ],
    ]),
  );
  const m = new MapState('m3', STR, U64);
  const got = [];
  processBatch(keys('k'), [m], () => {
    m.insert('z', 9n);
    m.remove('ccc');
    m.insert('bb', 5n);
    got.push(m.entries());
  });
  // Strings sort by length first: the length prefix is the first byte.
  const want = [
    ['a', 2n],
    ['z', 9n],
    ['bb', 5n],
  ];
  assert.deepEqual(got, [want]);
  assert.deepEqual(calls, { gets: 0, puts: 0, mapEntries: 1, mapPutMany: 1 });
  processBatch(keys('k'), [m], () => got.push(m.entries()));
  assert.deepEqual(got.at(-1), want);

  const n = new MapState('m4', U64, BOOL);
  processBatch(keys('k'), [n], () => [200n, 300n, 2n].forEach((i) => n.insert(i, i % 2n === 0n)));
  processBatch(keys('k'), [n], () => got.push(n.entries()));
  // 2 = 02, 300 = ac 02, 200 = c8 01.
  assert.deepEqual(got.at(-1), [
    [2n, true],
    [300n, true],
    [200n, true],
  ]);
  maps.set('m5', new Map([[h('k'), new Map([[enc('x'), Uint8Array.of(2)]])]]));
  const bad = new MapState('m5', STR, BOOL);
  assert.throws(
    () => processBatch(keys('k'), [bad], () => bad.get('x')),
    (e) => e.message.includes("map state 'm5': cannot decode state value"),
  );
});

test('value, list and map in one processBatch call', () => {
  resetCalls();
  const total = new ValueState('mix-total', F64);
  const log = new ListState('mix-log', STR);
  const per = new MapState('mix-per', STR, U64);
  const batch = [ev('a', 'x'), ev('b', 'x'), ev('a', 'y'), ev('a', 'x')];
  const out = processBatch(batch, [total, log, per], (e, o) => {
    const word = dec.decode(e.value);
    total.set((total.get() ?? 0) + 0.5);
    log.add(word);
    per.insert(word, (per.get(word) ?? 0n) + 1n);
    o.emit(e.key, '');
  });
  assert.equal(out.length, 4);
  assert.deepEqual(calls, { gets: 1, puts: 1, listAppendMany: 1, mapGetMany: 3, mapPutMany: 1 });
  assert.equal(hex(tables.get('mix-total').get(h('a'))), hex(F64.encode(1.5)));
  assert.deepEqual(lists.get('mix-log').get(h('a')).map((b) => STR.decode(b)), ['x', 'y', 'x']);
  const pa = maps.get('mix-per').get(h('a'));
  assert.deepEqual([...pa.keys()].sort(), [hex(STR.encode('x')), hex(STR.encode('y'))]);
  assert.equal(hex(pa.get(hex(STR.encode('x')))), '02');
});

test('list and map misuse fails', () => {
  resetCalls();
  const l = new ListState('mis-l', U64);
  const m = new MapState('mis-m', STR, U64);
  assert.throws(
    () => processBatch([{ key: undefined, value: new Uint8Array() }], [l, m], () => {}),
    (e) => e.message.includes('without a current key'),
  );
  assert.throws(
    () => processBatch(keys('k'), [l], () => m.get('x')),
    (e) => e.message.includes("'mis-m' is used but was not passed to processBatch()"),
  );
  assert.throws(
    () => l.add(1n),
    (e) => e.message.includes('without a current key'),
  );
  // A failed batch writes nothing.
  assert.throws(() =>
    processBatch(keys('k'), [l], () => {
      l.add(1n);
      throw new Error('boom');
    }),
  );
  assert.ok(!lists.has('mis-l'));
  assert.deepEqual(calls, { gets: 0, puts: 0 });
});

test('U53: the bytes of U64 as a Number', () => {
  for (const n of [0, 1, 127, 128, 300, 16383, 16384, 2 ** 32, 2 ** 53 - 1]) {
    assert.equal(hex(U53.encode(n)), hex(U64.encode(BigInt(n))));
    assert.equal(U53.decode(U64.encode(BigInt(n))), n);
  }
  assert.throws(() => U53.decode(U64.encode(2n ** 53n)));
  assert.throws(() => U53.encode(-1));
  assert.throws(() => U53.encode(1.5));
});

test('packed events round trip; emitted events inherit timestamps', () => {
  const big = new Uint8Array(10000).fill(7);
  const evs = [
    event(utf8.encode('k'), 'v', -3n),
    event(undefined, new Uint8Array(0)),
    event(new Uint8Array(0), 'x', 5n),
    event(utf8.encode('big'), big, 2n ** 63n - 1n),
  ];
  const packed = packEvents(evs);
  assert.deepEqual([...packed.flags], [3, 0, 3, 3]);
  assert.deepEqual([...packed.keyEnds], [1, 2, 2, 6]);
  assert.deepEqual([...packed.timestamps], [-3n, 0n, 5n, 2n ** 63n - 1n]);
  const back = unpackEvents(packed);
  assert.deepEqual(back[0], { key: utf8.encode('k'), value: utf8.encode('v'), timestamp: -3n });
  assert.equal(back[1].key, undefined);
  assert.equal(back[1].timestamp, undefined);
  assert.deepEqual(back[3].value, big);
  const out = processBatch(evs, [], (e, o) => {
    o.emit(e.key, e.value); // the input's timestamp
    o.emit(undefined, 'text', 99n);
  });
  assert.deepEqual(
    out.filter((_, i) => i % 2 === 0),
    back,
  );
  assert.deepEqual(
    out.filter((_, i) => i % 2 === 1),
    new Array(4).fill({ key: undefined, value: utf8.encode('text'), timestamp: 99n }),
  );
  // Non-ASCII and long strings.
  const [e] = processBatch([event(utf8.encode('k'), '')], [], (_, o) => o.emit(undefined, 'é'.repeat(40)));
  assert.equal(dec.decode(e.value), 'é'.repeat(40));
  assert.throws(
    () => processPacked({ ...packEvents([event(undefined, 'a')]), timestamps: new BigInt64Array(0) }, [], () => {}),
    (e) => e.message.includes('differ in length'),
  );
});

test('named outputs', () => {
  const d = describe({ name: 'f', version: 1 }, ['late', 'odd']);
  assert.deepEqual(d.outputs, ['late', 'odd']);
  const each = (e, o) => (dec.decode(e.value) === '1' ? o.emitTo('odd', e.key, e.value) : o.emit(e.key, e.value));
  const em = copied(processPacked(packEvents(['0', '1', '2'].map((v, i) => event(utf8.encode('a'), v, BigInt(i)))), [], each));
  assert.deepEqual(em.outputs, [0, 2, 0]);
  assert.deepEqual(
    em.events.map((e) => e.timestamp),
    [0n, 1n, 2n],
  );
  // All to the main output: no per-event outputs at all.
  assert.deepEqual(copied(processPacked(packEvents([event(utf8.encode('a'), '0')]), [], each)).outputs, []);
  assert.throws(
    () => processBatch([event(utf8.encode('a'), '')], [], (_, o) => o.emitTo('nope', undefined, '')),
    (e) => e.message.includes("'nope', which the operator does not declare in describe() (it declares [late, odd])"),
  );
  describe({ name: 'f', version: 1 });
});

test('timers: register, delete, fire with the key current', () => {
  resetTimers();
  const seen = new ValueState('timers-seen', U53);
  clock.now = 5000n;
  processBatch([event(utf8.encode('a'), '10', 1n), event(utf8.encode('b'), '20', 2n)], [seen], (e, o) => {
    const t = BigInt(dec.decode(e.value));
    registerEventTime(t, 7);
    registerEventTime(t, 7); // the same timer: one
    registerProcessingTime(processingTime() + 1000n, 1);
    if (dec.decode(e.key) === 'b') deleteProcessingTime(processingTime() + 1000n, 1);
    seen.set((seen.get() ?? 0) + 1);
  });
  // Runs of registrations and deletions, each one host call, in order.
  assert.deepEqual(timerCalls, { registerMany: 1, deleteMany: 1 });
  assert.deepEqual([...pending.values()].map(([k, t, d, g]) => `${dec.decode(k)} ${t} ${d} ${g}`).sort(), [
    'a 10 event-time 7',
    'a 6000 processing-time 1',
    'b 20 event-time 7',
  ]);
  const onTimer = (t, o) => {
    // The timer's key is the current key: its state, its timers.
    o.emit(t.key, `${t.time},${t.tag},${seen.get()}`);
    if (dec.decode(t.key) === 'a') registerEventTime(t.time + 100n, 8);
  };
  const fired = copied(onTimers(due(15n), [seen], onTimer)).events;
  assert.deepEqual(fired, [{ key: utf8.encode('a'), value: utf8.encode('10,7,1'), timestamp: 10n }]);
  assert.ok([...pending.values()].some(([, t, , g]) => t === 110n && g === 8));
  // A processing-time timer gives no timestamp.
  const p = copied(onTimers(packTimers([[utf8.encode('a'), 6000n, 'processing-time', 1]]), [seen], onTimer)).events;
  assert.equal(p[0].timestamp, undefined);
});

test('timers: the watermark is read once per call; misuse fails; a failed call registers nothing', () => {
  resetTimers();
  clock.watermark = 42n;
  const got = [];
  processBatch([event(utf8.encode('a'), ''), event(utf8.encode('b'), '')], [], () => got.push(currentWatermark()));
  assert.deepEqual(got, [42n, 42n]);
  assert.deepEqual(timerCalls, { currentWatermark: 1 });
  assert.throws(
    () => processBatch([event(undefined, '')], [], () => registerEventTime(1)),
    (e) => e.message.includes('timers used without a current key'),
  );
  assert.throws(() =>
    processBatch([event(utf8.encode('a'), '')], [], () => {
      registerEventTime(1);
      throw new Error('boom');
    }),
  );
  assert.equal(pending.size, 0);
});

/** The Rust SDK's window tests (guest-sdk/src/window.rs), same results. */
function runWindows(name, spec, steps) {
  resetTimers();
  const win = new WindowState(name, spec, COUNT);
  describe({ name: 'w', version: 1 }, ['late']);
  const out = [];
  let late = 0;
  for (const [events, wm] of steps) {
    const em = copied(
      processPacked(
        packEvents(events.map(([k, t]) => event(utf8.encode(k), '', BigInt(t)))),
        [win],
        (e, o) => win.add(e) || o.emitTo('late', e.key, e.value),
      ),
    );
    late += em.outputs.filter((o) => o === 1).length;
    const fired = copied(
      onTimers(due(BigInt(wm)), [win], (t, o) => {
        const r = win.fire(t);
        if (r) o.emit(t.key, `${r[0].start},${r[0].end},${r[1]}`);
      }),
    ).events;
    for (const e of fired) {
      assert.notEqual(e.timestamp, undefined);
      out.push(`${dec.decode(e.key)}:${dec.decode(e.value)}`);
    }
  }
  describe({ name: 'w', version: 1 });
  return [out, late];
}

test('windows: tumbling windows fire once when the watermark passes them', () => {
  const [out, late] = runWindows('tumbling', tumbling(10), [
    [[['a', 1], ['a', 9], ['b', 12]], 8],
    [[['a', 3]], 20],
    [[['a', 4]], 30],
  ]);
  assert.deepEqual(out, ['a:0,10,3', 'b:10,20,1']);
  assert.equal(late, 1);
  assert.equal(pending.size, 0);
});

test('windows: sliding windows count an event in each of its windows', () => {
  const [out] = runWindows('sliding', sliding(10, 5), [[[['a', 7], ['a', 12]], 100]]);
  assert.deepEqual(out, ['a:0,10,1', 'a:5,15,2', 'a:10,20,1']);
});

test('windows: sessions merge when an event bridges them', () => {
  const [out] = runWindows('session', session(5), [
    [[['a', 0], ['a', 8]], 2],
    [[['a', 4], ['b', 1]], 100],
  ]);
  assert.deepEqual(out, ['b:1,6,1', 'a:0,13,3']);
  assert.equal(pending.size, 0);
});

test('windows: allowed lateness fires again, then refuses', () => {
  const [out, late] = runWindows('lateness', tumbling(10).allowedLateness(5), [
    [[['a', 1]], 9],
    [[['a', 2]], 14],
    [[['a', 3]], 30],
  ]);
  assert.deepEqual(out, ['a:0,10,1', 'a:0,10,2']);
  assert.equal(late, 1);
  assert.equal(pending.size, 0);
});

test("windows: the Rust SDK's state bytes and timer tags; an aggregate of your own", () => {
  resetTimers();
  const win = new WindowState('a', tumbling(10), COUNT);
  // FNV-1a of the name; the fire tag even, the cleanup tag odd.
  assert.deepEqual([win.fireTag, win.cleanupTag], [0xe40c292c, 0xe40c292d]);
  const k = utf8.encode('k');
  processBatch([event(k, '', 1n), event(k, '', 2n)], [win], (e) => win.add(e));
  // postcard Vec<(i64, i64, u64)>: length, zigzag start, zigzag end, count.
  assert.equal(hex(tables.get('a').get(h('k'))), '01001402');
  assert.deepEqual([...pending.values()].map(([, t, d, g]) => [t, d, g]), [[9n, 'event-time', 0xe40c292c]]);
  assert.throws(
    () => processBatch([event(k, '')], [win], (e) => win.add(e)),
    (e) => e.message.includes('without a timestamp'),
  );
  resetTimers();
  const sum = new WindowState(
    'sum',
    tumbling(10),
    aggregate(
      () => [0n, 0n],
      ([s, n], e) => [s + BigInt(dec.decode(e.value)), n + 1n],
      ([s, n], [t, m]) => [s + t, n + m],
      tuple(I64, U64),
    ),
  );
  processBatch([event(k, '5', 1n), event(k, '-2', 3n)], [sum], (e) => sum.add(e));
  const got = [];
  onTimers(due(100n), [sum], (t) => got.push(sum.fire(t)));
  assert.deepEqual(got, [[{ start: 0n, end: 10n }, [3n, 2n]]]);
});
