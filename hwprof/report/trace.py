"""A profile as a Chrome trace (``trace.json``, the Trace Event Format that Perfetto and chrome://tracing open).

Tracks (process ``pid`` / thread ``tid``)::

    pid 1 "<model>: layers"      tid 1 forward (or "forward, no grad"), tid 2 backward (train)
                                   per-layer spans, nested as the modules are, with the per-op spans
                                   of the profiler pass nested under the layer that ran them
                                 tid 3 whole model: the timed phases' medians (unhooked), end to end
    pid 2 "allocator trace pass" counter "live tensors" (MiB) and an instant event at the peak

Layout. hwprof keeps median times per module, not the timestamps of one repetition, so the spans
are those medians laid end to end in call order (the order of each module's first op in the count,
registration order where a module ran no op). A module's span lasts its self time plus its
children's spans; its own ops (e.g. a residual add written in its ``forward``) sit inside it in
dispatch order, between its children, and the rest of its self time follows them. Per-op times
come from a separate torch.profiler pass: where a module's own ops took longer in that pass than
its self time in the hooked pass, they are scaled down to fit (``args.scaled`` < 1; ``args.time_s``
keeps the measured time), so that every op nests inside its layer. The phases' track starts at
the same origin. The allocator-trace pass has its own clock: its counter starts at 0.

Times are integer nanoseconds, written in microseconds (the format's unit) plus a quarter of a
nanosecond, so that a reader that truncates them to nanoseconds (Perfetto) and one that rounds them
both get the integers back, and with them the exact nesting.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hwprof.files import to_jsonable, write_atomic
from hwprof.report.tables import human

if TYPE_CHECKING:
    from hwprof.joining import Profile

__all__ = ["chrome_trace", "write_trace", "PID_LAYERS", "PID_MEMORY", "TID_PHASES"]

PID_LAYERS, PID_MEMORY = 1, 2
TID_PHASES = 3
MIB = 2**20


def _us(ns: int) -> float:
    """Nanoseconds as the format's microseconds, + 0.25 ns (see the module docstring)."""
    return round((ns + 0.25) / 1000, 5)


def _ns(seconds: Any) -> int:
    """Seconds (NaN, None or negative: 0) as integer nanoseconds."""
    s = float(seconds) if seconds is not None else math.nan
    return round(s * 1e9) if s == s and s > 0 else 0


def _meta(pid: int, name: str, tid: int | None = None, sort: int | None = None) -> list[dict[str, Any]]:
    what = "thread" if tid is not None else "process"
    out = [{"ph": "M", "pid": pid, "tid": tid or 0, "name": f"{what}_name", "args": {"name": name}}]
    if sort is not None:
        out.append({"ph": "M", "pid": pid, "tid": tid or 0, "name": f"{what}_sort_index", "args": {"sort_index": sort}})
    return out


def _span(name: str, cat: str, tid: int, start_ns: int, dur_ns: int, args: Mapping[str, Any]) -> dict[str, Any]:
    return {"ph": "X", "name": name, "cat": cat, "pid": PID_LAYERS, "tid": tid, "ts": _us(start_ns),
            "dur": _us(dur_ns), "args": dict(args)}


# ----------------------------------------------------------------------------- the module tree
def _owner(path: str, known: set[str]) -> str | None:
    """``path`` or its nearest ancestor in ``known`` ("" is the root; None when there is none). A module's
    parent is the owner of its parent path; the ops of modules deeper than the timed depth go to their owner."""
    q: str | None = path
    while q is not None:
        if q in known:
            return q
        q = q.rpartition(".")[0] if q else None
    return None


@dataclass
class _Phase:
    """What one phase's track is laid out from: per module its self time and its own ops (position in
    dispatch order, op row), the children of each module, and the ops left without a measured time."""

    phase: str
    self_ns: dict[str, int]
    ops: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    key: dict[str, float] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)
    untimed_ops: int = 0
    scaled_ops: int = 0


