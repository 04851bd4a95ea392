"""Operators for wrun in Python (componentize-py), on `wrun:operator@0.2.0`.

What the Rust SDK does, for Python: packed batches decoded in one pass,
emitted events packed in one pass (to the main output or to named
outputs, inheriting the input's timestamp), typed keyed state cached per
batch with one host call per kind of read or write, keyed timers, and
event-time windows built on both. Values are encoded in the codec of
docs/state-format.md, so the bytes are the same whichever language wrote
them (a savepoint of a Rust operator resumes in Python, timers and
windows included).

State kinds, each for the current event's (or fired timer's) key:

- `ValueState(name, codec)`: `get()`, `set(v)`, `clear()`.
- `ListState(name, codec)`: `get()`, `add(v)`, `update(vs)`, `clear()`.
- `MapState(name, key_codec, value_codec)`: `get(k)`, `contains(k)`,
  `insert(k, v)`, `remove(k)`, `entries()` (ordered by encoded key bytes).
- `WindowState(name, spec, aggregate)`: `add(ev)`, `fire(timer)`.

Codecs: `U64`, `I64` (int), `BOOL`, `F64` (float), `STR`, `BYTES`,
`Tuple(...)`.

    import wrun_guest as w
    from wit_world import exports

    FORMAT = w.StateFormat("wordcount", 1)
    COUNT = w.ValueState("count", w.U64)

    def count(ev, out):
        n = (COUNT.get() or 0) + 1
        COUNT.set(n)
        out.emit(ev.key, str(n).encode())      # the input's timestamp

    class Handler(w.Defaults, exports.Handler):
        def describe(self): return w.describe(FORMAT)
        def process(self, batch): return w.process(batch, [COUNT], count)

See docs/languages.md.
"""

from __future__ import annotations

import struct
from functools import partial
from itertools import accumulate, chain
from operator import itemgetter
from typing import Any, Callable, Dict, Generic, Iterable, List, NamedTuple, Optional, Sequence, Tuple, TypeVar

from componentize_py_types import Err
from wit_world.imports import log as _log
from wit_world.imports import state as _state
from wit_world.imports import timers as _timers
from wit_world.imports.types import (
    Context,
    Description,
    Emitted,
    Error,
    Events,
    MapEntry,
    Packed,
    PackedOptions,
    StateFormat,
    StateTtl,
    TimeDomain,
    Timers,
    TtlRefresh,
)

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1

#: A timer's clock: `timer.domain == w.EVENT_TIME` (or `PROCESSING_TIME`).
EVENT_TIME = TimeDomain.EVENT_TIME
PROCESSING_TIME = TimeDomain.PROCESSING_TIME


def fail(message: str):
    """Fails the current call with `message` (the job shows it)."""
    raise Err(Error(message))


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


# ---- events in and out ---------------------------------------------------


class Event(tuple):
    """An input event: `key` (bytes, None when it has none), `value`
    (bytes) and `timestamp` (ms since the Unix epoch, None when it has
    none). A tuple: `key, value, timestamp = ev` works too."""

    __slots__ = ()
    key = property(itemgetter(0))
    value = property(itemgetter(1))
    timestamp = property(itemgetter(2))

    def __repr__(self) -> str:
        return f"Event(key={self[0]!r}, value={self[1]!r}, timestamp={self[2]!r})"


def event(key: Optional[bytes], value: bytes, timestamp: Optional[int] = None) -> Event:
    """An `Event` (for tests: `w.pack_events([w.event(...)])`)."""
    return tuple.__new__(Event, (key, value, timestamp))


class Timer(tuple):
    """A fired timer: `key` (bytes), `time` (ms), `domain` (`EVENT_TIME`
    or `PROCESSING_TIME`) and `tag` (the number it was registered with)."""

    __slots__ = ()
    key = property(itemgetter(0))
    time = property(itemgetter(1))
    domain = property(itemgetter(2))
    tag = property(itemgetter(3))

    def __repr__(self) -> str:
        return f"Timer(key={self[0]!r}, time={self[1]}, domain={self[2]}, tag={self[3]})"


_new_event = partial(tuple.__new__, Event)
_new_timer = partial(tuple.__new__, Timer)


def unpack_events(batch: Events) -> List[Event]:
    """The events of a packed batch, in one pass (the slicing is done by
    C code: no Python loop over the events when every one has a key and a
    timestamp)."""
    return _unpack(batch)[0]


def _unpack(batch: Events) -> Tuple[List[Event], List[Any], List[Any]]:
    data, kends, vends, flags, tss = batch.data, batch.key_ends, batch.value_ends, batch.flags, batch.timestamps
    n = len(kends)
    if len(vends) != n or len(flags) != n or len(tss) != n:
        fail("the host sent a packed batch whose lists differ in length")
    if n == 0:
        return [], [], []
    starts = [0]
    starts += vends
    starts.pop()
    cut = data.__getitem__
    keys: List[Any] = list(map(cut, map(slice, starts, kends)))
    values = map(cut, map(slice, kends, vends))
    flags = bytes(flags)
    if b"\x00" in flags or b"\x02" in flags:  # some events have no key
        keys = [k if f & 1 else None for k, f in zip(keys, flags)]
    if b"\x00" in flags or b"\x01" in flags:  # some have no timestamp
        tss = [t if f & 2 else None for t, f in zip(tss, flags)]
    return list(map(_new_event, zip(keys, values, tss))), keys, tss


