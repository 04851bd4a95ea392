// The wordcount counter in JavaScript: counts each word (the event key) in
// keyed value state `count` (a u64, read as a Number by the codec `U53`:
// no BigInt arithmetic) and emits the word's running count as decimal
// text.
//
// State format `wordcount/1`, the same bytes as the Rust counter
// (examples/wordcount/counter): a job can be stopped with a savepoint in
// one language and resumed in another.

import { ValueState, U53, checkFormat, describe, emitted, processBatch } from 'wrun';

const FORMAT = { name: 'wordcount', version: 1 };
const count = new ValueState('count', U53);

export const handler = {
  describe() {
    return describe(FORMAT);
  },
  open(ctx) {
    checkFormat(ctx, FORMAT);
  },
  process(batch) {
    return processBatch(batch, [count], (ev, out) => {
      const n = (count.get() ?? 0) + 1;
      count.set(n);
      out.emit(ev.key, String(n)); // with the event's timestamp
    });
  },
  onTimers(_fired) {
    return emitted();
  },
  close() {
    return emitted();
  },
  snapshot() {
    return undefined;
  },
  restore(_snapshot) {},
};
