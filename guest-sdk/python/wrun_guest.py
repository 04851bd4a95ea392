"""Typed keyed state for wrun operators written in Python (componentize-py).

Keyed state is owned by the host and reached through the
`wrun:operator/state` interface. These helpers do what the Rust SDK does:
they cache state for the batch, read a value or list state for all the
batch's keys with one host call, send each state's writes with one call
per batch, and encode values in the codec of docs/state-format.md, so the
bytes are the same whichever language wrote them (a savepoint of a Rust
operator resumes in Python).

State kinds, each for the current event's key:

- `ValueState(name, codec)`: `get()`, `set(v)`, `clear()`.
- `ListState(name, codec)`: `get()`, `add(v)`, `update(vs)`, `clear()`.
- `MapState(name, key_codec, value_codec)`: `get(k)`, `contains(k)`,
  `insert(k, v)`, `remove(k)`, `entries()` (ordered by encoded key bytes).

Codecs: `U64`, `I64` (int), `BOOL`, `F64` (float), `STR`, `BYTES`.

    import wrun_guest as w

    COUNT = w.ValueState("count", w.U64)
    SEEN = w.ListState("seen", w.STR)

    class Handler(exports.Handler):
        def process(self, batch):
            def each(event, emit):
                n = (COUNT.get() or 0) + 1
                COUNT.set(n)
                SEEN.add(event.value.decode())
                emit(w.event(event.key, str(n).encode(), event.timestamp))
            return w.process(batch, [COUNT, SEEN], each)

See docs/languages.md.
"""

import struct
from typing import Any, Callable, Dict, Generic, Iterable, List, Optional, Sequence, Tuple, TypeVar

from componentize_py_types import Err
from wit_world.imports import log as _log
from wit_world.imports import state as _state
from wit_world.imports.types import (
    Context,
    Error,
    Event,
    MapEntry,
    Packed,
    PackedOptions,
    StateFormat,
)

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


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
    """Encodes one type of value to bytes and back. `decode` raises
    ValueError on bytes that are not a value of the type."""

    def encode(self, value: T) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> T:
        raise NotImplementedError


class _U64(Codec[int]):
    def encode(self, value: int) -> bytes:
        if not 0 <= value < 1 << 64:
            raise ValueError(f"{value} is not a u64")
        return _varint(value)

    def decode(self, data: bytes) -> int:
        n, end = _read_varint(data, 0, 64)
        if end != len(data):
            raise ValueError(f"{len(data) - end} trailing bytes")
        return n


class _I64(Codec[int]):
    def encode(self, value: int) -> bytes:
        if not -(1 << 63) <= value < 1 << 63:
            raise ValueError(f"{value} is not an i64")
        return _varint(((value << 1) ^ (value >> 63)) & ((1 << 64) - 1))

    def decode(self, data: bytes) -> int:
        z = _U64().decode(data)
        return (z >> 1) ^ -(z & 1)


class _Bool(Codec[bool]):
    def encode(self, value: bool) -> bytes:
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not a bool")
        return b"\x01" if value else b"\x00"

    def decode(self, data: bytes) -> bool:
        if len(data) != 1 or data[0] > 1:
            raise ValueError(f"bad bool: {bytes(data).hex() or 'no bytes'}")
        return data[0] == 1


class _F64(Codec[float]):
    def encode(self, value: float) -> bytes:
        if not isinstance(value, (int, float)):
            raise ValueError(f"{value!r} is not a number")
        return struct.pack("<d", value)

    def decode(self, data: bytes) -> float:
        if len(data) != 8:
            raise ValueError(f"an f64 is 8 bytes, not {len(data)}")
        return struct.unpack("<d", data)[0]


class _Bytes(Codec[bytes]):
    def encode(self, value: bytes) -> bytes:
        return _varint(len(value)) + bytes(value)

    def decode(self, data: bytes) -> bytes:
        n, at = _read_varint(data, 0, 64)
        if at + n != len(data):
            raise ValueError("length does not match the data")
        return bytes(data[at:])


class _Str(Codec[str]):
    def encode(self, value: str) -> bytes:
        return _Bytes().encode(value.encode("utf-8"))

    def decode(self, data: bytes) -> str:
        return _Bytes().decode(data).decode("utf-8")


U64: Codec[int] = _U64()
I64: Codec[int] = _I64()
BOOL: Codec[bool] = _Bool()
F64: Codec[float] = _F64()
BYTES: Codec[bytes] = _Bytes()
STR: Codec[str] = _Str()


# ---- keyed state ---------------------------------------------------------

# The key of the event being processed, and the number of the batch.
_current: List[Optional[bytes]] = [None]
_batch: List[int] = [0]


def _pack(items: List[bytes]) -> Packed:
    ends, total = [], 0
    for it in items:
        total += len(it)
        ends.append(total)
    return Packed(b"".join(items), ends)


class _Keyed:
    """What `process` needs of a state: `_begin(keys)` before the batch
    (its distinct keys) and `_end()` after it."""

    name: str
    _kind = "keyed"
    _batch_seen = -1

    def _key(self) -> bytes:
        key = _current[0]
        if key is None:
            fail(
                f"keyed state '{self.name}' used without a current key: keyed state "
                "is only available inside process() for an event that has a key"
            )
        if self._batch_seen != _batch[0]:
            fail(f"keyed state '{self.name}' is used but was not passed to process()")
        return key  # type: ignore[return-value]

    def _decode(self, codec: "Codec[Any]", data: bytes) -> Any:
        try:
            return codec.decode(data)
        except (ValueError, UnicodeDecodeError) as e:
            fail(f"{self._kind} state '{self.name}': cannot decode state value: {e}")

    def _begin(self, keys: List[bytes]) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError


