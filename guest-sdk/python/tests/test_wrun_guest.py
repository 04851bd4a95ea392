"""Tests of wrun_guest.py on the host's CPython, with the componentize-py
bindings it imports replaced by fakes: the codec against the vectors of
docs/state-format.md, the host calls each kind of state (value, list,
map) makes per batch, packed events in and out, named outputs, timers
and windows (the Rust SDK's window tests, with the same results).

Run: python3 guest-sdk/python/tests/test_wrun_guest.py (cargo test runs it).
"""

import math
import os
import sys
import types
import unittest
from dataclasses import dataclass
from enum import Enum
from typing import Any, List, Optional

# ---- fakes of the generated bindings ------------------------------------


class Err(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value


@dataclass
class Error:
    message: str


@dataclass
class Events:
    data: bytes
    key_ends: List[int]
    value_ends: List[int]
    flags: bytes
    timestamps: List[int]


@dataclass
class Emitted:
    events: Events
    outputs: bytes


@dataclass
class Description:
    format: Any
    outputs: List[str]


class TimeDomain(Enum):
    EVENT_TIME = 0
    PROCESSING_TIME = 1


class TtlRefresh(Enum):
    ON_WRITE = 0
    ON_READ_AND_WRITE = 1


@dataclass
class StateTtl:
    millis: int
    domain: TimeDomain
    refresh: TtlRefresh


@dataclass
class Packed:
    data: bytes
    ends: List[int]


@dataclass
class PackedOptions:
    data: bytes
    ends: List[int]
    present: List[bool]


@dataclass
class StateFormat:
    name: str
    version: int


@dataclass
class Context:
    restored_format: Optional[StateFormat] = None


@dataclass
class MapEntry:
    key: bytes
    map_key: bytes
    value: Optional[bytes]


@dataclass
class Timers:
    keys: Packed
    times: List[int]
    domains: List[TimeDomain]
    tags: List[int]


class FakeTimers:
    """The host's timers: `pending` is a set of (key, time, domain, tag);
    `watermark` and `now` are what the helper reads; `calls` counts."""

    def __init__(self):
        self.pending = set()
        self.watermark = None
        self.now = 0
        self.calls = {}

    def _count(self, fn):
        self.calls[fn] = self.calls.get(fn, 0) + 1

    @staticmethod
    def _each(t):
        assert isinstance(t, Timers)
        assert all(isinstance(d, TimeDomain) for d in t.domains)
        keys = FakeState._items(t.keys)
        assert len(keys) == len(t.times) == len(t.domains) == len(t.tags)
        return zip(keys, t.times, t.domains, t.tags)

    def register_many(self, t):
        self._count("register_many")
        self.pending.update(self._each(t))

    def delete_many(self, t):
        self._count("delete_many")
        self.pending.difference_update(self._each(t))

    def current_watermark(self):
        self._count("current_watermark")
        return self.watermark

    def processing_time(self):
        return self.now

    def due(self, watermark):
        """Removes and returns, as a `Timers` record in order of time, the
        event-time timers at or before `watermark` (which it sets)."""
        self.watermark = watermark
        due = sorted((t for t in self.pending if t[2] == TimeDomain.EVENT_TIME and t[1] <= watermark), key=lambda t: (t[1], t[0], t[3]))
        self.pending.difference_update(due)
        keys = [t[0] for t in due]
        ends, total = [], 0
        for k in keys:
            total += len(k)
            ends.append(total)
        return Timers(Packed(b"".join(keys), ends), [t[1] for t in due], [t[2] for t in due], [t[3] for t in due])


class FakeState:
    """The host's keyed state, by kind: value (`tables`: name -> key ->
    bytes), list (`lists`: name -> key -> [bytes]) and map (`maps`: name ->
    key -> map key -> bytes). A name keeps the kind of its first use.
    Counts calls: `gets`, `puts` (value state) and `calls[function]`."""

    def __init__(self):
        self.tables = {}
        self.lists = {}
        self.maps = {}
        self.kinds = {}
        self.ttls = {}
        self.gets = 0
        self.puts = 0
        self.calls = {}

    def reset_counts(self):
        self.gets = self.puts = 0
        self.calls = {}

    def _use(self, fn, name, kind):
        self.calls[fn] = self.calls.get(fn, 0) + 1
        was = self.kinds.setdefault(name, kind)
        if was != kind:
            raise RuntimeError(f"state '{name}' is {was} state but was used as {kind} state")

    @staticmethod
    def _bytes(b):
        assert isinstance(b, (bytes, bytearray)), f"expected bytes, got {type(b).__name__}"
        return bytes(b)

    @staticmethod
    def _items(p):
        out, start = [], 0
        for end in p.ends:
            out.append(bytes(p.data[start:end]))
            start = end
        return out

    def set_ttl(self, name, ttl):
        assert ttl is None or (isinstance(ttl, StateTtl) and isinstance(ttl.domain, TimeDomain) and isinstance(ttl.refresh, TtlRefresh))
        self.ttls[name] = ttl

    def value_get_many(self, name, keys):
        self.gets += 1
        self._use("value_get_many", name, "value")
        t = self.tables.get(name, {})
        vals = [t.get(k) for k in self._items(keys)]
        data, ends, present, total = b"", [], [], 0
        for v in vals:
            present.append(v is not None)
            data += v or b""
            total += len(v or b"")
            ends.append(total)
        return PackedOptions(data, ends, present)

    def value_put_many(self, name, keys, values):
        self.puts += 1
        self._use("value_put_many", name, "value")
        t = self.tables.setdefault(name, {})
        vals = self._items(Packed(values.data, values.ends))
        for k, v, p in zip(self._items(keys), vals, values.present):
            if p:
                t[k] = v
            else:
                t.pop(k, None)

    def list_get_many(self, name, keys):
        self._use("list_get_many", name, "list")
        t = self.lists.get(name, {})
        return [list(t.get(self._bytes(k), [])) for k in keys]

    def list_append_many(self, name, items):
        self._use("list_append_many", name, "list")
        t = self.lists.setdefault(name, {})
        for k, v in items:
            t.setdefault(self._bytes(k), []).append(self._bytes(v))

    def list_put_many(self, name, lists):
        self._use("list_put_many", name, "list")
        t = self.lists.setdefault(name, {})
        for k, vs in lists:
            if vs:
                t[self._bytes(k)] = [self._bytes(v) for v in vs]
            else:
                t.pop(self._bytes(k), None)

    def map_get_many(self, name, keys):
        self._use("map_get_many", name, "map")
        t = self.maps.get(name, {})
        return [t.get(self._bytes(k), {}).get(self._bytes(mk)) for k, mk in keys]

    def map_put_many(self, name, entries):
        self._use("map_put_many", name, "map")
        t = self.maps.setdefault(name, {})
        for e in entries:
            assert isinstance(e, MapEntry)
            k, mk = self._bytes(e.key), self._bytes(e.map_key)
            if e.value is not None:
                t.setdefault(k, {})[mk] = self._bytes(e.value)
            elif k in t:
                t[k].pop(mk, None)
                if not t[k]:
                    del t[k]

    def map_entries(self, name, key):
        self._use("map_entries", name, "map")
        m = self.maps.get(name, {}).get(self._bytes(key), {})
        return sorted(m.items())


STATE = FakeState()
TIMERS = FakeTimers()


def install_fakes():
    types_mod = types.ModuleType("wit_world.imports.types")
    for c in (Context, Description, Emitted, Error, Events, MapEntry, Packed, PackedOptions, StateFormat, StateTtl, TimeDomain, Timers, TtlRefresh):
        setattr(types_mod, c.__name__, c)
    log_mod = types.ModuleType("wit_world.imports.log")
    log_mod.Level = types.SimpleNamespace(INFO=1, DEBUG=0, WARN=2, ERROR=3)
    log_mod.log = lambda level, msg: None
    imports = types.ModuleType("wit_world.imports")
    imports.state = STATE
    imports.timers = TIMERS
    imports.log = log_mod
    imports.types = types_mod
    world = types.ModuleType("wit_world")
    world.imports = imports
    cpt = types.ModuleType("componentize_py_types")
    cpt.Err = Err
    sys.modules.update(
        {
            "wit_world": world,
            "wit_world.imports": imports,
            "wit_world.imports.types": types_mod,
            "wit_world.imports.log": log_mod,
            "componentize_py_types": cpt,
        }
    )
    # `from wit_world.imports import state` reads the attribute.
    sys.modules["wit_world.imports.state"] = STATE  # type: ignore[assignment]
    sys.modules["wit_world.imports.timers"] = TIMERS  # type: ignore[assignment]


install_fakes()
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import wrun_guest as w  # noqa: E402


def Event(key, value, timestamp=None):
    return w.event(key, value, timestamp)


def unpacked(emitted):
    """The events of an `emitted` record, as (key, value, timestamp)
    `Event`s, and their outputs."""
    return w.unpack_events(emitted.events), emitted.outputs


def process(batch, states, each):
    """`w.process` of a list of events; what it emitted, unpacked."""
    return unpacked(w.process(w.pack_events(batch), states, each))[0]


class Codec(unittest.TestCase):
    def test_vectors_of_state_format_md(self):
        self.assertEqual(w.U64.encode(0), bytes.fromhex("00"))
        self.assertEqual(w.U64.encode(127), bytes.fromhex("7f"))
        self.assertEqual(w.U64.encode(128), bytes.fromhex("8001"))
        self.assertEqual(w.U64.encode(300), bytes.fromhex("ac02"))
        self.assertEqual(w.U64.encode(2**64 - 1), bytes.fromhex("ffffffffffffffffff01"))
        self.assertEqual(w.I64.encode(0), bytes.fromhex("00"))
        self.assertEqual(w.I64.encode(-1), bytes.fromhex("01"))
        self.assertEqual(w.I64.encode(1), bytes.fromhex("02"))
        self.assertEqual(w.I64.encode(-(2**63)), bytes.fromhex("ffffffffffffffffff01"))
        self.assertEqual(w.STR.encode("hi"), bytes.fromhex("026869"))
        self.assertEqual(w.BYTES.encode(b"\x00\xff"), bytes.fromhex("0200ff"))
        self.assertEqual(w.BOOL.encode(False), bytes.fromhex("00"))
        self.assertEqual(w.BOOL.encode(True), bytes.fromhex("01"))
        self.assertEqual(w.F64.encode(1.5), bytes.fromhex("000000000000f83f"))
        self.assertEqual(w.F64.encode(-2.0), bytes.fromhex("00000000000000c0"))

    def test_round_trips(self):
        for n in [0, 1, 127, 128, 300, 2**32, 2**64 - 1]:
            self.assertEqual(w.U64.decode(w.U64.encode(n)), n)
        for n in [0, -1, 1, -(2**63), 2**63 - 1, 12345, -12345]:
            self.assertEqual(w.I64.decode(w.I64.encode(n)), n)
        for s in ["", "hi", "日本"]:
            self.assertEqual(w.STR.decode(w.STR.encode(s)), s)
        for b in [False, True]:
            self.assertIs(w.BOOL.decode(w.BOOL.encode(b)), b)
        for f in [0.0, -0.0, 1.5, -1e308, 5e-324, math.inf, -math.inf]:
            self.assertEqual(w.F64.decode(w.F64.encode(f)).hex(), f.hex())
        self.assertTrue(math.isnan(w.F64.decode(w.F64.encode(math.nan))))

    def test_bad_bytes_are_errors(self):
        for bad in [b"", b"\x80", b"\x00\x00", bytes.fromhex("ffffffffffffffffff02")]:
            with self.assertRaises(ValueError):
                w.U64.decode(bad)
        with self.assertRaises(ValueError):
            w.U64.encode(-1)
        with self.assertRaises(ValueError):
            w.BYTES.decode(b"\x05ab")
        for bad in [b"", b"\x02", b"\xff", b"\x00\x00", b"\x01\x00"]:
            with self.assertRaises(ValueError):
                w.BOOL.decode(bad)
        for bad in [b"", b"\x00" * 7, b"\x00" * 9]:
            with self.assertRaises(ValueError):
                w.F64.decode(bad)
        with self.assertRaises(ValueError):
            w.BOOL.encode(1)
        with self.assertRaises(ValueError):
            w.F64.encode("1.5")


class State(unittest.TestCase):
    def test_one_read_and_one_write_per_batch(self):
        count = w.ValueState("count", w.U64)

        def each(ev, out):
            n = (count.get() or 0) + 1
            count.set(n)
            out.emit(ev.key, str(n).encode())

        STATE.gets = STATE.puts = 0
        batch = [Event(k, b"", None) for k in [b"a", b"b", b"a", b"a"]]
        out = process(batch, [count], each)
        self.assertEqual([e.value for e in out], [b"1", b"1", b"2", b"3"])
        self.assertEqual((STATE.gets, STATE.puts), (1, 1))
        out = process([Event(b"a", b"", 7)], [count], each)
        self.assertEqual((out[0].value, out[0].timestamp), (b"4", 7))
        self.assertEqual(STATE.tables["count"][b"a"], w.U64.encode(4))

    def test_with_ttl_tells_the_host(self):
        v = w.ValueState("seen", w.U64).with_ttl(60_000)
        self.assertEqual(v.name, "seen")
        self.assertEqual(STATE.ttls["seen"], StateTtl(60_000, TimeDomain.PROCESSING_TIME, TtlRefresh.ON_WRITE))
        w.MapState("m", w.STR, w.U64).with_ttl(5, w.EVENT_TIME, refresh_on_read=True)
        self.assertEqual(STATE.ttls["m"], StateTtl(5, TimeDomain.EVENT_TIME, TtlRefresh.ON_READ_AND_WRITE))
        with self.assertRaises(ValueError):
            w.ListState("l", w.STR).with_ttl(0)

    def test_clear_removes_and_a_keyless_event_fails(self):
        s = w.ValueState("s", w.STR)
        process([Event(b"k", b"", None)], [s], lambda ev, emit: s.set("x"))
        self.assertIn(b"k", STATE.tables["s"])
        process([Event(b"k", b"", None)], [s], lambda ev, emit: s.clear())
        self.assertNotIn(b"k", STATE.tables["s"])
        with self.assertRaises(Err) as e:
            process([Event(None, b"", None)], [s], lambda ev, emit: None)
        self.assertIn("without a current key", e.exception.value.message)

    def test_corrupt_state_is_an_operator_error(self):
        STATE.tables["bad"] = {b"k": b"\x80"}
        s = w.ValueState("bad", w.U64)
        with self.assertRaises(Err) as e:
            process([Event(b"k", b"", None)], [s], lambda ev, out: s.get())
        self.assertIn("cannot decode state value", e.exception.value.message)

    def test_check_format(self):
        w.check_format(Context(None), StateFormat("wordcount", 1))
        w.check_format(Context(StateFormat("wordcount", 1)), StateFormat("wordcount", 1))
        with self.assertRaises(Err) as e:
            w.check_format(Context(StateFormat("wordcount", 2)), StateFormat("wordcount", 1))
        self.assertIn("wordcount/2", e.exception.value.message)


def events(*keys):
    return [Event(k, b"", None) for k in keys]


class ListStateTest(unittest.TestCase):
    def setUp(self):
        STATE.reset_counts()

    def test_one_list_get_many_per_batch_however_many_gets(self):
        STATE.lists["l1"] = {b"a": [w.STR.encode("x")]}
        l = w.ListState("l1", w.STR)
        seen = []

        def each(ev, out):
            seen.append(l.get())
            l.add(ev.value.decode())
            seen.append(l.get())

        batch = [Event(b"a", b"1", None), Event(b"b", b"2", None), Event(b"a", b"3", None)]
        process(batch, [l], each)
        self.assertEqual(seen, [["x"], ["x", "1"], [], ["2"], ["x", "1"], ["x", "1", "3"]])
        self.assertEqual(STATE.calls, {"list_get_many": 1, "list_put_many": 1})
        self.assertEqual(STATE.lists["l1"][b"a"], [w.STR.encode(v) for v in ["x", "1", "3"]])
        self.assertEqual(STATE.lists["l1"][b"b"], [w.STR.encode("2")])

    def test_appends_without_a_get_are_one_list_append_many(self):
        STATE.lists["l2"] = {b"a": [w.U64.encode(1)]}
        l = w.ListState("l2", w.U64)
        process(events(b"a", b"b", b"a"), [l], lambda ev, emit: l.add(7))
        self.assertEqual(STATE.calls, {"list_append_many": 1})
        self.assertEqual(STATE.lists["l2"][b"a"], [w.U64.encode(n) for n in [1, 7, 7]])
        self.assertEqual(STATE.lists["l2"][b"b"], [w.U64.encode(7)])

    def test_update_and_clear_are_one_list_put_many(self):
        STATE.lists["l3"] = {b"a": [w.U64.encode(1)], b"b": [w.U64.encode(2)]}
        l = w.ListState("l3", w.U64)

        def each(ev, out):
            if ev.key == b"a":
                l.update([5, 6])
                l.add(7)
            else:
                l.add(9)  # dropped by the clear that follows
                l.clear()

        process(events(b"a", b"b"), [l], each)
        self.assertEqual(STATE.calls, {"list_put_many": 1})
        self.assertEqual(STATE.lists["l3"], {b"a": [w.U64.encode(n) for n in [5, 6, 7]]})

    def test_get_after_add_merges_and_other_keys_keep_their_appends(self):
        STATE.lists["l4"] = {b"a": [w.STR.encode("x")], b"b": [w.STR.encode("y")]}
        l = w.ListState("l4", w.STR)
        got = []

        def each(ev, out):
            l.add("new")
            if ev.key == b"b":
                got.append(l.get())

        process(events(b"a", b"b"), [l], each)
        self.assertEqual(got, [["y", "new"]])
        # The get read both keys: both lists are written whole, nothing appended.
        self.assertEqual(STATE.calls, {"list_get_many": 1, "list_put_many": 1})
        self.assertEqual(STATE.lists["l4"][b"a"], [w.STR.encode(v) for v in ["x", "new"]])
        self.assertEqual(STATE.lists["l4"][b"b"], [w.STR.encode(v) for v in ["y", "new"]])
        STATE.reset_counts()
        process(events(b"a"), [l], lambda ev, emit: got.append(l.get()))
        self.assertEqual(got[-1], ["x", "new"])
        self.assertEqual(STATE.calls, {"list_get_many": 1})

    def test_corrupt_element_is_an_operator_error(self):
        STATE.lists["l5"] = {b"k": [w.U64.encode(1), b"\x80"]}
        l = w.ListState("l5", w.U64)
        with self.assertRaises(Err) as e:
            process(events(b"k"), [l], lambda ev, emit: l.get())
        self.assertIn("list state 'l5': cannot decode state value", e.exception.value.message)


class MapStateTest(unittest.TestCase):
    def setUp(self):
        STATE.reset_counts()

    def test_get_is_cached_for_the_batch(self):
        STATE.maps["m1"] = {b"a": {w.STR.encode("x"): w.U64.encode(3)}}
        m = w.MapState("m1", w.STR, w.U64)
        got = []

        def each(ev, out):
            got.append((m.get("x"), m.get("y"), m.contains("x"), m.contains("y")))

        process(events(b"a", b"a", b"a"), [m], each)
        self.assertEqual(got, [(3, None, True, False)] * 3)
        self.assertEqual(STATE.calls, {"map_get_many": 2})  # "x" and "y", once each
        STATE.reset_counts()
        process(events(b"a"), [m], each)
        self.assertEqual(STATE.calls, {"map_get_many": 2})  # nothing kept between batches

    def test_insert_and_remove_are_one_map_put_many(self):
        STATE.maps["m2"] = {b"a": {w.STR.encode("gone"): w.U64.encode(1)}}
        m = w.MapState("m2", w.STR, w.U64)
        got = []

        def each(ev, out):
            m.insert("n", len(ev.key))
            m.remove("gone")
            got.append((m.get("n"), m.get("gone")))

        process(events(b"a", b"bb"), [m], each)
        self.assertEqual(got, [(1, None), (2, None)])
        self.assertEqual(STATE.calls, {"map_put_many": 1})
        self.assertEqual(
            STATE.maps["m2"],
            {b"a": {w.STR.encode("n"): w.U64.encode(1)}, b"bb": {w.STR.encode("n"): w.U64.encode(2)}},
        )
        # Removing the last entry removes the key's map.
        process(events(b"a"), [m], lambda ev, emit: m.remove("n"))
        self.assertNotIn(b"a", STATE.maps["m2"])

    def test_entries_merge_pending_changes_in_encoded_key_order(self):
        enc = w.STR.encode
        STATE.maps["m3"] = {b"k": {enc("bb"): w.U64.encode(1), enc("a"): w.U64.encode(2), enc("ccc"): w.U64.encode(3)}}
        m = w.MapState("m3", w.STR, w.U64)
        got = []

        def each(ev, out):
            m.insert("z", 9)
            m.remove("ccc")
            m.insert("bb", 5)
            got.append(m.entries())

        process(events(b"k"), [m], each)
        # Strings sort by length first: the length prefix is the first byte.
        self.assertEqual(got, [[("a", 2), ("z", 9), ("bb", 5)]])
        self.assertEqual(STATE.calls, {"map_entries": 1, "map_put_many": 1})
        process(events(b"k"), [m], lambda ev, emit: got.append(m.entries()))
        self.assertEqual(got[-1], [("a", 2), ("z", 9), ("bb", 5)])

        n = w.MapState("m4", w.U64, w.BOOL)
        process(events(b"k"), [n], lambda ev, emit: [n.insert(i, i % 2 == 0) for i in (200, 300, 2)])
        process(events(b"k"), [n], lambda ev, emit: got.append(n.entries()))
        # 2 = 02, 300 = ac 02, 200 = c8 01.
        self.assertEqual(got[-1], [(2, True), (300, True), (200, True)])

    def test_corrupt_value_is_an_operator_error(self):
        STATE.maps["m5"] = {b"k": {w.STR.encode("x"): b"\x02"}}
        m = w.MapState("m5", w.STR, w.BOOL)
        with self.assertRaises(Err) as e:
            process(events(b"k"), [m], lambda ev, emit: m.get("x"))
        self.assertIn("map state 'm5': cannot decode state value", e.exception.value.message)


class MixedTest(unittest.TestCase):
    def setUp(self):
        STATE.reset_counts()

    def test_value_list_and_map_in_one_process_call(self):
        total = w.ValueState("mix-total", w.F64)
        log = w.ListState("mix-log", w.STR)
        per = w.MapState("mix-per", w.STR, w.U64)

        def each(ev, out):
            word = ev.value.decode()
            total.set((total.get() or 0.0) + 0.5)
            log.add(word)
            per.insert(word, (per.get(word) or 0) + 1)
            out.emit(ev.key, b"")

        batch = [Event(k, v, None) for k, v in [(b"a", b"x"), (b"b", b"x"), (b"a", b"y"), (b"a", b"x")]]
        out = process(batch, [total, log, per], each)
        self.assertEqual(len(out), 4)
        self.assertEqual((STATE.gets, STATE.puts), (1, 1))
        self.assertEqual(
            STATE.calls,
            {"value_get_many": 1, "value_put_many": 1, "list_append_many": 1, "map_get_many": 3, "map_put_many": 1},
        )
        self.assertEqual(STATE.tables["mix-total"][b"a"], w.F64.encode(1.5))
        self.assertEqual(STATE.lists["mix-log"][b"a"], [w.STR.encode(v) for v in "xyx"])
        self.assertEqual(STATE.maps["mix-per"][b"a"], {w.STR.encode("x"): w.U64.encode(2), w.STR.encode("y"): w.U64.encode(1)})

    def test_misuse_fails(self):
        l = w.ListState("mis-l", w.U64)
        m = w.MapState("mis-m", w.STR, w.U64)
        with self.assertRaises(Err) as e:
            process([Event(None, b"", None)], [l, m], lambda ev, emit: None)
        self.assertIn("without a current key", e.exception.value.message)
        with self.assertRaises(Err) as e:
            process(events(b"k"), [l], lambda ev, emit: m.get("x"))
        self.assertIn("'mis-m' is used but was not passed to process()", e.exception.value.message)
        with self.assertRaises(Err) as e:
            l.add(1)
        self.assertIn("without a current key", e.exception.value.message)
        # A failed batch writes nothing.
        with self.assertRaises(ZeroDivisionError):
            process(events(b"k"), [l], lambda ev, emit: (l.add(1), 1 / 0))
        self.assertNotIn("mis-l", STATE.lists)
        self.assertEqual(STATE.calls, {})


class Packing(unittest.TestCase):
    def test_events_round_trip_and_inherit_timestamps(self):
        evs = [Event(b"k", b"v", -3), Event(None, b"", None), Event(b"", b"x", 5), Event(b"big", bytes(range(256)) * 40, 2**63 - 1)]
        packed = w.pack_events(evs)
        self.assertEqual(packed.flags, bytes([3, 0, 3, 3]))
        self.assertEqual(packed.timestamps, [-3, 0, 5, 2**63 - 1])
        self.assertEqual(packed.key_ends, [1, 2, 2, 6])
        self.assertEqual(w.unpack_events(packed), evs)
        got = w.unpack_events(packed)[0]
        self.assertEqual((got.key, got.value, got.timestamp), (b"k", b"v", -3))

        def each(ev, out):
            out.emit(ev.key, ev.value)  # the input's timestamp
            out.emit(None, "text", 99)  # a str is UTF-8

        out = process(evs, [], each)
        self.assertEqual(out[0::2], evs)
        self.assertEqual(out[1::2], [Event(None, b"text", 99)] * 4)
        self.assertEqual(w.unpack_events(w.pack_events([])), [])

    def test_a_short_list_is_an_error(self):
        with self.assertRaises(Err) as e:
            w.process(Events(b"ab", [1], [2], b"\x03", []), [], lambda ev, out: None)
        self.assertIn("differ in length", e.exception.value.message)

    def test_named_outputs(self):
        d = w.describe(StateFormat("f", 1), ["late", "odd"])
        self.assertEqual(d.outputs, ["late", "odd"])

        def each(ev, out):
            if ev.value == b"1":
                out.emit_to("odd", ev.key, ev.value)
            else:
                out.emit(ev.key, ev.value)

        em = w.process(w.pack_events([Event(b"a", b"0", 1), Event(b"a", b"1", 2), Event(b"a", b"2", 3)]), [], each)
        self.assertEqual(em.outputs, bytes([0, 2, 0]))
        self.assertEqual([e.timestamp for e in w.unpack_events(em.events)], [1, 2, 3])
        # All to the main output: no per-event outputs at all.
        em = w.process(w.pack_events([Event(b"a", b"0", 1)]), [], each)
        self.assertEqual(em.outputs, b"")
        with self.assertRaises(Err) as e:
            w.process(w.pack_events([Event(b"a", b"0", 1)]), [], lambda ev, out: out.emit_to("nope", None, b""))
        self.assertIn("'nope', which the operator does not declare in describe() (it declares [late, odd])", e.exception.value.message)
        w.describe(StateFormat("f", 1))


class TimersTest(unittest.TestCase):
    def setUp(self):
        TIMERS.pending.clear()
        TIMERS.calls = {}
        TIMERS.watermark = None

    def test_register_delete_and_fire_with_the_key_current(self):
        seen = w.ValueState("timers-seen", w.U64)

        def each(ev, out):
            t = int(ev.value)
            w.register_event_time(t, 7)
            w.register_event_time(t, 7)  # the same timer: one
            w.register_processing_time(w.processing_time() + 1000, 1)
            if ev.key == b"b":
                w.delete_processing_time(w.processing_time() + 1000, 1)
            seen.set((seen.get() or 0) + 1)

        TIMERS.now = 5000
        process([Event(b"a", b"10", 1), Event(b"b", b"20", 2)], [seen], each)
        # Runs of registrations and deletions, each one host call, in order.
        self.assertEqual(TIMERS.calls, {"register_many": 1, "delete_many": 1})
        self.assertEqual(
            TIMERS.pending,
            {(b"a", 10, w.EVENT_TIME, 7), (b"b", 20, w.EVENT_TIME, 7), (b"a", 6000, w.PROCESSING_TIME, 1)},
        )

        def on_timer(t, out):
            # The timer's key is the current key: its state, its timers.
            out.emit(t.key, f"{t.time},{t.tag},{seen.get()}")
            if t.key == b"a":
                w.register_event_time(t.time + 100, 8)

        em = w.on_timers(TIMERS.due(15), [seen], on_timer)
        evs, _ = unpacked(em)
        self.assertEqual(evs, [Event(b"a", b"10,7,1", 10)])  # inherits the timer's time
        self.assertIn((b"a", 110, w.EVENT_TIME, 8), TIMERS.pending)
        # A processing-time timer gives no timestamp.
        fired = w.pack_timers([(b"a", 6000, w.PROCESSING_TIME, 1)])
        evs, _ = unpacked(w.on_timers(fired, [seen], on_timer))
        self.assertEqual(evs[0].timestamp, None)

    def test_the_watermark_is_read_once_per_call(self):
        TIMERS.watermark = 42
        got = []
        process([Event(b"a", b""), Event(b"b", b"")], [], lambda ev, out: got.append(w.current_watermark()))
        self.assertEqual(got, [42, 42])
        self.assertEqual(TIMERS.calls, {"current_watermark": 1})

    def test_timers_need_a_key_and_a_failed_call_registers_nothing(self):
        with self.assertRaises(Err) as e:
            process([Event(None, b"")], [], lambda ev, out: w.register_event_time(1))
        self.assertIn("timers used without a current key", e.exception.value.message)

        def each(ev, out):
            w.register_event_time(1)
            raise ZeroDivisionError

        with self.assertRaises(ZeroDivisionError):
            process([Event(b"a", b"")], [], each)
        self.assertEqual(TIMERS.pending, set())
        self.assertNotIn("register_many", TIMERS.calls)


class WindowsTest(unittest.TestCase):
    """The Rust SDK's window tests (guest-sdk/src/window.rs), same results."""

    def setUp(self):
        TIMERS.pending.clear()
        TIMERS.watermark = None

    def run_windows(self, name, spec, steps):
        win = w.WindowState(name, spec, w.COUNT)
        w.describe(StateFormat("w", 1), ["late"])
        out, late = [], 0

        def each(ev, o):
            if not win.add(ev):
                o.emit_to("late", ev.key, ev.value)

        def on_timer(t, o):
            fired = win.fire(t)
            if fired is not None:
                (start, end), n = fired
                o.emit(t.key, f"{start},{end},{n}")

        for events, wm in steps:
            em = w.process(w.pack_events([Event(k, b"", t) for k, t in events]), [win], each)
            late += em.outputs.count(1)
            evs, outs = unpacked(em)
            out += [f"{e.key.decode()}:{e.value.decode()}" for e, o in zip(evs, outs or bytes(len(evs))) if o == 0]
            fired = w.on_timers(TIMERS.due(wm), [win], on_timer)
            for e in unpacked(fired)[0]:
                self.assertIsNotNone(e.timestamp)
                out.append(f"{e.key.decode()}:{e.value.decode()}")
        w.describe(StateFormat("w", 1))
        return out, late

    def test_tumbling_windows_fire_once_when_the_watermark_passes_them(self):
        out, late = self.run_windows(
            "tumbling", w.tumbling(10), [([("a", 1), ("a", 9), ("b", 12)], 8), ([("a", 3)], 20), ([("a", 4)], 30)]
        )
        self.assertEqual(out, ["a:0,10,3", "b:10,20,1"])
        self.assertEqual(late, 1)
        self.assertEqual(TIMERS.pending, set())

    def test_sliding_windows_count_an_event_in_each_of_its_windows(self):
        out, _ = self.run_windows("sliding", w.sliding(10, 5), [([("a", 7), ("a", 12)], 100)])
        self.assertEqual(out, ["a:0,10,1", "a:5,15,2", "a:10,20,1"])

    def test_sessions_merge_when_an_event_bridges_them(self):
        out, _ = self.run_windows("session", w.session(5), [([("a", 0), ("a", 8)], 2), ([("a", 4), ("b", 1)], 100)])
        self.assertEqual(out, ["b:1,6,1", "a:0,13,3"])
        self.assertEqual(TIMERS.pending, set())

    def test_allowed_lateness_fires_again_then_refuses(self):
        out, late = self.run_windows(
            "lateness", w.tumbling(10).allowed_lateness(5), [([("a", 1)], 9), ([("a", 2)], 14), ([("a", 3)], 30)]
        )
        self.assertEqual(out, ["a:0,10,1", "a:0,10,2"])
        self.assertEqual(late, 1)
        self.assertEqual(TIMERS.pending, set())

    def test_state_and_tags_are_the_rust_sdks(self):
        # FNV-1a of the name; the fire tag even, the cleanup tag odd.
        self.assertEqual(w._name_hash("a"), 0xE40C292C)
        win = w.WindowState("a", w.tumbling(10), w.COUNT)
        self.assertEqual((win.fire_tag, win.cleanup_tag), (0xE40C292C, 0xE40C292D))
        # postcard Vec<(i64, i64, u64)>: length, zigzag start, zigzag end, count.
        process([Event(b"k", b"", 1), Event(b"k", b"", 2)], [win], lambda ev, o: win.add(ev))
        self.assertEqual(STATE.tables["a"][b"k"], bytes([1, 0, 20, 2]))
        self.assertEqual(TIMERS.pending, {(b"k", 9, w.EVENT_TIME, 0xE40C292C)})
        with self.assertRaises(Err) as e:
            process([Event(b"k", b"", None)], [win], lambda ev, o: win.add(ev))
        self.assertIn("without a timestamp", e.exception.value.message)

    def test_an_aggregate_of_your_own(self):
        spec = w.tumbling(10)
        total = w.WindowState(
            "sum", spec, w.aggregate(lambda: (0, 0), lambda a, ev: (a[0] + int(ev.value), a[1] + 1), lambda a, b: (a[0] + b[0], a[1] + b[1]), w.Tuple(w.I64, w.U64))
        )
        process([Event(b"k", b"5", 1), Event(b"k", b"-2", 3)], [total], lambda ev, o: total.add(ev))
        got = []
        w.on_timers(TIMERS.due(100), [total], lambda t, o: got.append(total.fire(t)))
        self.assertEqual(got, [(w.Window(0, 10), (3, 2))])


if __name__ == "__main__":
    unittest.main()
