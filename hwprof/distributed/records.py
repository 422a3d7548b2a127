"""Records of a distributed measurement: one :class:`RankRecord` per rank, gathered on rank 0 into a
:class:`DistributedMeasurement` (plain data, JSON round-trippable, like :class:`hwprof.measuring.records.Measurement`).

Derived tables (all times in seconds, memory in bytes):

* :meth:`DistributedMeasurement.rank_table`: per rank, the median of each timed phase, their sum
  (``iteration_s``), communication and exposed communication per iteration, and memory peaks;
* :meth:`DistributedMeasurement.spread`: per column, ``(max - min) / median`` across ranks;
* :attr:`DistributedMeasurement.slowest_rank`: the rank with the largest ``iteration_s``: the one
  every other rank waits for at each collective;
* :meth:`DistributedMeasurement.collectives`: the collectives of one step with their time, algbw
  and busbw (:func:`hwprof.distributed.collectives.collective_table`), each call's time the median
  over ranks;
* :meth:`DistributedMeasurement.phase_table`: compute, communication and exposed communication per
  rank and phase (:mod:`hwprof.distributed.timeline`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hwprof.distributed.collectives import Collective, collective_table
from hwprof.distributed.timeline import PhaseComm
from hwprof.files import to_jsonable
from hwprof.measuring.records import Measurement

__all__ = ["RankRecord", "DistributedMeasurement", "RANK_COLUMNS", "user_paths"]

RANK_COLUMNS = ("host", "device", "fwd_nograd_s", "fwd_s", "bwd_s", "step_s", "iteration_s", "comm_s",
                "exposed_comm_s", "alloc_trace_peak_bytes", "rss_peak_bytes", "alloc_peak_bytes", "local_param_bytes",
                "resident_bytes")


@dataclass
class RankRecord:
    """What one rank measured: its :class:`Measurement` (timed phases, memory probes), the collectives of one
    step as the dispatcher saw them (``collectives``) with each call's time from the backend's timeline
    (``collective_times_s``; NaN where unpaired), compute/communication per phase (``phases``), the backend
    collectives the dispatcher did not see per profiled iteration (``unseen``), the bytes held by the
    wrapper outside parameters (``resident_bytes``) and this rank's parameter bytes (``local_param_bytes``)."""

    rank: int
    world_size: int
    host: str
    measurement: Measurement
    collectives: tuple[Collective, ...] = ()
    collective_times_s: tuple[float, ...] = ()
    phases: tuple[PhaseComm, ...] = ()
    unseen: tuple[tuple[str, ...], ...] = ()
    resident_bytes: int = 0
    local_param_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "rank": self.rank, "world_size": self.world_size, "host": self.host,
            "measurement": self.measurement.to_dict(), "collectives": [c.to_dict() for c in self.collectives],
            "collective_times_s": list(self.collective_times_s),
            "phases": [dataclasses.asdict(p) for p in self.phases], "unseen": [list(u) for u in self.unseen],
            "resident_bytes": self.resident_bytes, "local_param_bytes": self.local_param_bytes, "notes": self.notes})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankRecord:
        return cls(rank=int(d["rank"]), world_size=int(d["world_size"]), host=str(d.get("host", "")),
                   measurement=Measurement.from_dict(d["measurement"]),
                   collectives=tuple(Collective.from_dict(c) for c in d.get("collectives") or []),
                   collective_times_s=tuple(math.nan if t is None else float(t)
                                            for t in d.get("collective_times_s") or []),
                   phases=tuple(PhaseComm(**p) for p in d.get("phases") or []),
                   unseen=tuple(tuple(u) for u in d.get("unseen") or []),
                   resident_bytes=int(d.get("resident_bytes") or 0),
                   local_param_bytes=int(d.get("local_param_bytes") or 0), notes=list(d.get("notes") or []))

    def row(self) -> dict[str, Any]:
        """This rank's row of :meth:`DistributedMeasurement.rank_table`."""
        m = self.measurement
        med = {ph: float(m.phases.loc[ph, "median_s"]) for ph in m.phases.index}
        mem = m.memory
        return {"rank": self.rank, "host": self.host, "device": m.run.device,
                **{f"{ph}_s": med.get(ph, math.nan) for ph in ("fwd_nograd", "fwd", "bwd", "step")},
                "iteration_s": sum(med.values()), "comm_s": sum(p.comm_s for p in self.phases),
                "exposed_comm_s": sum(p.exposed_comm_s for p in self.phases),
                "alloc_trace_peak_bytes": mem.get("alloc_trace_peak_bytes"), "rss_peak_bytes": mem.get("rss_peak_bytes"),
                "alloc_peak_bytes": mem.get("alloc_peak_bytes"), "local_param_bytes": self.local_param_bytes,
                "resident_bytes": self.resident_bytes}


