"""Tests of wrun_guest.py on the host's CPython, with the componentize-py
bindings it imports replaced by fakes: the codec against the vectors of
docs/state-format.md, and the host calls each kind of state (value, list,
map) makes per batch.

Run: python3 guest-sdk/python/tests/test_wrun_guest.py (cargo test runs it).
"""

import math
import os
import sys
import types
import unittest
from dataclasses import dataclass
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
class Event:
    key: Optional[bytes]
    value: bytes
    timestamp: Optional[int]


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


def install_fakes():
    types_mod = types.ModuleType("wit_world.imports.types")
    for c in (Context, Error, Event, MapEntry, Packed, PackedOptions, StateFormat):
        setattr(types_mod, c.__name__, c)
    log_mod = types.ModuleType("wit_world.imports.log")
    log_mod.Level = types.SimpleNamespace(INFO=1, DEBUG=0, WARN=2, ERROR=3)
    log_mod.log = lambda level, msg: None
    imports = types.ModuleType("wit_world.imports")
    imports.state = STATE
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


install_fakes()
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import wrun_guest as w  # noqa: E402


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

        def each(ev, emit):
            n = (count.get() or 0) + 1
            count.set(n)
            emit(w.event(ev.key, str(n).encode(), ev.timestamp))

        STATE.gets = STATE.puts = 0
        batch = [Event(k, b"", None) for k in [b"a", b"b", b"a", b"a"]]
        out = w.process(batch, [count], each)
        self.assertEqual([e.value for e in out], [b"1", b"1", b"2", b"3"])
        self.assertEqual((STATE.gets, STATE.puts), (1, 1))
        out = w.process([Event(b"a", b"", 7)], [count], each)
        self.assertEqual((out[0].value, out[0].timestamp), (b"4", 7))
        self.assertEqual(STATE.tables["count"][b"a"], w.U64.encode(4))

    def test_clear_removes_and_a_keyless_event_fails(self):
        s = w.ValueState("s", w.STR)
        w.process([Event(b"k", b"", None)], [s], lambda ev, emit: s.set("x"))
        self.assertIn(b"k", STATE.tables["s"])
        w.process([Event(b"k", b"", None)], [s], lambda ev, emit: s.clear())
        self.assertNotIn(b"k", STATE.tables["s"])
        with self.assertRaises(Err) as e:
            w.process([Event(None, b"", None)], [s], lambda ev, emit: None)
        self.assertIn("without a current key", e.exception.value.message)

    def test_corrupt_state_is_an_operator_error(self):
        STATE.tables["bad"] = {b"k": b"\x80"}
        s = w.ValueState("bad", w.U64)
        with self.assertRaises(Err) as e:
            w.process([Event(b"k", b"", None)], [s], lambda ev, emit: None)
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

        def each(ev, emit):
            seen.append(l.get())
            l.add(ev.value.decode())
            seen.append(l.get())

        batch = [Event(b"a", b"1", None), Event(b"b", b"2", None), Event(b"a", b"3", None)]
        w.process(batch, [l], each)
        self.assertEqual(seen, [["x"], ["x", "1"], [], ["2"], ["x", "1"], ["x", "1", "3"]])
        self.assertEqual(STATE.calls, {"list_get_many": 1, "list_put_many": 1})
        self.assertEqual(STATE.lists["l1"][b"a"], [w.STR.encode(v) for v in ["x", "1", "3"]])
        self.assertEqual(STATE.lists["l1"][b"b"], [w.STR.encode("2")])

    def test_appends_without_a_get_are_one_list_append_many(self):
        STATE.lists["l2"] = {b"a": [w.U64.encode(1)]}
        l = w.ListState("l2", w.U64)
        w.process(events(b"a", b"b", b"a"), [l], lambda ev, emit: l.add(7))
        self.assertEqual(STATE.calls, {"list_append_many": 1})
        self.assertEqual(STATE.lists["l2"][b"a"], [w.U64.encode(n) for n in [1, 7, 7]])
        self.assertEqual(STATE.lists["l2"][b"b"], [w.U64.encode(7)])

    def test_update_and_clear_are_one_list_put_many(self):
        STATE.lists["l3"] = {b"a": [w.U64.encode(1)], b"b": [w.U64.encode(2)]}
        l = w.ListState("l3", w.U64)

        def each(ev, emit):
            if ev.key == b"a":
                l.update([5, 6])
                l.add(7)
            else:
                l.add(9)  # dropped by the clear that follows
                l.clear()

        w.process(events(b"a", b"b"), [l], each)
        self.assertEqual(STATE.calls, {"list_put_many": 1})
        self.assertEqual(STATE.lists["l3"], {b"a": [w.U64.encode(n) for n in [5, 6, 7]]})

    def test_get_after_add_merges_and_other_keys_keep_their_appends(self):
        STATE.lists["l4"] = {b"a": [w.STR.encode("x")], b"b": [w.STR.encode("y")]}
        l = w.ListState("l4", w.STR)
        got = []

        def each(ev, emit):
            l.add("new")
            if ev.key == b"b":
                got.append(l.get())

        w.process(events(b"a", b"b"), [l], each)
        self.assertEqual(got, [["y", "new"]])
        # The get read both keys: both lists are written whole, nothing appended.
        self.assertEqual(STATE.calls, {"list_get_many": 1, "list_put_many": 1})
        self.assertEqual(STATE.lists["l4"][b"a"], [w.STR.encode(v) for v in ["x", "new"]])
        self.assertEqual(STATE.lists["l4"][b"b"], [w.STR.encode(v) for v in ["y", "new"]])
        STATE.reset_counts()
        w.process(events(b"a"), [l], lambda ev, emit: got.append(l.get()))
        self.assertEqual(got[-1], ["x", "new"])
        self.assertEqual(STATE.calls, {"list_get_many": 1})

    def test_corrupt_element_is_an_operator_error(self):
        STATE.lists["l5"] = {b"k": [w.U64.encode(1), b"\x80"]}
        l = w.ListState("l5", w.U64)
        with self.assertRaises(Err) as e:
            w.process(events(b"k"), [l], lambda ev, emit: l.get())
        self.assertIn("list state 'l5': cannot decode state value", e.exception.value.message)


