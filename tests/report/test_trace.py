"""trace.json (hwprof.report.trace): Chrome trace event structure, spans nested as the modules are and laid
in call order, ops inside their layer, the phases' track and the memory counter."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from report_helpers import MS, OP_S, SELF_S, TIMELINE, synthetic_profile

import hwprof
from hwprof.report.trace import PID_LAYERS, PID_MEMORY, TID_PHASES, chrome_trace

FIXTURE = Path(__file__).parents[1] / "data" / "saved_profile"   # train mode, SGD, no memory timeline


def _ns_round(us: float) -> int:
    return round(us * 1000)


def _ns_trunc(us: float) -> int:
    return int(us * 1000)


def validate(trace: dict[str, Any], to_ns: Callable[[float], int] = _ns_trunc) -> dict[int, int | None]:
    """Check the Trace Event Format fields and that the ``X`` spans of every thread nest (none overlaps another
    partly) once their times are read as integer nanoseconds by ``to_ns``; returns each span's innermost
    enclosing span (index into traceEvents, or None)."""
    assert set(trace) >= {"traceEvents", "displayTimeUnit"}
    json.dumps(trace, allow_nan=False)   # strict JSON: no NaN or Infinity
    by_thread: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    for i, e in enumerate(trace["traceEvents"]):
        assert e["ph"] in ("X", "M", "C", "i") and isinstance(e["pid"], int) and isinstance(e["tid"], int), e
        assert isinstance(e["name"], str) and e["name"], e
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name", "process_sort_index", "thread_sort_index"), e
            continue
        assert isinstance(e["ts"], float) and e["ts"] >= 0, e
        if e["ph"] == "X":
            assert isinstance(e["dur"], float) and e["dur"] > 0 and isinstance(e["args"], dict), e
            start = to_ns(e["ts"])
            by_thread[(e["pid"], e["tid"])].append((start, start + to_ns(e["dur"]), i))
        if e["ph"] == "C":
            assert e["args"] and all(isinstance(v, (int, float)) for v in e["args"].values()), e
    parent: dict[int, int | None] = {}
    for spans in by_thread.values():
        stack: list[tuple[int, int, int]] = []
        for start, end, i in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1][1] <= start:
                stack.pop()
            assert not stack or end <= stack[-1][1], f"span {trace['traceEvents'][i]} overlaps its enclosing span"
            parent[i] = stack[-1][2] if stack else None
            stack.append((start, end, i))
    return parent


def _spans(trace: dict[str, Any], cat: str, tid: int | None = None) -> list[dict[str, Any]]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == cat and (tid is None or e["tid"] == tid)]


def _ns(e: dict[str, Any]) -> tuple[int, int]:
    start = _ns_trunc(e["ts"])
    return start, start + _ns_trunc(e["dur"])


def test_spans_nest_as_modules_in_call_order_with_exact_times() -> None:
    t = chrome_trace(synthetic_profile())
    validate(t)
    layers = {e["args"]["path"]: _ns(e) for e in _spans(t, "layer", 1)}
    us = 1000   # ns per microsecond; self times (ms): block.conv 3, block.relu 1, block 0.5, head 2, root 0.25
    # `head` is registered first but runs after `block`: block.conv [0, 3 ms], block.relu [3, 4], then the
    # block's own add inside the block's 0.5 ms of self time [4, 4.5]; head [4.5, 6.5]; root [0, 6.75]
    assert layers == {"block.conv": (0, 3000 * us), "block.relu": (3000 * us, 4000 * us),
                      "block": (0, 4500 * us), "head": (4500 * us, 6500 * us), "(root)": (0, 6750 * us)}
    ops = [(e["name"], _ns(e)) for e in _spans(t, "op", 1)]
    # profiler times 2.5, 1, 1, 2 ms; the add's 1 ms is scaled to the block's 0.5 ms of self time
    assert ops == [("aten.convolution", (0, 2500 * us)), ("aten.relu", (3000 * us, 4000 * us)),
                   ("aten.add", (4000 * us, 4500 * us)), ("aten.addmm", (4500 * us, 6500 * us))]


def test_every_op_sits_inside_the_layer_that_ran_it() -> None:
    p = synthetic_profile()
    t = chrome_trace(p)
    parent = validate(t)
    events = t["traceEvents"]
    owner = {"aten.convolution": "block.conv", "aten.relu": "block.relu", "aten.add": "block", "aten.addmm": "head"}
    for i, e in enumerate(events):
        if e["ph"] == "X" and e["cat"] == "op":
            enclosing = parent[i]
            assert enclosing is not None and events[enclosing]["args"]["path"] == owner[e["name"]]


def test_span_annotations() -> None:
    p = synthetic_profile()
    t = chrome_trace(p)
    conv = next(e for e in _spans(t, "layer", 1) if e["args"]["path"] == "block.conv")["args"]
    # Conv2d(4, 4, 3, padding=1) on 1x4x8x8: MACs = 8*8 outputs * 4 out-ch * 4 in-ch * 9 = 9216 -> 18432 FLOPs;
    # bytes: read input 1x4x8x8 (1024) + weight 4*4*9*4 (576) + bias 16 = 1616, write 1024 -> 2640
    assert (conv["flops"], conv["bytes"], conv["self_s"]) == (18432, 2640, pytest.approx(SELF_S["block.conv"]))
    assert conv["achieved_flop_per_s"] == pytest.approx(18432 / (3 * MS))       # 6.144 MFLOP/s
    assert conv["intensity"] == pytest.approx(18432 / 2640)
    row = p.layers.loc["block.conv"]
    assert (conv["bound"], conv["roof"], conv["efficiency"]) == (row["bound"], "fp32", pytest.approx(row["efficiency"]))
    add = next(e for e in _spans(t, "op", 1) if e["name"] == "aten.add")["args"]
    assert add["time_s"] == pytest.approx(OP_S[2]) and add["scaled"] == pytest.approx(0.5)   # 0.5 ms / 1 ms
    assert t["otherData"]["ops_scaled_to_fit"] == 1 and t["otherData"]["ops_without_time"] == 0


def test_phases_track_and_memory_counter() -> None:
    t = chrome_trace(synthetic_profile())
    validate(t)
    phases = [e for e in t["traceEvents"] if e["ph"] == "X" and e["tid"] == TID_PHASES]
    assert [(e["name"], _ns(e)) for e in phases] == [("fwd_nograd", (0, 7_000_000))]   # the 7 ms median
    counter = [e for e in t["traceEvents"] if e["ph"] == "C"]
    assert [c["pid"] for c in counter] == [PID_MEMORY] * 4
    assert [c["args"]["MiB"] * 2**20 for c in counter] == pytest.approx(list(TIMELINE.live_bytes))
    assert [_ns_trunc(c["ts"]) for c in counter] == [0, 1_000_000, 2_000_000, 3_000_000]   # 0, 1, 2, 3 ms
    peak = next(e for e in t["traceEvents"] if e["ph"] == "i")
    assert peak["name"] == "peak 700B in aten::relu" and peak["args"]["live_bytes"] == 700
    names = {e["args"]["name"] for e in t["traceEvents"] if e["ph"] == "M" and e["name"].endswith("_name")}
    assert {"forward (no grad)", "whole model (timed phases, median)", "allocator events"} <= names


def test_without_a_timeline_there_is_no_memory_track() -> None:
    t = chrome_trace(synthetic_profile(timeline=None))
    assert not [e for e in t["traceEvents"] if e["pid"] == PID_MEMORY]


@pytest.mark.parametrize("to_ns", [_ns_trunc, _ns_round])
def test_train_profile_forward_then_backward(to_ns: Callable[[float], int]) -> None:
    """The saved train-mode fixture: a forward and a backward track, both nested however a reader turns
    microseconds into nanoseconds; one span per module with time in each phase; backward after forward."""
    p = hwprof.load_profile(FIXTURE)
    t = chrome_trace(p)
    validate(t, to_ns)
    lay = p.measurement.layers
    for tid, phase in ((1, "fwd"), (2, "bwd")):
        got = sorted(e["args"]["path"] for e in _spans(t, "layer", tid))
        timed = {str(x) or "(root)" for x in lay.index[(lay[f"{phase}_incl_s"] > 0) & (lay["calls"] > 0)]}
        assert got == sorted(timed)
        for e in _spans(t, "layer", tid):   # a leaf's span is its self time
            path = "" if e["args"]["path"] == "(root)" else e["args"]["path"]
            if bool(lay.loc[path, "is_leaf"]):
                assert e["dur"] * 1e-6 == pytest.approx(lay.loc[path, f"{phase}_s"], abs=1e-9)
    fwd_end = max(_ns(e)[1] for e in _spans(t, "layer", 1))
    assert min(_ns(e)[0] for e in _spans(t, "layer", 2)) >= fwd_end
    assert len(_spans(t, "op")) == int(p.ops["time_s"].notna().sum())   # every timed op, none lost
    assert not math.isnan(sum(e["dur"] for e in _spans(t, "op")))


def test_profile_save_writes_the_trace(tmp_path: Path) -> None:
    p = synthetic_profile()
    p.save(tmp_path / "p", html=False)
    saved = json.loads((tmp_path / "p" / "trace.json").read_text())
    validate(saved)
    assert saved == json.loads(json.dumps(chrome_trace(p)))
    assert {e["pid"] for e in saved["traceEvents"]} == {PID_LAYERS, PID_MEMORY}
