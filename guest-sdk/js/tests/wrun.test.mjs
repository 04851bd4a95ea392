// Tests of wrun.js under Node, with the host's interfaces faked (see
// hooks.mjs): the codec against the vectors of docs/state-format.md, and
// one host read and one write per batch.
//
// Run: node --import ./guest-sdk/js/tests/register.mjs --test guest-sdk/js/tests/
// (cargo test runs it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { U64, I64, STR, BYTES, ValueState, processBatch, event, checkFormat } from '../wrun.js';
import { tables, calls } from './fake-state.mjs';

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
});

test('codec round trips and refusals', () => {
  for (const n of [0n, 1n, 300n, 2n ** 32n, 2n ** 64n - 1n]) assert.equal(U64.decode(U64.encode(n)), n);
  for (const n of [0n, -1n, 1n, -(2n ** 63n), 2n ** 63n - 1n]) assert.equal(I64.decode(I64.encode(n)), n);
  for (const s of ['', 'hi', '日本']) assert.equal(STR.decode(STR.encode(s)), s);
  for (const bad of [[], [0x80], [0, 0], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]]) {
    assert.throws(() => U64.decode(Uint8Array.from(bad)));
  }
  assert.throws(() => U64.encode(-1n));
});

test('one read and one write per batch', () => {
  const count = new ValueState('count', U64);
  const each = (ev, emit) => {
    const n = (count.get() ?? 0n) + 1n;
    count.set(n);
    emit(event(ev.key, String(n), ev.timestamp));
  };
  calls.gets = calls.puts = 0;
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
