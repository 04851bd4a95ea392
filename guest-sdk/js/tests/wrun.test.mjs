// Tests of wrun.js under Node, with the host's interfaces faked (see
// hooks.mjs): the codec against the vectors of docs/state-format.md, and
// the host calls each kind of state (value, list, map) makes per batch.
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
  processBatch,
  event,
  checkFormat,
} from '../wrun.js';
import { tables, lists, maps, calls, resetCalls } from './fake-state.mjs';

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
  const each = (ev, emit) => {
    const n = (count.get() ?? 0n) + 1n;
    count.set(n);
    emit(event(ev.key, String(n), ev.timestamp));
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
  assert.throws(() => processBatch([k], [bad], () => {}), (e) => e.message.includes('cannot decode state value'));
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
  const out = processBatch(batch, [total, log, per], (e, emit) => {
    const word = dec.decode(e.value);
    total.set((total.get() ?? 0) + 0.5);
    log.add(word);
    per.insert(word, (per.get(word) ?? 0n) + 1n);
    emit(event(e.key, ''));
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
