// The wordcount counter in JavaScript: counts each word (the event key) in
// keyed value state `count` (a u64) and emits the word's running count as
// decimal text.
//
// State format `wordcount/1`, the same bytes as the Rust counter
// (examples/wordcount/counter): a job can be stopped with a savepoint in
// one language and resumed in another.

import { ValueState, U64, checkFormat, event, processBatch } from 'wrun';

const FORMAT = { name: 'wordcount', version: 1 };
const count = new ValueState('count', U64);

export const handler = {
  declaredFormat() {
    return FORMAT;
  },
  open(ctx) {
    checkFormat(ctx, FORMAT);
  },
  process(batch) {
    return processBatch(batch, [count], (ev, emit) => {
      const n = (count.get() ?? 0n) + 1n;
      count.set(n);
      emit(event(ev.key, String(n), ev.timestamp));
    });
  },
  close() {
    return [];
  },
  snapshot() {
    return undefined;
  },
  restore(_snapshot) {},
};