def _phase_tree(p: Profile, phase: str) -> _Phase:
    """The modules that ran (``calls`` > 0), their self times in ``phase`` and their own ops from ``p.ops``."""
    lay = p.measurement.layers
    lay = lay[lay["calls"] > 0]
    paths = [str(x) for x in lay.index]
    ph = _Phase(phase, {path: _ns(t) for path, t in zip(paths, lay[f"{phase}_s"], strict=True)})
    known = set(paths)
    ops = p.ops[p.ops["phase"] == phase] if len(p.ops) and "phase" in p.ops else pd.DataFrame()
    for pos, (_, row) in enumerate(ops.iterrows()):
        owner = _owner(str(row["module"]), known)
        if owner is None:
            continue
        if not _ns(row.get("time_s")):
            ph.untimed_ops += 1
            continue
        ph.ops.setdefault(owner, []).append((pos, row))
    for path in paths:
        ph.children.setdefault(path, [])
        parent = _owner(path.rpartition(".")[0], known) if path else None
        (ph.children.setdefault(parent, []) if parent is not None else ph.roots).append(path)
    _order(ph)
    return ph


def _order(ph: _Phase) -> None:
    """Sort every module's children by the first dispatched op of their subtree; a subtree without ops
    keeps its place after its previous sibling (registration order)."""
    def first(path: str) -> float:
        own = [pos for pos, _ in ph.ops.get(path, [])]
        ph.first[path] = min([*own, *(first(c) for c in ph.children[path])], default=math.inf)
        return ph.first[path]

    for r in ph.roots:
        first(r)
    for kids in [*ph.children.values(), ph.roots]:
        last = -math.inf
        for k in kids:
            last = ph.first[k] if ph.first[k] != math.inf else last
            ph.key[k] = last
        kids.sort(key=ph.key.__getitem__)


# ----------------------------------------------------------------------------- spans
def _layer_args(p: Profile, path: str, phase: str, self_ns: int) -> dict[str, Any]:
    """A layer span's annotations: type, calls and this phase's FLOPs, bytes, self time, achieved FLOP/s and
    intensity; the join's roofline verdict (bound, efficiency, roof) over the profile's headline phases."""
    m = p.measurement.layers.loc[path]
    args: dict[str, Any] = {"path": path or "(root)", "type": str(m["type"]), "calls": int(m["calls"]),
                            "self_s": self_ns / 1e9, "incl_s": m.get(f"{phase}_incl_s")}
    if path in p.layers.index:
        row = p.layers.loc[path]
        flops, nbytes = float(row.get(f"flops_{phase}", math.nan)), float(row.get(f"bytes_{phase}", math.nan))
        args.update({
            "flops": flops, "bytes": nbytes, "achieved_flop_per_s": flops / (self_ns / 1e9) if self_ns else None,
            "intensity": flops / nbytes if nbytes else None, "bound": row["bound"], "efficiency": row["efficiency"],
            "roof": row["roof_key"], "roofline_over": "fwd+bwd" if p.config.get("mode") == "train" else "fwd",
            "variant": row.get("variant") or None, "output_shapes": row.get("output_shapes")})
    return to_jsonable(args)


def _op_args(row: Any, scale: float) -> dict[str, Any]:
    keys = ("op", "op_class", "input_shapes", "output_shapes", "dtype", "flops", "bytes", "time_s",
            "achieved_flop_per_s", "intensity", "bound", "efficiency", "roof_key")
    return to_jsonable({**{k: row.get(k) for k in keys}, "scaled": scale})


def _place(p: Profile, ph: _Phase, path: str, start_ns: int, tid: int, out: list[dict[str, Any]]) -> int:
    """Lay ``path``'s span from ``start_ns`` (its children and own ops inside it, see the module docstring),
    append the spans to ``out`` and return where it ends."""
    own = ph.ops.get(path, [])
    self_ns = ph.self_ns.get(path, 0)
    total = sum(_ns(r["time_s"]) for _, r in own)
    scale = min(1.0, self_ns / total) if total else 1.0
    ph.scaled_ops += len(own) if scale < 1 else 0
    kids = ph.children.get(path, [])
    items = sorted([(ph.key[c], 1, j) for j, c in enumerate(kids)] + [(pos, 0, i) for i, (pos, _) in enumerate(own)])
    t, used = start_ns, 0
    for _, is_child, j in items:
        if is_child:
            t = _place(p, ph, kids[j], t, tid, out)
            continue
        row = own[j][1]
        d = int(_ns(row["time_s"]) * scale)
        if d > 0:
            out.append(_span(str(row["op"]), "op", tid, t, d, _op_args(row, scale)))
        t, used = t + d, used + d
    end = t + max(self_ns - used, 0)
    if end > start_ns:
        name = f"{path or '(root)'} ({p.measurement.layers.loc[path, 'type']})"
        out.append(_span(name, "layer", tid, start_ns, end - start_ns, _layer_args(p, path, ph.phase, self_ns)))
    return end