class ValueState(_Keyed, Generic[T]):
    """One value per key, of one type (its `codec`). `process` reads it for
    all the batch's keys with one `value-get-many` and writes the changed
    keys back with one `value-put-many`."""

    _kind = "value"

    def __init__(self, name: str, codec: "Codec[T]" = U64):  # type: ignore[assignment]
        self.name = name
        self.codec = codec
        self._values: Dict[bytes, Optional[T]] = {}
        self._dirty: Dict[bytes, bool] = {}

    def get(self) -> Optional[T]:
        """The current key's value, or None."""
        return self._values.get(self._key())

    def set(self, value: T) -> None:
        """Sets the current key's value (None clears it)."""
        key = self._key()
        self._values[key] = value
        self._dirty[key] = True

    def clear(self) -> None:
        """Removes the current key's value."""
        key = self._key()
        self._values[key] = None
        self._dirty[key] = True

    def _begin(self, keys: List[bytes]) -> None:
        self._batch_seen = _batch[0]
        self._values = {}
        self._dirty = {}
        got = _state.value_get_many(self.name, _pack(keys))
        if len(got.ends) != len(keys) or len(got.present) != len(keys):
            fail(f"value state '{self.name}': the host returned {len(got.ends)} values for {len(keys)} keys")
        start = 0
        for key, end, present in zip(keys, got.ends, got.present):
            if present:
                self._values[key] = self._decode(self.codec, got.data[start:end])
            start = end

    def _end(self) -> None:
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
        self._keys: List[bytes] = []
        self._appended: Dict[bytes, List[T]] = {}  # keys not read: blind appends
        self._lists: Dict[bytes, List[T]] = {}  # keys read or replaced
        self._dirty: Dict[bytes, None] = {}  # keys whose list is written whole

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
        got = _state.list_get_many(self.name, self._keys)
        if len(got) != len(self._keys):
            fail(f"list state '{self.name}': the host returned {len(got)} lists for {len(self._keys)} keys")
        for key, items in zip(self._keys, got):
            if key in self._lists:
                continue
            lst = [self._decode(self.codec, b) for b in items]
            appended = self._appended.pop(key, None)
            if appended:
                lst.extend(appended)
                self._dirty[key] = None
            self._lists[key] = lst

    def _begin(self, keys: List[bytes]) -> None:
        self._batch_seen = _batch[0]
        self._keys = keys
        self._appended = {}
        self._lists = {}
        self._dirty = {}

    def _end(self) -> None:
        appends = [
            (k, self.codec.encode(v)) for k in self._keys for v in self._appended.get(k, ())
        ]
        puts = [
            (k, [self.codec.encode(v) for v in self._lists[k]]) for k in self._keys if k in self._dirty
        ]
        if appends:
            _state.list_append_many(self.name, appends)
        if puts:
            _state.list_put_many(self.name, puts)
        self._appended = {}
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
        self._cache: Dict[Tuple[bytes, bytes], Tuple[Optional[V], bool]] = {}

    def get(self, map_key: K) -> Optional[V]:
        """The value under `map_key` for the current key, or None."""
        key = self._key()
        mk = self.key_codec.encode(map_key)
        hit = self._cache.get((key, mk))
        if hit is not None:
            return hit[0]
        got = _state.map_get_many(self.name, [(key, mk)])
        if len(got) != 1:
            fail(f"map state '{self.name}': the host returned {len(got)} values for 1 key")
        value = None if got[0] is None else self._decode(self.value_codec, got[0])
        self._cache[(key, mk)] = (value, False)
        return value

    def contains(self, map_key: K) -> bool:
        """Whether `map_key` has a value for the current key."""
        return self.get(map_key) is not None

    def insert(self, map_key: K, value: V) -> None:
        """Sets the value under `map_key` for the current key (None removes it)."""
        key = self._key()
        self._cache[(key, self.key_codec.encode(map_key))] = (value, True)

    def remove(self, map_key: K) -> None:
        """Removes `map_key` for the current key."""
        key = self._key()
        self._cache[(key, self.key_codec.encode(map_key))] = (None, True)

    def entries(self) -> List[Tuple[K, V]]:
        """Every (map key, value) of the current key's map, with this batch's
        unwritten changes, ordered by the encoded map-key bytes (one
        `map-entries` call each time)."""
        key = self._key()
        merged: Dict[bytes, Any] = {}
        for mk, vb in _state.map_entries(self.name, key):
            merged[bytes(mk)] = ("bytes", vb)
        for (k, mk), (v, dirty) in self._cache.items():
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
        self._batch_seen = _batch[0]
        self._cache = {}

    def _end(self) -> None:
        entries = [
            MapEntry(k, mk, None if v is None else self.value_codec.encode(v))
            for (k, mk), (v, dirty) in self._cache.items()
            if dirty
        ]
        if entries:
            _state.map_put_many(self.name, entries)
        self._cache = {}


def process(
    batch: List[Event],
    states: Sequence[_Keyed],
    each: Callable[[Event, Callable[[Event], None]], None],
) -> List[Event]:
    """Runs `each(event, emit)` for every event of `batch`, with `states`
    (any mix of ValueState, ListState and MapState) set up for the batch's
    keys first and their changes written back after (at most one host call
    per kind of write per state). Returns what `each` emitted."""
    out: List[Event] = []
    _batch[0] += 1
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
            s._begin(list(keys))
    try:
        for ev in batch:
            _current[0] = bytes(ev.key) if ev.key is not None else None
            each(ev, out.append)
    finally:
        _current[0] = None
    for s in states:
        s._end()
    return out