@dataclass
class DistributedMeasurement:
    """The gathered result of :func:`hwprof.distributed.measure`: ``ranks`` holds every rank's record on rank 0
    (``gathered=True``) and only the caller's own record on the other ranks."""

    model: str
    parallel: str
    backend: str
    world_size: int
    ranks: list[RankRecord]
    gathered: bool = True
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ tables
    def rank_table(self) -> pd.DataFrame:
        """One row per rank (``RANK_COLUMNS``), index ``rank``; columns that are empty on every rank dropped."""
        df = pd.DataFrame([r.row() for r in self.ranks]).set_index("rank")
        df = df[[c for c in RANK_COLUMNS if c in df.columns]]
        return df.dropna(axis=1, how="all")

    def spread(self) -> dict[str, float]:
        """Per numeric column of :meth:`rank_table`: ``(max - min) / median`` across ranks (NaN for a zero median)."""
        out = {}
        for col, s in self.rank_table().select_dtypes("number").items():
            vals = s.dropna().astype(float)
            if len(vals):
                med = float(vals.median())
                out[str(col)] = (float(vals.max()) - float(vals.min())) / med if med else math.nan
        return out

    @property
    def slowest_rank(self) -> int:
        """The rank with the largest sum of phase medians (``iteration_s``)."""
        t = self.rank_table()["iteration_s"]
        return int(t.idxmax())

    def collectives(self, by_phase: bool = True) -> pd.DataFrame:
        """The collectives of one step (rank 0's calls; per call the median time over the ranks that recorded the
        same number of calls) as :func:`collective_table`."""
        first = self.ranks[0]
        same = [r for r in self.ranks if len(r.collective_times_s) == len(first.collectives)]
        times = [statistics.median(v) if (v := [r.collective_times_s[i] for r in same
                                                  if not math.isnan(r.collective_times_s[i])]) else math.nan
                 for i in range(len(first.collectives))]
        return collective_table(first.collectives, times, by_phase=by_phase)

    def phase_table(self) -> pd.DataFrame:
        """One row per (rank, phase): wall, compute, communication, exposed communication (s) and the share of
        the communication overlapped by compute."""
        rows = [{"rank": r.rank, "phase": p.phase, "wall_s": p.wall_s, "compute_s": p.compute_s, "comm_s": p.comm_s,
                 "exposed_comm_s": p.exposed_comm_s, "overlap": p.overlap, "iterations": p.iterations}
                for r in self.ranks for p in r.phases]
        return pd.DataFrame(rows, columns=["rank", "phase", "wall_s", "compute_s", "comm_s", "exposed_comm_s",
                                           "overlap", "iterations"])

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"model": self.model, "parallel": self.parallel, "backend": self.backend,
                            "world_size": self.world_size, "gathered": self.gathered, "notes": self.notes,
                            "ranks": [r.to_dict() for r in self.ranks]})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistributedMeasurement:
        return cls(model=str(d["model"]), parallel=str(d["parallel"]), backend=str(d["backend"]),
                   world_size=int(d["world_size"]), ranks=[RankRecord.from_dict(r) for r in d["ranks"]],
                   gathered=bool(d.get("gathered", True)), notes=list(d.get("notes") or []))


def user_paths(m: Measurement, parallel: str) -> Measurement:
    """``m`` with its per-layer rows named as in the user's model: DDP measures the wrapper, whose root is ""
    and whose ``module`` is the user's root, so ``module.x`` becomes ``x`` and the wrapper's own row is
    dropped. FSDP2 shards the model in place: its paths are the user's already."""
    if parallel != "ddp" or m.layers.empty:
        return m
    layers = m.layers.drop(index=[p for p in m.layers.index if p == ""])
    layers.index = ["" if p == "module" else p.removeprefix("module.") for p in layers.index]
    layers["depth"] = [0 if p == "" else p.count(".") + 1 for p in layers.index]
    layers = layers.rename_axis("module")
    return dataclasses.replace(m, layers=layers)