class MapStateTest(unittest.TestCase):
    def setUp(self):
        STATE.reset_counts()

    def test_get_is_cached_for_the_batch(self):
        STATE.maps["m1"] = {b"a": {w.STR.encode("x"): w.U64.encode(3)}}
        m = w.MapState("m1", w.STR, w.U64)
        got = []

        def each(ev, emit):
            got.append((m.get("x"), m.get("y"), m.contains("x"), m.contains("y")))

        w.process(events(b"a", b"a", b"a"), [m], each)
        self.assertEqual(got, [(3, None, True, False)] * 3)
        self.assertEqual(STATE.calls, {"map_get_many": 2})  # "x" and "y", once each
        STATE.reset_counts()
        w.process(events(b"a"), [m], each)
        self.assertEqual(STATE.calls, {"map_get_many": 2})  # nothing kept between batches

    def test_insert_and_remove_are_one_map_put_many(self):
        STATE.maps["m2"] = {b"a": {w.STR.encode("gone"): w.U64.encode(1)}}
        m = w.MapState("m2", w.STR, w.U64)
        got = []

        def each(ev, emit):
            m.insert("n", len(ev.key))
            m.remove("gone")
            got.append((m.get("n"), m.get("gone")))

        w.process(events(b"a", b"bb"), [m], each)
        self.assertEqual(got, [(1, None), (2, None)])
        self.assertEqual(STATE.calls, {"map_put_many": 1})
        self.assertEqual(
            STATE.maps["m2"],
            {b"a": {w.STR.encode("n"): w.U64.encode(1)}, b"bb": {w.STR.encode("n"): w.U64.encode(2)}},
        )
        # Removing the last entry removes the key's map.
        w.process(events(b"a"), [m], lambda ev, emit: m.remove("n"))
        self.assertNotIn(b"a", STATE.maps["m2"])

    def test_entries_merge_pending_changes_in_encoded_key_order(self):
        enc = w.STR.encode
        STATE.maps["m3"] = {b"k": {enc("bb"): w.U64.encode(1), enc("a"): w.U64.encode(2), enc("ccc"): w.U64.encode(3)}}
        m = w.MapState("m3", w.STR, w.U64)
        got = []

        def each(ev, emit):
            m.insert("z", 9)
            m.remove("ccc")
            m.insert("bb", 5)
            got.append(m.entries())

        w.process(events(b"k"), [m], each)
        # Strings sort by length first: the length prefix is the first byte.
        self.assertEqual(got, [[("a", 2), ("z", 9), ("bb", 5)]])
        self.assertEqual(STATE.calls, {"map_entries": 1, "map_put_many": 1})
        w.process(events(b"k"), [m], lambda ev, emit: got.append(m.entries()))
        self.assertEqual(got[-1], [("a", 2), ("z", 9), ("bb", 5)])

        n = w.MapState("m4", w.U64, w.BOOL)
        w.process(events(b"k"), [n], lambda ev, emit: [n.insert(i, i % 2 == 0) for i in (200, 300, 2)])
        w.process(events(b"k"), [n], lambda ev, emit: got.append(n.entries()))
        # 2 = 02, 300 = ac 02, 200 = c8 01.
        self.assertEqual(got[-1], [(2, True), (300, True), (200, True)])

    def test_corrupt_value_is_an_operator_error(self):
        STATE.maps["m5"] = {b"k": {w.STR.encode("x"): b"\x02"}}
        m = w.MapState("m5", w.STR, w.BOOL)
        with self.assertRaises(Err) as e:
            w.process(events(b"k"), [m], lambda ev, emit: m.get("x"))
        self.assertIn("map state 'm5': cannot decode state value", e.exception.value.message)


class MixedTest(unittest.TestCase):
    def setUp(self):
        STATE.reset_counts()

    def test_value_list_and_map_in_one_process_call(self):
        total = w.ValueState("mix-total", w.F64)
        log = w.ListState("mix-log", w.STR)
        per = w.MapState("mix-per", w.STR, w.U64)

        def each(ev, emit):
            word = ev.value.decode()
            total.set((total.get() or 0.0) + 0.5)
            log.add(word)
            per.insert(word, (per.get(word) or 0) + 1)
            emit(w.event(ev.key, b"", None))

        batch = [Event(k, v, None) for k, v in [(b"a", b"x"), (b"b", b"x"), (b"a", b"y"), (b"a", b"x")]]
        out = w.process(batch, [total, log, per], each)
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
            w.process([Event(None, b"", None)], [l, m], lambda ev, emit: None)
        self.assertIn("without a current key", e.exception.value.message)
        with self.assertRaises(Err) as e:
            w.process(events(b"k"), [l], lambda ev, emit: m.get("x"))
        self.assertIn("'mis-m' is used but was not passed to process()", e.exception.value.message)
        with self.assertRaises(Err) as e:
            l.add(1)
        self.assertIn("without a current key", e.exception.value.message)
        # A failed batch writes nothing.
        with self.assertRaises(ZeroDivisionError):
            w.process(events(b"k"), [l], lambda ev, emit: (l.add(1), 1 / 0))
        self.assertNotIn("mis-l", STATE.lists)
        self.assertEqual(STATE.calls, {})


if __name__ == "__main__":
    unittest.main()