def _phases(p: Profile) -> list[tuple[str, str]]:
    """(phase key of the per-layer columns, track name) in the order they run."""
    if p.config.get("mode") == "train":
        return [("fwd", "forward"), ("bwd", "backward")]
    return [("fwd", "forward (no grad)")]


def _layer_tracks(p: Profile) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The per-layer tracks, one phase after the other; and how many ops had no time or were scaled."""
    events: list[dict[str, Any]] = []
    t, counts = 0, {"ops_without_time": 0, "ops_scaled_to_fit": 0}
    if p.measurement.layers.empty:
        return events, counts
    for tid, (phase, name) in enumerate(_phases(p), start=1):
        events += _meta(PID_LAYERS, name, tid, sort=tid)
        ph = _phase_tree(p, phase)
        for root in ph.roots:
            t = _place(p, ph, root, t, tid, events)
        counts["ops_without_time"] += ph.untimed_ops
        counts["ops_scaled_to_fit"] += ph.scaled_ops
    return events, counts


def _phase_track(phases: pd.DataFrame) -> list[dict[str, Any]]:
    """The timed phases' median (unhooked) times, end to end, on their own track."""
    events = _meta(PID_LAYERS, "whole model (timed phases, median)", TID_PHASES, sort=TID_PHASES)
    t = 0
    for name, row in phases.iterrows():
        d = _ns(row["median_s"])
        if d:
            events.append(_span(str(name), "phase", TID_PHASES, t, d, to_jsonable(row.to_dict())))
        t += d
    return events


def _memory_track(p: Profile) -> Iterator[dict[str, Any]]:
    """The allocator-trace pass's live tensor bytes as a counter (MiB), and the peak as an instant event."""
    trace = p.measurement.memory_record.alloc_trace
    tl = trace.timeline if trace is not None else None
    if tl is None or not tl.time_s:
        return
    yield from _meta(PID_MEMORY, "allocator trace pass (torch.profiler, profile_memory=True)", sort=PID_MEMORY)
    yield from _meta(PID_MEMORY, "allocator events", 1)
    for t_s, live in zip(tl.time_s, tl.live_bytes, strict=True):
        yield {"ph": "C", "name": "live tensors", "pid": PID_MEMORY, "tid": 1, "ts": _us(_ns(t_s)),
               "args": {"MiB": live / MIB}}
    i = tl.peak_index
    yield {"ph": "i", "s": "t", "name": f"peak {human(tl.live_bytes[i], 'B', 1024)} in {tl.op[i] or '-'}",
           "pid": PID_MEMORY, "tid": 1, "ts": _us(_ns(tl.time_s[i])),
           "args": {"live_bytes": tl.live_bytes[i], "op": tl.op[i]}}


def chrome_trace(p: Profile) -> dict[str, Any]:
    """The profile as a Chrome trace (JSON object format): the tracks of the module docstring, ``X`` spans
    sorted by track, start and longest first, and in ``otherData`` the run and how the spans were laid out."""
    cfg = p.config
    layers, counts = _layer_tracks(p)
    spans = [e for e in layers if e["ph"] == "X"]
    spans.sort(key=lambda e: (e["tid"], e["ts"], -e["dur"], e["cat"] != "layer"))   # a layer before its same-size op
    events = [*_meta(PID_LAYERS, f"{cfg.get('model')}: layers (hooked pass), ops (profiler pass)", sort=PID_LAYERS),
              *[e for e in layers if e["ph"] == "M"], *spans, *_phase_track(p.measurement.phases), *_memory_track(p)]
    other = {"model": cfg.get("model"), "device": p.ceilings.device_name, "mode": cfg.get("mode"),
             "dtype": cfg.get("dtype"), "batch": cfg.get("batch"), **counts,
             "layout": "per-layer spans: median self times of the hooked pass laid end to end in call order; per-op "
                       "spans: the profiler pass's times, scaled down where a layer's own ops exceed its self time"}
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": to_jsonable(other)}


def write_trace(p: Profile, path: str | Path) -> Path:
    """Write :func:`chrome_trace` of ``p`` to ``path`` (compact JSON, atomically)."""
    import json

    return write_atomic(path, json.dumps(chrome_trace(p), separators=(",", ":")) + "\n")
