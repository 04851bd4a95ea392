"""Clicks per user per window of event time: examples/clicks/windows (Rust)
in Python, configured the same way per vertex:

    config = { window = "session", gap-ms = 30000 }
    config = { window = "tumbling", size-ms = 60000 }
    config = { window = "sliding", size-ms = 60000, slide-ms = 15000 }
    # and, for any of them: allowed-lateness-ms = 0 (default)

Each window's result is one JSON line, keyed by user,
`{"clicks":7,"end":…,"start":…,"window":"session"}`, with the window's
last millisecond as its timestamp; a click too late for its windows goes,
unchanged, to the named output `late`. The window state is the Rust
one's ("clicks", the same bytes and timer tags), so a savepoint moves
between the two.
"""

import json

import wrun_guest as w
from wit_world import exports
from wit_world.imports.types import Context, Emitted, Events, StateFormat, Timers

# The Rust operator's format (the SDK's default), so a savepoint moves between them.
FORMAT = StateFormat("wrun-guest", 1)
_op = {}


def each(click: w.Event, out: w.Emitter) -> None:
    if not _op["windows"].add(click):
        out.emit_to("late", click.key, click.value)


def on_timer(timer: w.Timer, out: w.Emitter) -> None:
    fired = _op["windows"].fire(timer)
    if fired is not None:
        (start, end), clicks = fired
        line = {"clicks": clicks, "end": end, "start": start, "window": _op["kind"]}
        out.emit(timer.key, json.dumps(line, separators=(",", ":"), sort_keys=True))


class Handler(w.Defaults, exports.Handler):
    def describe(self):
        return w.describe(FORMAT, ["late"])

    def open(self, ctx: Context) -> None:
        config = json.loads(bytes(ctx.config) or b"{}")

        def ms(name: str) -> int:
            v = config.get(name)
            if not isinstance(v, int):
                w.fail(f"config: `{name}` (milliseconds) is required")
            return v

        kind = config.get("window")
        if kind == "session":
            spec = w.session(ms("gap-ms"))
        elif kind == "tumbling":
            spec = w.tumbling(ms("size-ms"))
        elif kind == "sliding":
            spec = w.sliding(ms("size-ms"), ms("slide-ms"))
        else:
            w.fail(f'config: `window` must be "session", "tumbling" or "sliding", not {kind!r}')
        spec = spec.allowed_lateness(int(config.get("allowed-lateness-ms", 0)))
        _op["kind"] = kind
        _op["windows"] = w.WindowState("clicks", spec, w.COUNT)

    def process(self, batch: Events) -> Emitted:
        return w.process(batch, [_op["windows"]], each)

    def on_timers(self, fired: Timers) -> Emitted:
        return w.on_timers(fired, [_op["windows"]], on_timer)
