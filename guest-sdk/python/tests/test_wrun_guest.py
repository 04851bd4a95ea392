"""Tests of wrun_guest.py on the host's CPython, with the componentize-py
bindings it imports replaced by fakes: the codec against the vectors of
docs/state-format.md, and one host read and one write per batch.

Run: python3 guest-sdk/python/tests/test_wrun_guest.py (cargo test runs it).
"""

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


class FakeState:
    """The host's value state: name -> key -> bytes; counts calls."""

    def __init__(self):
        self.tables = {}
        self.gets = 0
        self.puts = 0

    @staticmethod
    def _items(p):
        out, start = [], 0
        for end in p.ends:
            out.append(bytes(p.data[start:end]))
            start = end
        return out

    def value_get_many(self, name, keys):
        self.gets += 1
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
        t = self.tables.setdefault(name, {})
        vals = self._items(Packed(values.data, values.ends))
        for k, v, p in zip(self._items(keys), vals, values.present):
            if p:
                t[k] = v
            else:
                t.pop(k, None)


STATE = FakeState()


def install_fakes():
    types_mod = types.ModuleType("wit_world.imports.types")
    for c in (Context, Error, Event, Packed, PackedOptions, StateFormat):
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

    def test_round_trips(self):
        for n in [0, 1, 127, 128, 300, 2**32, 2**64 - 1]:
            self.assertEqual(w.U64.decode(w.U64.encode(n)), n)
        for n in [0, -1, 1, -(2**63), 2**63 - 1, 12345, -12345]:
            self.assertEqual(w.I64.decode(w.I64.encode(n)), n)
        for s in ["", "hi", "日本"]:
            self.assertEqual(w.STR.decode(w.STR.encode(s)), s)

    def test_bad_bytes_are_errors(self):
        for bad in [b"", b"\x80", b"\x00\x00", bytes.fromhex("ffffffffffffffffff02")]:
            with self.assertRaises(ValueError):
                w.U64.decode(bad)
        with self.assertRaises(ValueError):
            w.U64.encode(-1)
        with self.assertRaises(ValueError):
            w.BYTES.decode(b"\x05ab")


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


if __name__ == "__main__":
    unittest.main()
