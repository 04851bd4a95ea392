"""The wordcount counter in Python: counts each word (the event key) in
keyed value state `count` (a u64) and emits the word's running count as
decimal text.

State format `wordcount/1`, the same bytes as the Rust counter
(examples/wordcount/counter): a job can be stopped with a savepoint in one
language and resumed in another.
"""

import wrun_guest as w
from wit_world import exports
from wit_world.imports.types import Context, Emitted, Events, StateFormat

FORMAT = StateFormat("wordcount", 1)
COUNT = w.ValueState("count", w.U64)


def count(event: w.Event, out: w.Emitter) -> None:
    n = (COUNT.get() or 0) + 1
    COUNT.set(n)
    out.emit(event.key, str(n).encode())  # with the event's timestamp


class Handler(w.Defaults, exports.Handler):
    def describe(self):
        return w.describe(FORMAT)

    def open(self, ctx: Context) -> None:
        w.check_format(ctx, FORMAT)

    def process(self, batch: Events) -> Emitted:
        return w.process(batch, [COUNT], count)
