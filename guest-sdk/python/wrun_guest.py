"""Typed keyed state for wrun operators written in Python (componentize-py).

Keyed state is owned by the host and reached through the
`wrun:operator/state` interface. These helpers do what the Rust SDK does:
for each batch they read a state for all the batch's keys with one host
call and write the changes back with one, and they encode values in the
codec of docs/state-format.md, so the bytes are the same whichever
language wrote them (a savepoint of a Rust operator resumes in Python).

    import wrun_guest as w

    COUNT = w.ValueState("count", w.U64)

    class Handler(exports.Handler):
        def process(self, batch):
            def each(event, emit):
                n = (COUNT.get() or 0) + 1
                COUNT.set(n)
                emit(w.event(event.key, str(n).encode(), event.timestamp))
            return w.process(batch, [COUNT], each)

See docs/languages.md.
"""

from typing import Any, Callable, Dict, List, Optional

from componentize_py_types import Err
from wit_world.imports import log as _log
from wit_world.imports import state as _state
from wit_world.imports.types import (
    Context,
    Error,
    Event,
    Packed,
    PackedOptions,
    StateFormat,
)


def fail(message: str):
    """Fails the current call with `message` (the job shows it)."""
    raise Err(Error(message))


def event(key: Optional[bytes], value: bytes, timestamp: Optional[int] = None) -> Event:
    """An event to emit."""
    return Event(key, value, timestamp)


def info(message: str) -> None:
    """Logs at info level (also `debug`, `warn`, `error`)."""
    _log.log(_log.Level.INFO, message)


def debug(message: str) -> None:
    _log.log(_log.Level.DEBUG, message)


def warn(message: str) -> None:
    _log.log(_log.Level.WARN, message)


def error(message: str) -> None:
    _log.log(_log.Level.ERROR, message)


def check_format(ctx: Context, expected: StateFormat) -> None:
    """Fails `open` when restored state was written in another format."""
    f = ctx.restored_format
    if f is not None and (f.name != expected.name or f.version != expected.version):
        fail(
            f"cannot read state written as {f.name}/{f.version}: "
            f"this operator reads {expected.name}/{expected.version}"
        )


class Defaults:
    """The `exports.Handler` methods most operators leave as they are: no
    work in `open` and `close`, no non-keyed state. Mix it in before the
    bindings' class: `class Handler(w.Defaults, exports.Handler)`, and
    define `declared_format` and `process` (and any of these to override)."""

    def open(self, ctx: Context) -> None:
        return None

    def close(self) -> List[Event]:
        return []

    def snapshot(self):
        return None

    def restore(self, snapshot) -> None:
        return None


# ---- the codec of docs/state-format.md (postcard) ----------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(b: bytes, at: int, limit: int):
    n = shift = 0
    for i in range(at, min(len(b), at + 10)):
        byte = b[i]
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if n >= 1 << limit:
                break
            return n, i + 1
    raise ValueError(f"bad u{limit} varint")


class Codec:
    """Encodes one type of value to bytes and back."""

    def encode(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:
        raise NotImplementedError


class _U64(Codec):
    def encode(self, value: int) -> bytes:
        if not 0 <= value < 1 << 64:
            raise ValueError(f"{value} is not a u64")
        return _varint(value)

    def decode(self, data: bytes) -> int:
        n, end = _read_varint(data, 0, 64)
        if end != len(data):
            raise ValueError(f"{len(data) - end} trailing bytes")
        return n


class _I64(Codec):
    def encode(self, value: int) -> bytes:
        if not -(1 << 63) <= value < 1 << 63:
            raise ValueError(f"{value} is not an i64")
        return _varint(((value << 1) ^ (value >> 63)) & ((1 << 64) - 1))

    def decode(self, data: bytes) -> int:
        z = _U64().decode(data)
        return (z >> 1) ^ -(z & 1)


class _Bytes(Codec):
    def encode(self, value: bytes) -> bytes:
        return _varint(len(value)) + bytes(value)

    def decode(self, data: bytes) -> bytes:
        n, at = _read_varint(data, 0, 64)
        if at + n != len(data):
            raise ValueError("length does not match the data")
        return bytes(data[at:])


class _Str(Codec):
    def encode(self, value: str) -> bytes:
        return _Bytes().encode(value.encode("utf-8"))

    def decode(self, data: bytes) -> str:
        return _Bytes().decode(data).decode("utf-8")


U64: Codec = _U64()
I64: Codec = _I64()
BYTES: Codec = _Bytes()
STR: Codec = _Str()


# ---- keyed state ---------------------------------------------------------

_current: List[Optional[bytes]] = [None]


def _pack(items: List[bytes]) -> Packed:
    ends, total = [], 0
    for it in items:
        total += len(it)
        ends.append(total)
    return Packed(b"".join(items), ends)


class ValueState:
    """One value per key, of one type (its `codec`)."""

    def __init__(self, name: str, codec: Codec = U64):
        self.name = name
        self.codec = codec
        self._values: Dict[bytes, Any] = {}
        self._dirty: Dict[bytes, bool] = {}

    def _key(self) -> bytes:
        key = _current[0]
        if key is None:
            fail(
                f"keyed state '{self.name}' used without a current key: keyed state "
                "is only available inside process() for an event that has a key"
            )
        return key

    def get(self) -> Any:
        """The current key's value, or None."""
        return self._values.get(self._key())

    def set(self, value: Any) -> None:
        """Sets the current key's value."""
        key = self._key()
        self._values[key] = value
        self._dirty[key] = True

    def clear(self) -> None:
        """Removes the current key's value."""
        key = self._key()
        self._values[key] = None
        self._dirty[key] = True

    def _load(self, keys: List[bytes]) -> None:
        self._values = {}
        self._dirty = {}
        got = _state.value_get_many(self.name, _pack(keys))
        if len(got.ends) != len(keys) or len(got.present) != len(keys):
            fail(f"value state '{self.name}': the host returned {len(got.ends)} values for {len(keys)} keys")
        start = 0
        for key, end, present in zip(keys, got.ends, got.present):
            if present:
                try:
                    self._values[key] = self.codec.decode(got.data[start:end])
                except (ValueError, UnicodeDecodeError) as e:
                    fail(f"value state '{self.name}': cannot decode state value: {e}")
            start = end

    def _store(self) -> None:
        if not self._dirty:
            return
        keys = list(self._dirty)
        values, present = [], []
        for k in keys:
            v = self._values.get(k)
            present.append(v is not None)
            values.append(self.codec.encode(v) if v is not None else b"")
        vals = _pack(values)
        _state.value_put_many(self.name, _pack(keys), PackedOptions(vals.data, vals.ends, present))
        self._dirty = {}


def process(
    batch: List[Event],
    states: List[ValueState],
    each: Callable[[Event, Callable[[Event], None]], None],
) -> List[Event]:
    """Runs `each(event, emit)` for every event of `batch`, with `states`
    read for the batch's keys first (one host call each) and written back
    after (one host call each). Returns what `each` emitted."""
    out: List[Event] = []
    if states:
        keys: Dict[bytes, None] = {}
        for ev in batch:
            if ev.key is None:
                fail(
                    f"keyed state '{states[0].name}' used without a current key: keyed state "
                    "is only available inside process() for an event that has a key"
                )
            keys.setdefault(bytes(ev.key), None)
        for s in states:
            s._load(list(keys))
    try:
        for ev in batch:
            _current[0] = bytes(ev.key) if ev.key is not None else None
            each(ev, out.append)
    finally:
        _current[0] = None
    for s in states:
        s._store()
    return out