def pack_events(events: Sequence[Tuple[Any, ...]]) -> Events:
    """Events (`(key, value, timestamp)` tuples, e.g. `Event`s) as the
    packed `events` record; keys may be None, values bytes or str (UTF-8)."""
    return _pack([(e[0], e[1], e[2], 0) for e in events])[0]


def _utf8(parts: list) -> list:
    return [p.encode() if isinstance(p, str) else p for p in parts]


def _pack(out: List[Tuple[Any, Any, Any, int]]) -> Tuple[Events, bytes]:
    """(key, value, timestamp, output) tuples as `events` and the outputs."""
    if not out:
        return Events(b"", [], [], b"", []), b""
    keys, values, tss, outs = zip(*out)
    keyless = None in keys
    untimed = None in tss
    if keyless or untimed:
        flags = bytes((k is not None) | ((t is not None) << 1) for k, t in zip(keys, tss))
    else:
        flags = b"\x03" * len(out)
    if keyless:
        keys = tuple(b"" if k is None else k for k in keys)
    if untimed:
        tss = tuple(0 if t is None else t for t in tss)
    parts = list(chain.from_iterable(zip(keys, values)))
    try:
        data = b"".join(parts)
    except TypeError:
        parts = _utf8(parts)
        try:
            data = b"".join(parts)
        except TypeError:
            fail("an emitted key or value is neither bytes nor str")
    ends = list(accumulate(map(len, parts)))
    return (
        Events(data, ends[0::2], ends[1::2], flags, list(tss)),
        bytes(outs) if any(outs) else b"",
    )


# The key (bytes) of the event or timer being handled, and the timestamp an
# emitted event inherits.
_cur: Optional[bytes] = None
_ts: Optional[int] = None
# The named outputs (from `describe`).
_outputs: Tuple[str, ...] = ()
# The watermark, read from the host once per call.
_UNSET = object()
_wm: Any = _UNSET
# Timer registrations (True) and deletions buffered until the end of the call.
_timer_ops: List[Tuple[bool, bytes, int, Any, int]] = []


def describe(format: StateFormat, outputs: Sequence[str] = ()) -> Description:
    """What `Handler.describe` returns: the state format and the named
    outputs besides the main one (which `emit_to` then accepts)."""
    global _outputs
    _outputs = tuple(outputs)
    return Description(format, list(_outputs))


class Emitter:
    """Collects what a call emits; `each`, `on_timer` and the like get one.
    An event emitted without a timestamp gets the one of the event being
    processed (from an event-time timer: the timer's time)."""

    __slots__ = ("_out",)

    def __init__(self) -> None:
        self._out: List[Tuple[Any, Any, Any, int]] = []

    def emit(self, key: Optional[bytes], value: Any, timestamp: Optional[int] = None) -> None:
        """Emits an event to the main output; `value` is bytes or a str
        (sent as UTF-8)."""
        self._out.append((key, value, _ts if timestamp is None else timestamp, 0))

    def emit_to(self, output: str, key: Optional[bytes], value: Any, timestamp: Optional[int] = None) -> None:
        """Emits an event to the named output `output` (one of those given
        to `describe`, wired in the manifest as `from = "vertex.output"`)."""
        try:
            i = _outputs.index(output) + 1
        except ValueError:
            fail(
                f"emitted to output '{output}', which the operator does not declare in "
                f"describe() (it declares [{', '.join(_outputs)}])"
            )
        self._out.append((key, value, _ts if timestamp is None else timestamp, i))

    def __len__(self) -> int:
        return len(self._out)

    def emitted(self) -> Emitted:
        """What was emitted, as the `emitted` record."""
        events, outputs = _pack(self._out)
        return Emitted(events, outputs)


def emitted(run: Optional[Callable[[Emitter], None]] = None) -> Emitted:
    """An `emitted` record of what `run(out)` emits (nothing without
    `run`): for `close`."""
    global _ts
    out = Emitter()
    if run is not None:
        _ts = None
        run(out)
    return out.emitted()


# ---- the codec of docs/state-format.md (postcard) ----------------------


