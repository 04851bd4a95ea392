"""Tries to reach the host through WASI and emits what happened.

Each input event's value is a path: the probe tries to read it and emits
`read <path>: <contents>` or `denied <path>: <exception>`. On the first
batch it also emits `env <n>` (the number of environment variables it
sees), `cwd-list <error or entries>`, `root-list <...>` and `net <error or
connected>` (a TCP connection to 127.0.0.1 at the port its config names,
`{"port": N}`, where the test listens).
"""

import json
import os
import wrun_guest as w
from wit_world import exports
from wit_world.imports.types import Emitted, Events, StateFormat

_first = [True]
_port = [22]


def _connect():
    import socket

    s = socket.create_connection(("127.0.0.1", _port[0]), timeout=1)
    s.close()
    return "connected"


def _try(f):
    try:
        return repr(f())
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        return f"error {type(e).__name__}: {e}"


class Handler(w.Defaults, exports.Handler):
    def open(self, ctx) -> None:
        config = json.loads(bytes(ctx.config) or b"{}")
        _port[0] = int(config.get("port", 22))

    def describe(self):
        return w.describe(StateFormat("wasi-probe", 1))

    def process(self, batch: Events) -> Emitted:
        def each(ev, out):
            if _first[0]:
                _first[0] = False
                out.emit(b"env", str(len(os.environ)))
                out.emit(b"cwd-list", _try(lambda: os.listdir(".")))
                out.emit(b"root-list", _try(lambda: os.listdir("/")))
                out.emit(b"net", _try(_connect))
            path = ev.value.decode()
            try:
                with open(path, "rb") as f:
                    data = f.read()
                out.emit(b"read", f"{path}: {data!r}")
            except Exception as e:  # noqa: BLE001
                out.emit(b"denied", f"{path}: {type(e).__name__}: {e}")

        return w.process(batch, [], each)
