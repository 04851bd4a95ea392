"""List and map keyed state in Python: the twin of tests/guests/kinds
(Rust), same logic, same state bytes. See that crate for what it emits."""

import wrun_guest as w
from wit_world import exports
from wit_world.imports.types import Emitted, Events, StateFormat

RECENT = w.ListState("recent", w.STR)
DIGITS = w.MapState("digits", w.STR, w.U64)


def each(event: w.Event, out: w.Emitter) -> None:
    value = event.value.decode("utf-8", "replace")
    RECENT.add(value)
    recent = RECENT.get()
    if len(recent) > 3:
        recent = recent[-3:]
        RECENT.update(recent)
    digit = "d" + (value[-1] if value else "-")
    DIGITS.insert(digit, (DIGITS.get(digit) or 0) + 1)
    entries = "|".join(f"{k}={v}" for k, v in DIGITS.entries())
    out.emit(event.key, f"{','.join(recent)} {entries}")


class Handler(w.Defaults, exports.Handler):
    def describe(self):
        return w.describe(StateFormat("kinds", 1))

    def process(self, batch: Events) -> Emitted:
        return w.process(batch, [RECENT, DIGITS], each)