_ONE_BYTE = [bytes((i,)) for i in range(128)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _ONE_BYTE[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(b: bytes, at: int, limit: int) -> Tuple[int, int]:
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


class Codec(Generic[T]):
    """Encodes one type of value to bytes and back. `read(data, at)`
    decodes a value that starts at `at` and returns it with the offset
    after it (for values inside others: tuples, windows); `decode` reads
    exactly `data`. Both raise ValueError on bytes that are not a value of
    the type. A codec of your own defines `encode` and `read`."""

    def encode(self, value: T) -> bytes:
        raise NotImplementedError

    def read(self, data: bytes, at: int) -> Tuple[T, int]:
        raise NotImplementedError

    def decode(self, data: bytes) -> T:
        value, end = self.read(data, 0)
        if end != len(data):
            raise ValueError(f"{len(data) - end} trailing bytes")
        return value


class _U64(Codec[int]):
    def encode(self, value: int) -> bytes:
        if 0 <= value < 0x80:  # the common small count
            return _ONE_BYTE[value]
        if not 0 <= value < 1 << 64:
            raise ValueError(f"{value} is not a u64")
        return _varint(value)

    def read(self, data: bytes, at: int) -> Tuple[int, int]:
        return _read_varint(data, at, 64)

    def decode(self, data: bytes) -> int:
        n = len(data)
        if n == 1 and data[0] < 0x80:  # the common small counts
            return data[0]
        if n == 2 and data[0] & 0x80 and 0 < data[1] < 0x80:
            return data[0] & 0x7F | data[1] << 7
        return Codec.decode(self, data)


class _I64(Codec[int]):
    def encode(self, value: int) -> bytes:
        if not I64_MIN <= value <= I64_MAX:
            raise ValueError(f"{value} is not an i64")
        return _varint(((value << 1) ^ (value >> 63)) & ((1 << 64) - 1))

    def read(self, data: bytes, at: int) -> Tuple[int, int]:
        z, end = _read_varint(data, at, 64)
        return (z >> 1) ^ -(z & 1), end


class _Bool(Codec[bool]):
    def encode(self, value: bool) -> bytes:
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not a bool")
        return b"\x01" if value else b"\x00"

    def read(self, data: bytes, at: int) -> Tuple[bool, int]:
        if at >= len(data) or data[at] > 1:
            raise ValueError(f"bad bool: {bytes(data[at:at + 1]).hex() or 'no bytes'}")
        return data[at] == 1, at + 1


class _F64(Codec[float]):
    def encode(self, value: float) -> bytes:
        if not isinstance(value, (int, float)):
            raise ValueError(f"{value!r} is not a number")
        return struct.pack("<d", value)

    def read(self, data: bytes, at: int) -> Tuple[float, int]:
        if len(data) - at < 8:
            raise ValueError(f"an f64 is 8 bytes, not {len(data) - at}")
        return struct.unpack_from("<d", data, at)[0], at + 8

    def decode(self, data: bytes) -> float:
        if len(data) != 8:
            raise ValueError(f"an f64 is 8 bytes, not {len(data)}")
        return struct.unpack("<d", data)[0]


class _Bytes(Codec[bytes]):
    def encode(self, value: bytes) -> bytes:
        return _varint(len(value)) + bytes(value)

    def read(self, data: bytes, at: int) -> Tuple[bytes, int]:
        n, at = _read_varint(data, at, 64)
        if at + n > len(data):
            raise ValueError("length does not match the data")
        return bytes(data[at:at + n]), at + n

    def decode(self, data: bytes) -> bytes:
        n, at = _read_varint(data, 0, 64)
        if at + n != len(data):
            raise ValueError("length does not match the data")
        return bytes(data[at:])


class _Str(Codec[str]):
    def encode(self, value: str) -> bytes:
        return BYTES.encode(value.encode("utf-8"))

    def read(self, data: bytes, at: int) -> Tuple[str, int]:
        b, end = BYTES.read(data, at)
        return b.decode("utf-8"), end


class Tuple(Codec[tuple]):
    """A tuple of values, each in its codec, one after another (postcard's
    tuple: Rust's `(i64, u64)` is `Tuple(I64, U64)`)."""

    def __init__(self, *codecs: Codec[Any]):
        self.codecs = codecs

    def encode(self, value: tuple) -> bytes:
        if len(value) != len(self.codecs):
            raise ValueError(f"{value!r} is not a tuple of {len(self.codecs)}")
        return b"".join(c.encode(v) for c, v in zip(self.codecs, value))

    def read(self, data: bytes, at: int) -> Tuple[tuple, int]:
        out = []
        for c in self.codecs:
            v, at = c.read(data, at)
            out.append(v)
        return tuple(out), at


U64: Codec[int] = _U64()
I64: Codec[int] = _I64()
BOOL: Codec[bool] = _Bool()
F64: Codec[float] = _F64()
BYTES: Codec[bytes] = _Bytes()
STR: Codec[str] = _Str()


# ---- keyed state ---------------------------------------------------------


def _pack_keys(items: List[bytes]) -> Packed:
    return Packed(b"".join(items), list(accumulate(map(len, items))))


def _no_key_message(what: str) -> str:
    return (
        f"{what} used without a current key: keyed state is only available inside "
        "process() for an event that has a key, or in on_timers()"
    )


class _Keyed:
    """What `process` needs of a state: `_begin(keys)` before the batch
    (its distinct keys), `_end()` after it, `_reset()` when it failed."""

    name: str
    _kind = "keyed"

    def with_ttl(self, millis: int, domain: TimeDomain = PROCESSING_TIME, refresh_on_read: bool = False):
        """Gives the state a time to live (docs/time.md, "State TTL"): an
        entry (a key's value, list or map) not written (with
        `refresh_on_read`, nor read) for `millis` ms of `domain` (the job's
        clock, or with `EVENT_TIME` the watermark) is expired: never
        returned again, cleaned up by the host, in no later checkpoint.
        Call it where the state is made, in `open`. Returns the state."""
        if millis < 1:
            raise ValueError(f"state '{self.name}': a time to live must be at least 1 ms, not {millis}")
        refresh = TtlRefresh.ON_READ_AND_WRITE if refresh_on_read else TtlRefresh.ON_WRITE
        _state.set_ttl(self.name, StateTtl(millis, domain, refresh))
        return self

    def _misuse(self):
        if _cur is None:
            fail(_no_key_message(f"keyed state '{self.name}'"))
        fail(f"keyed state '{self.name}' is used but was not passed to process()")

    def _decode(self, codec: "Codec[Any]", data: bytes) -> Any:
        try:
            return codec.decode(data)
        except (ValueError, UnicodeDecodeError) as e:
            fail(f"{self._kind} state '{self.name}': cannot decode state value: {e}")

    def _begin(self, keys: List[bytes]) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError


class _Loading(dict):
    """A value state's cache for one batch: the first read of a key that is
    not there yet reads every key of the batch with one `value-get-many`."""

    __slots__ = ("state", "keys", "loaded")

    def __missing__(self, key: bytes) -> Any:
        if self.loaded:
            return None
        self.loaded = True
        self.state._load(self, self.keys)
        return dict.get(self, key)


class ValueState(_Keyed, Generic[T]):
    """One value per key, of one type (its `codec`). The first `get` of a
    batch reads it for all the batch's keys with one `value-get-many`
    (a `set` without a `get` reads nothing); the changed keys are written
    back with one `value-put-many`."""

    _kind = "value"

    def __init__(self, name: str, codec: "Codec[T]" = U64):  # type: ignore[assignment]
        self.name = name
        self.codec = codec
        self._values: Optional[_Loading] = None
        self._dirty: Dict[bytes, None] = {}

    def get(self) -> Optional[T]:
        """The current key's value, or None."""
        v = self._values
        if v is None or _cur is None:
            self._misuse()
        return v[_cur]  # type: ignore[index]

    def set(self, value: Optional[T]) -> None:
        """Sets the current key's value (None clears it)."""
        v = self._values
        if v is None or _cur is None:
            self._misuse()
        v[_cur] = value  # type: ignore[index]
        self._dirty[_cur] = None  # type: ignore[index]

    def clear(self) -> None:
        """Removes the current key's value."""
        self.set(None)

    def _begin(self, keys: List[bytes]) -> None:
        v = _Loading()
        v.state, v.keys, v.loaded = self, keys, False
        self._values = v
        self._dirty = {}

    def _load(self, into: dict, keys: List[bytes]) -> None:
        got = _state.value_get_many(self.name, _pack_keys(keys))
        if len(got.ends) != len(keys) or len(got.present) != len(keys):
            fail(f"value state '{self.name}': the host returned {len(got.ends)} values for {len(keys)} keys")
        ends, present, decode = got.ends, got.present, self.codec.decode
        starts = [0]
        starts += ends
        starts.pop()
        items = map(got.data.__getitem__, map(slice, starts, ends))
        try:
            if False not in present:
                values = list(map(decode, items))
            else:
                values = [decode(b) if p else None for b, p in zip(items, present)]
        except (ValueError, UnicodeDecodeError) as e:
            fail(f"value state '{self.name}': cannot decode state value: {e}")
        if not into:
            into.update(zip(keys, values))
        else:  # keep what this batch wrote before the read
            for key, value in zip(keys, values):
                if key not in into:
                    into[key] = value

    def _end(self) -> None:
        values, dirty = self._values, self._dirty
        self._values = None
        if not dirty or values is None:
            return
        keys = list(dirty)
        encode = self.codec.encode
        vals = [dict.get(values, k) for k in keys]
        present = [v is not None for v in vals]
        enc = [b"" if v is None else encode(v) for v in vals]
        packed = _pack_keys(enc)
        _state.value_put_many(self.name, _pack_keys(keys), PackedOptions(packed.data, packed.ends, present))
        self._dirty = {}

    def _reset(self) -> None:
        self._values = None
        self._dirty = {}


class ListState(_Keyed, Generic[T]):
    """A list per key; each element is encoded on its own with `codec`.
    `add` without a read is a buffered append (one `list-append-many` per
    batch); the first `get` of a batch reads the lists of all the batch's
    keys with one `list-get-many`; lists replaced by `update`/`clear`, or
    read and then added to, are written whole with one `list-put-many`."""

    _kind = "list"

    def __init__(self, name: str, codec: "Codec[T]"):
        self.name = name
        self.codec = codec
        self._keys: Optional[List[bytes]] = None
        self._appended: Dict[bytes, List[T]] = {}  # keys not read: blind appends
        self._lists: Dict[bytes, List[T]] = {}  # keys read or replaced
        self._dirty: Dict[bytes, None] = {}  # keys whose list is written whole

    def _key(self) -> bytes:
        if self._keys is None or _cur is None:
            self._misuse()
        return _cur  # type: ignore[return-value]

    def get(self) -> List[T]:
        """The current key's list (empty when it has none), a copy."""
        key = self._key()
        if key not in self._lists:
            self._load()
        return list(self._lists[key])

    def add(self, value: T) -> None:
        """Appends `value` to the current key's list."""
        key = self._key()
        if key in self._lists:
            self._lists[key].append(value)
            self._dirty[key] = None
        else:
            self._appended.setdefault(key, []).append(value)

    def update(self, values: Iterable[T]) -> None:
        """Replaces the current key's list."""
        key = self._key()
        self._appended.pop(key, None)
        self._lists[key] = list(values)
        self._dirty[key] = None

    def clear(self) -> None:
        """Empties the current key's list."""
        self.update([])

    def _load(self) -> None:
        keys = self._keys or []
        got = _state.list_get_many(self.name, keys)
        if len(got) != len(keys):
            fail(f"list state '{self.name}': the host returned {len(got)} lists for {len(keys)} keys")
        for key, items in zip(keys, got):
            if key in self._lists:
                continue
            lst = [self._decode(self.codec, b) for b in items]
            appended = self._appended.pop(key, None)
            if appended:
                lst.extend(appended)
                self._dirty[key] = None
            self._lists[key] = lst

    def _begin(self, keys: List[bytes]) -> None:
        self._keys = keys
        self._appended = {}
        self._lists = {}
        self._dirty = {}

    def _end(self) -> None:
        keys = self._keys or []
        appends = [(k, self.codec.encode(v)) for k in keys for v in self._appended.get(k, ())]
        puts = [(k, [self.codec.encode(v) for v in self._lists[k]]) for k in keys if k in self._dirty]
        if appends:
            _state.list_append_many(self.name, appends)
        if puts:
            _state.list_put_many(self.name, puts)
        self._reset()

    def _reset(self) -> None:
        self._keys = None
        self._appended = {}
        self._lists = {}
        self._dirty = {}


class MapState(_Keyed, Generic[K, V]):
    """A map per key, from map keys (`key_codec`) to values (`value_codec`).
    `get` is a point lookup (one `map-get-many`), cached for the batch;
    `insert` and `remove` are sent with one `map-put-many` at the end of
    the batch."""

    _kind = "map"

    def __init__(self, name: str, key_codec: "Codec[K]", value_codec: "Codec[V]"):
        self.name = name
        self.key_codec = key_codec
        self.value_codec = value_codec
        # (event key, encoded map key) -> (value or None, written in this batch)
        self._cache: Optional[Dict[Tuple[bytes, bytes], Tuple[Optional[V], bool]]] = None

    def _key(self) -> bytes:
        if self._cache is None or _cur is None:
            self._misuse()
        return _cur  # type: ignore[return-value]

    def get(self, map_key: K) -> Optional[V]:
        """The value under `map_key` for the current key, or None."""
        key = self._key()
        mk = self.key_codec.encode(map_key)
        hit = self._cache.get((key, mk))  # type: ignore[union-attr]
        if hit is not None:
            return hit[0]
        got = _state.map_get_many(self.name, [(key, mk)])
        if len(got) != 1:
            fail(f"map state '{self.name}': the host returned {len(got)} values for 1 key")
        value = None if got[0] is None else self._decode(self.value_codec, got[0])
        self._cache[(key, mk)] = (value, False)  # type: ignore[index]
        return value

    def contains(self, map_key: K) -> bool:
        """Whether `map_key` has a value for the current key."""
        return self.get(map_key) is not None

    def insert(self, map_key: K, value: Optional[V]) -> None:
        """Sets the value under `map_key` for the current key (None removes it)."""
        key = self._key()
        self._cache[(key, self.key_codec.encode(map_key))] = (value, True)  # type: ignore[index]

    def remove(self, map_key: K) -> None:
        """Removes `map_key` for the current key."""
        self.insert(map_key, None)

    def entries(self) -> List[Tuple[K, V]]:
        """Every (map key, value) of the current key's map, with this batch's
        unwritten changes, ordered by the encoded map-key bytes (one
        `map-entries` call each time)."""
        key = self._key()
        merged: Dict[bytes, Any] = {}
        for mk, vb in _state.map_entries(self.name, key):
            merged[bytes(mk)] = ("bytes", vb)
        for (k, mk), (v, dirty) in self._cache.items():  # type: ignore[union-attr]
            if k == key and dirty:
                merged[mk] = ("value", v)
        out: List[Tuple[K, V]] = []
        for mk in sorted(merged):
            kind, v = merged[mk]
            if v is None:
                continue
            if kind == "bytes":
                v = self._decode(self.value_codec, v)
            out.append((self._decode(self.key_codec, mk), v))
        return out

    def _begin(self, keys: List[bytes]) -> None:
        self._cache = {}

    def _end(self) -> None:
        entries = [
            MapEntry(k, mk, None if v is None else self.value_codec.encode(v))
            for (k, mk), (v, dirty) in (self._cache or {}).items()
            if dirty
        ]
        if entries:
            _state.map_put_many(self.name, entries)
        self._cache = None

    def _reset(self) -> None:
        self._cache = None


# ---- timers --------------------------------------------------------------


def _timer_op(register: bool, time: int, domain: Any, tag: int) -> None:
    if _cur is None:
        fail(
            "timers used without a current key: only inside process() for an event "
            "that has a key, or in on_timers()"
        )
    if not 0 <= tag < 1 << 32:
        fail(f"a timer's tag is a u32, not {tag}")
    _timer_ops.append((register, _cur, min(max(int(time), I64_MIN), I64_MAX), domain, tag))  # type: ignore[arg-type]


def register_event_time(time: int, tag: int = 0) -> None:
    """Registers an event-time timer for the current key at `time` (ms),
    with `tag` (a number of yours, to tell your timers apart). It fires once
    the watermark reaches `time`; registering it again changes nothing."""
    _timer_op(True, time, EVENT_TIME, tag)


def register_processing_time(time: int, tag: int = 0) -> None:
    """Registers a processing-time timer for the current key at `time`
    (Unix ms): it fires once the job's clock reaches it."""
    _timer_op(True, time, PROCESSING_TIME, tag)


def delete_event_time(time: int, tag: int = 0) -> None:
    """Deletes an event-time timer of the current key, if registered."""
    _timer_op(False, time, EVENT_TIME, tag)


def delete_processing_time(time: int, tag: int = 0) -> None:
    """Deletes a processing-time timer of the current key, if registered."""
    _timer_op(False, time, PROCESSING_TIME, tag)


def current_watermark() -> Optional[int]:
    """The subtask's event-time watermark (ms): events still to come have
    later timestamps, or are late. None before the first watermark. Read
    from the host once per call."""
    global _wm
    if _wm is _UNSET:
        _wm = _timers.current_watermark()
    return _wm


def processing_time() -> int:
    """The job's clock, in milliseconds since the Unix epoch."""
    return _timers.processing_time()


def _flush_timers(send: bool) -> None:
    global _timer_ops
    ops, _timer_ops = _timer_ops, []
    if not send:
        return
    i = 0
    while i < len(ops):
        register = ops[i][0]
        j = i
        while j < len(ops) and ops[j][0] == register:
            j += 1
        _, keys, times, domains, tags = zip(*ops[i:j])
        t = Timers(_pack_keys(list(keys)), list(times), list(domains), list(tags))
        if register:
            _timers.register_many(t)
        else:
            _timers.delete_many(t)
        i = j


def unpack_timers(fired: Timers) -> List[Timer]:
    """The timers of a `timers` record."""
    p = fired.keys
    n = len(p.ends)
    if len(fired.times) != n or len(fired.domains) != n or len(fired.tags) != n:
        fail("the host sent fired timers whose lists differ in length")
    starts = [0]
    starts += p.ends
    starts.pop()
    keys = map(p.data.__getitem__, map(slice, starts, p.ends))
    return list(map(_new_timer, zip(keys, fired.times, fired.domains, fired.tags)))


def pack_timers(timers: Sequence[Tuple[bytes, int, Any, int]]) -> Timers:
    """(key, time, domain, tag) tuples as a `timers` record (for tests)."""
    if not timers:
        return Timers(Packed(b"", []), [], [], [])
    keys, times, domains, tags = zip(*timers)
    return Timers(_pack_keys(list(keys)), list(times), list(domains), list(tags))


# ---- running a batch -----------------------------------------------------


def _run(keys: List[Any], items: Iterable[Tuple[Any, Any, Any]], states: Sequence[_Keyed], each: Callable[[Any, Emitter], None]) -> Emitted:
    """Runs `each(item, out)` per (item, key, inherited timestamp), with
    `states` set up for the distinct keys first and flushed after."""
    global _cur, _ts, _wm
    _wm = _UNSET
    out = Emitter()
    if states:
        if None in keys:
            fail(_no_key_message(f"keyed state '{states[0].name}'"))
        distinct = list(dict.fromkeys(keys))
        for s in states:
            s._begin(distinct)
    ok = False
    try:
        for item, _cur, _ts in items:
            each(item, out)
        ok = True
    finally:
        _cur = _ts = None
        if ok:
            for s in states:
                s._end()
        else:
            for s in states:
                s._reset()
        _flush_timers(ok)
    return out.emitted()


def process(batch: Events, states: Sequence[_Keyed], each: Callable[[Event, Emitter], None]) -> Emitted:
    """Runs `each(event, out)` for every event of the packed `batch`, with
    `states` (any mix of ValueState, ListState, MapState and WindowState)
    set up for the batch's keys first and their changes written back after
    (at most one host call per kind of write per state, and one per run of
    timer registrations). `out.emit(key, value)` emits, with the event's
    timestamp unless given one. Returns the `emitted` record."""
    events, keys, tss = _unpack(batch)
    return _run(keys, zip(events, keys, tss), states, each)


def on_timers(fired: Timers, states: Sequence[_Keyed], on_timer: Callable[[Timer, Emitter], None]) -> Emitted:
    """Runs `on_timer(timer, out)` for every fired timer, with the timer's
    key as the current key (so keyed state and timers are that key's) and
    `states` set up as in `process`. An event emitted from an event-time
    timer without a timestamp gets the timer's time."""
    timers = unpack_timers(fired)
    keys = [t[0] for t in timers]
    inherit = [t[1] if t[2] == EVENT_TIME else None for t in timers]
    return _run(keys, zip(timers, keys, inherit), states, on_timer)


class Defaults:
    """The `exports.Handler` methods most operators leave as they are: no
    work in `open`, no timers, nothing at `close`, no non-keyed state. Mix
    it in before the bindings' class: `class Handler(w.Defaults,
    exports.Handler)`, and define `describe` and `process` (and any of
    these to override)."""

    def open(self, ctx: Context) -> None:
        return None

    def on_timers(self, fired: Timers) -> Emitted:
        return emitted()

    def close(self) -> Emitted:
        return emitted()

    def snapshot(self):
        return None

    def restore(self, snapshot) -> None:
        return None


# ---- windows -------------------------------------------------------------


class Window(NamedTuple):
    """A window: the event times `start..end` (ms, end excluded)."""

    start: int
    end: int

    def max_timestamp(self) -> int:
        """Its last millisecond: where its timer fires, and the timestamp
        of its result."""
        return self.end - 1


def _sat(n: int) -> int:
    return I64_MAX if n > I64_MAX else I64_MIN if n < I64_MIN else n


class WindowSpec(NamedTuple):
    """Which windows (`tumbling`, `sliding`, `session`), and how late an
    event may still be added (`.allowed_lateness(ms)`)."""

    kind: str
    size: int
    slide: int
    lateness: int = 0

    def allowed_lateness(self, ms: int) -> "WindowSpec":
        """Keeps a window `ms` after the watermark passed its end: a late
        event within that time is still added and the window fires again;
        later ones are refused (`add` returns False). Default 0."""
        return self._replace(lateness=max(0, ms))

    def assign(self, ts: int) -> List[Window]:
        """The windows an event at `ts` belongs to (before session
        merging), oldest first."""
        if self.kind == "tumbling":
            start = ts - ts % self.size
            return [Window(start, _sat(start + self.size))]
        if self.kind == "sliding":
            out = []
            start = ts - ts % self.slide
            while start > ts - self.size:
                out.append(Window(start, _sat(start + self.size)))
                start -= self.slide
            out.reverse()
            return out
        return [Window(ts, _sat(ts + self.size))]


def tumbling(size_ms: int) -> WindowSpec:
    """Windows of `size_ms` one after another: [0, size), [size, 2 size)…"""
    return WindowSpec("tumbling", max(1, size_ms), max(1, size_ms))


def sliding(size_ms: int, slide_ms: int) -> WindowSpec:
    """Windows of `size_ms` starting every `slide_ms`."""
    size = max(1, size_ms)
    return WindowSpec("sliding", size, min(max(1, slide_ms), size))


def session(gap_ms: int) -> WindowSpec:
    """A window per burst of a key's activity, closed after `gap_ms` without
    an event of the key; an event that bridges two sessions merges them."""
    gap = max(1, gap_ms)
    return WindowSpec("session", gap, gap)


class Aggregate(Generic[T]):
    """An incremental aggregate: what a window keeps instead of its events.
    `create()` a new accumulator, `add(acc, event)` and `merge(acc, other)`
    return the updated one; `codec` encodes it in the window's state."""

    def __init__(self, create: Callable[[], T], add: Callable[[T, Event], T], merge: Callable[[T, T], T], codec: Codec[T]):
        self.create, self.add, self.merge, self.codec = create, add, merge, codec


def aggregate(create: Callable[[], T], add: Callable[[T, Event], T], merge: Callable[[T, T], T], codec: Codec[T]) -> Aggregate[T]:
    """An `Aggregate` from three functions and the accumulator's codec,
    e.g. a sum: `aggregate(lambda: 0, lambda s, ev: s + int(ev.value), lambda a, b: a + b, w.I64)`."""
    return Aggregate(create, add, merge, codec)


#: Counts events (the Rust SDK's `Count`: the same state bytes).
COUNT: Aggregate[int] = Aggregate(lambda: 0, lambda n, _ev: n + 1, lambda a, b: a + b, U64)


class _OpenWindows(Codec[list]):
    """A key's open windows, `[[start, end, acc], …]`: postcard's
    `Vec<(i64, i64, Acc)>`, the Rust SDK's layout."""

    def __init__(self, acc: Codec[Any]):
        self.acc = acc

    def encode(self, value: list) -> bytes:
        parts = [_varint(len(value))]
        for s, e, a in value:
            parts += (I64.encode(s), I64.encode(e), self.acc.encode(a))
        return b"".join(parts)

    def read(self, data: bytes, at: int) -> Tuple[list, int]:
        n, at = _read_varint(data, at, 64)
        out = []
        for _ in range(n):
            s, at = I64.read(data, at)
            e, at = I64.read(data, at)
            a, at = self.acc.read(data, at)
            out.append([s, e, a])
        return out, at


def _name_hash(name: str) -> int:
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


class WindowState(_Keyed, Generic[T]):
    """Windows by `spec`, aggregated by `agg`, per key: the key's open
    windows with their accumulators in the value state `name`, and an
    event-time timer per window at its last millisecond (`end - 1`). The
    same state bytes and timer tags as the Rust SDK's `WindowState`, so a
    windowed job moves between languages across a savepoint. Pass it to
    `process` and `on_timers` like any state; call `add` in `each` and
    `fire` in `on_timer`."""

    _kind = "window"

    def __init__(self, name: str, spec: WindowSpec, agg: Aggregate[T]):
        self.name = name
        self.spec = spec
        self.agg = agg
        self._open: ValueState[list] = ValueState(name, _OpenWindows(agg.codec))
        base = _name_hash(name) & ~1
        self.fire_tag, self.cleanup_tag = base, base | 1

    def _begin(self, keys: List[bytes]) -> None:
        self._open._begin(keys)

    def _end(self) -> None:
        self._open._end()

    def _reset(self) -> None:
        self._open._reset()

    def _schedule(self, w: Window) -> None:
        register_event_time(w.end - 1, self.fire_tag)
        if self.spec.lateness > 0:
            register_event_time(_sat(w.end - 1 + self.spec.lateness), self.cleanup_tag)

    def _unschedule(self, w: Window) -> None:
        delete_event_time(w.end - 1, self.fire_tag)
        if self.spec.lateness > 0:
            delete_event_time(_sat(w.end - 1 + self.spec.lateness), self.cleanup_tag)

    def add(self, ev: Event) -> bool:
        """Adds an event of the current key to each of its windows, by its
        timestamp. Returns False, adding it nowhere, when it is too late
        for every window it belongs to (the watermark passed their end plus
        the allowed lateness): send it to a late output. An event added to
        a window the watermark has passed (within the lateness) makes that
        window fire again. Fails for an event without a timestamp."""
        ts = ev[2]
        if ts is None:
            fail(
                f"window state '{self.name}': an event without a timestamp cannot be windowed "
                "by event time (give the source `timestamp`, see docs/time.md)"
            )
        wm = current_watermark()
        lateness = self.spec.lateness
        assigned = self.spec.assign(ts)
        if wm is not None:
            assigned = [w for w in assigned if w.end - 1 + lateness > wm]
        if not assigned:
            return False
        session = self.spec.kind == "session"
        agg = self.agg
        open_ = self._open.get() or []
        for w in assigned:
            for o in open_:
                if o[0] == w.start and o[1] == w.end:
                    o[2] = agg.add(o[2], ev)
                    break
            else:
                open_.append([w.start, w.end, agg.add(agg.create(), ev)])
                if not session:
                    self._schedule(w)
            if wm is not None and w.end - 1 <= wm:  # late but allowed: fire again
                register_event_time(w.end - 1, self.fire_tag)
        if session:
            open_ = self._merge_sessions(open_, assigned[0])
        self._open.set(open_)
        return True

    def _merge_sessions(self, open_: list, new: Window) -> list:
        open_.sort(key=lambda o: (o[0], o[1]))
        before = [Window(o[0], o[1]) for o in open_]
        merged: list = []
        for s, e, acc in open_:
            if merged and s < merged[-1][1]:
                last = merged[-1]
                last[1] = max(last[1], e)
                last[2] = self.agg.merge(last[2], acc)
            else:
                merged.append([s, e, acc])
        after = [Window(o[0], o[1]) for o in merged]
        for w in before:
            if w != new and w not in after:
                self._unschedule(w)
        for w in after:
            if w == new or w not in before:
                self._schedule(w)
        return merged

    def fire(self, timer: Timer) -> Optional[Tuple[Window, T]]:
        """For a timer of this state (call it in `on_timer` with every
        timer): the window that closed and its accumulator, to emit; None
        for a timer that is not this state's or only cleans up."""
        key, time, domain, tag = timer
        if domain != EVENT_TIME or (tag != self.fire_tag and tag != self.cleanup_tag):
            return None
        open_ = self._open.get() or []
        result = None
        if tag == self.fire_tag:
            for i, o in enumerate(open_):
                if o[1] - 1 == time:
                    result = (Window(o[0], o[1]), o[2])
                    if self.spec.lateness == 0:
                        del open_[i]
                    break
        else:
            open_ = [o for o in open_ if _sat(o[1] - 1 + self.spec.lateness) != time]
        self._open.set(open_ or None)
        return result
