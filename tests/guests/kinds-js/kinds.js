// List and map keyed state in JavaScript: the twin of tests/guests/kinds
// (Rust), same logic, same state bytes. See that crate for what it emits.

import { ListState, MapState, STR, U64, describe, emitted, processBatch } from 'wrun';

const recentState = new ListState('recent', STR);
const digits = new MapState('digits', STR, U64);
const text = new TextDecoder();

export const handler = {
  describe() {
    return describe({ name: 'kinds', version: 1 });
  },
  open(_ctx) {},
  process(batch) {
    return processBatch(batch, [recentState, digits], (ev, out) => {
      const value = text.decode(ev.value);
      recentState.add(value);
      let recent = recentState.get();
      if (recent.length > 3) {
        recent = recent.slice(-3);
        recentState.update(recent);
      }
      const digit = 'd' + (value.length ? value[value.length - 1] : '-');
      digits.insert(digit, (digits.get(digit) ?? 0n) + 1n);
      const entries = digits.entries().map(([k, v]) => `${k}=${v}`).join('|');
      out.emit(ev.key, `${recent.join(',')} ${entries}`);
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
