"""The records ``measure()`` returns: what was asked (:class:`MeasureConfig`), what it ran as
(:class:`RunInfo`) and what it measured (:class:`Measurement`).

Plain data, JSON round-trippable (:meth:`Measurement.to_dict` / :meth:`Measurement.from_dict`), so
that the join (:func:`hwprof.join`) and :func:`hwprof.load_profile` rebuild results from saved
files with no model and no live torch state. Times are seconds (``*_s``), memory bytes (``*_bytes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hwprof.device import MathModes
from hwprof.files import to_jsonable
from hwprof.measuring.alloc_trace import AllocTrace, MemoryTimeline
from hwprof.measuring.probes import PhasePeak, RunPeaks
from hwprof.measuring.timers import TimingStats
from hwprof.spec import Mode

__all__ = ["MeasureConfig", "RunInfo", "MemoryRecord", "Measurement", "Mode", "PHASES", "PHASE_COLUMNS",
           "LAYER_COLUMNS", "OP_COLUMNS"]

PHASES = ("fwd_nograd", "fwd", "bwd", "step")
PHASE_COLUMNS = ("median_s", "iqr_s", "min_s", "mean_s", "reps", "iqr_over_median")
LAYER_COLUMNS = ("type", "is_leaf", "depth", "calls", "fwd_s", "bwd_s", "fwd_incl_s", "bwd_incl_s")
OP_COLUMNS = ("phase", "op", "time_s")


@dataclass(frozen=True)
class MeasureConfig:
    """What a measurement was asked to do (see :func:`hwprof.measure` for each field's meaning).

    ``optimizer`` is a name ("adam", "sgd", ...) or, from the API, an optimizer class, an optimizer,
    or a list of them (stored by name in :meth:`to_dict`). ``amp``: the autocast dtype asked for
    ("bf16" | "fp16"; the run's own, the user's autocast region included, is :attr:`RunInfo.amp`).
    ``kind``: "model" (``model(inputs)``, hwprof's loss and optimizer) or "step" (a user's step). The
    clock and the loss function are arguments of ``measure()``, not configuration: they are code, not data."""

    device: str = "auto"
    mode: Mode = "inference"
    optimizer: Any = None
    per_layer: bool = False
    depth: int | None = None
    per_op: bool = False
    batch: int | None = None
    dtype: str | None = None
    channels_last: bool = False
    budget_s: float = 1.0
    warmup: int = 3
    l2_flush: bool = False
    threads: int | None = None
    nvml_interval_s: float = 0.005
    min_reps: int = 10
    max_reps: int = 1000
    target_iqr: float = 0.02
    layer_reps: int | None = None
    alloc_trace: bool = True
    amp: str | None = None
    kind: str = "model"

    def __post_init__(self) -> None:
        # a torch.device / torch.dtype is stored by name ("cuda:0", "float64"); strings are kept as given
        if not isinstance(self.device, str):
            object.__setattr__(self, "device", str(self.device))
        if self.dtype is not None and not isinstance(self.dtype, str):
            object.__setattr__(self, "dtype", str(self.dtype).removeprefix("torch."))
        if self.mode not in ("inference", "train"):
            raise ValueError(f"mode must be 'inference' or 'train', got {self.mode!r}")
        if self.optimizer is not None and self.mode != "train":
            raise ValueError("an optimizer needs mode='train'")
        if self.kind not in ("model", "step"):
            raise ValueError(f"kind must be 'model' or 'step', got {self.kind!r}")
        if self.amp is not None:
            from hwprof.amp import amp_name, parse_amp
            object.__setattr__(self, "amp", amp_name(parse_amp(self.amp)))

    @property
    def train(self) -> bool:
        return self.mode == "train"

    @property
    def optimizer_name(self) -> str | None:
        """The optimizer spec by name (:func:`hwprof.training.optimizer_label`: "adam", "AdamW+Adam")."""
        from hwprof.training import optimizer_label
        return optimizer_label(self.optimizer)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["optimizer"] = self.optimizer_name
        d["device"] = str(self.device)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasureConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class RunInfo:
    """What the measurement actually ran: the resolved device ("cuda:0"), dtype (of the parameters), batch
    and input shapes, the model's class name (a step's name), whether a moved deep copy of the model
    was measured, and the autocast dtype it ran under ("bf16", "fp16"; None without autocast)."""

    model: str
    device: str
    dtype: str
    batch: int | None
    input_shapes: tuple[Any, ...] = ()
    measured_copy: bool = False
    threads: int | None = None
    amp: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["input_shapes"] = tuple(tuple(s) if isinstance(s, list) else s for s in kw.get("input_shapes", ()))
        return cls(**kw)


@dataclass(frozen=True)
class MemoryRecord:
    """The memory probes of one run (bytes; None where a probe does not apply or failed).

    ``run``: the probes that watch the whole run (NVML, RSS); ``phases``: the CUDA allocator's
    peaks in each timed phase, in the order timed; ``l2_flush_buffer_bytes``: the L2 flush buffer
    live during every CUDA phase (``l2_flush=True``), else None; ``alloc_trace``: the allocator
    trace pass (``alloc_trace=True``), else None; ``extra``: fields of a loaded dict this record
    does not know, kept as they were. :meth:`to_dict` is the flat dict ``Measurement.memory``
    documents; :meth:`from_dict` its inverse."""

    run: RunPeaks = field(default_factory=RunPeaks)
    phases: tuple[PhasePeak, ...] = ()
    l2_flush_buffer_bytes: int | None = None
    alloc_trace: AllocTrace | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def alloc_peak_bytes(self) -> int | None:
        """Largest ``max_memory_allocated`` over the timed phases."""
        return _max_or_none(p.alloc_bytes for p in self.phases)

    @property
    def reserved_peak_bytes(self) -> int | None:
        """Largest ``max_memory_reserved`` over the timed phases."""
        return _max_or_none(p.reserved_bytes for p in self.phases)

    def to_dict(self) -> dict[str, Any]:
        """``alloc_peak_bytes``, ``reserved_peak_bytes``, the whole-run fields, ``l2_flush_buffer_bytes``
        (when set), ``alloc_peak_bytes_<phase>`` / ``reserved_peak_bytes_<phase>`` per phase, and
        ``alloc_trace_<field>`` per :class:`AllocTrace` field (when traced)."""
        out: dict[str, Any] = {"alloc_peak_bytes": self.alloc_peak_bytes,
                               "reserved_peak_bytes": self.reserved_peak_bytes, **self.run.to_dict()}
        if self.l2_flush_buffer_bytes is not None:
            out["l2_flush_buffer_bytes"] = self.l2_flush_buffer_bytes
        for p in self.phases:
            out[_ALLOC_PHASE + p.phase] = p.alloc_bytes
            out[_RESERVED_PHASE + p.phase] = p.reserved_bytes
        if self.alloc_trace is not None:
            out.update({_TRACE + k: v for k, v in self.alloc_trace.to_dict().items()})
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryRecord:
        """Inverse of :meth:`to_dict`; the whole-run peaks are derived from the phases, not read."""
        names = list(dict.fromkeys(k.removeprefix(_ALLOC_PHASE).removeprefix(_RESERVED_PHASE) for k in d
                                   if k.startswith((_ALLOC_PHASE, _RESERVED_PHASE))))
        phases = tuple(PhasePeak(n, d.get(_ALLOC_PHASE + n), d.get(_RESERVED_PHASE + n)) for n in names)
        trace = {k.removeprefix(_TRACE): v for k, v in d.items() if k.startswith(_TRACE)}
        try:
            alloc_trace = AllocTrace.from_dict(trace) if trace else None
        except TypeError:   # an incomplete trace: its fields stay in ``extra``
            alloc_trace = None
        record = cls(RunPeaks.from_dict(d), phases, d.get("l2_flush_buffer_bytes"), alloc_trace)
        known = record.to_dict()
        return dataclasses.replace(record, extra={k: v for k, v in d.items() if k not in known})


_ALLOC_PHASE, _RESERVED_PHASE, _TRACE = "alloc_peak_bytes_", "reserved_peak_bytes_", "alloc_trace_"


def _max_or_none(values: Iterable[int | None]) -> int | None:
    return max((v for v in values if v is not None), default=None)


def _empty_layers() -> pd.DataFrame:
    return pd.DataFrame(columns=list(LAYER_COLUMNS)).rename_axis("module")


@dataclass
class Measurement:
    """Result of :func:`hwprof.measure`.

    ``phases``: one row per timed phase (``PHASE_COLUMNS``); ``timings``: the raw repetition times;
    ``layers``: per-module self and inclusive times (``per_layer=True``); ``layer_sum``: whole-model
    medians beside the per-layer sums, and per phase the ratio sum(per-layer self) / whole of each
    pair of repetitions (a hooked one next to an unhooked one: ``*_paired_ratio`` median,
    ``*_paired_ratio_q25`` / ``_q75``); ``memory_record``: the memory probes (:class:`MemoryRecord`),
    ``memory`` the same as a flat dict of bytes (None where not measurable); ``device``: what torch
    and NVML report about the device; ``math_modes``: the TF32 switches in force during the run;
    ``ops``: per dispatched aten op (``per_op=True``)."""

    config: MeasureConfig
    run: RunInfo
    phases: pd.DataFrame
    timings: dict[str, TimingStats]
    memory_record: MemoryRecord
    device: dict[str, Any]
    math_modes: MathModes
    layers: pd.DataFrame = field(default_factory=_empty_layers)
    layer_sum: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ops: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(OP_COLUMNS)))

    @property
    def memory(self) -> dict[str, Any]:
        """The memory probes as one flat dict of bytes (:meth:`MemoryRecord.to_dict`): ``alloc_peak_bytes``,
        ``reserved_peak_bytes``, ``nvml_used_peak_bytes``, ``nvml_baseline_bytes``, ``nvml_process_bytes``,
        ``rss_peak_bytes``, ``rss_baseline_bytes``, ``ru_maxrss_bytes``, per-phase and ``alloc_trace_*`` fields."""
        return self.memory_record.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (raw repetition times included under ``timings``, the allocator trace's timeline
        under ``memory_timeline`` when there is one); inverse of :meth:`from_dict`."""
        trace = self.memory_record.alloc_trace
        timeline = {"memory_timeline": trace.timeline.to_dict()} if trace is not None and trace.timeline else {}
        return to_jsonable({
            "config": self.config.to_dict(), "run": self.run.to_dict(), "device": self.device,
            "math_modes": self.math_modes.to_dict(), "phases": self.phases,
            "timings": {k: v.to_dict() for k, v in self.timings.items()},
            "layers": self.layers, "layer_sum": self.layer_sum, "memory": self.memory, "notes": self.notes,
            "ops": self.ops, **timeline,
        })

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        """Rebuild a measurement saved with :meth:`to_dict` (NaN times were saved as null)."""
        phases = pd.DataFrame(d.get("phases") or [], columns=["phase", *PHASE_COLUMNS]).set_index("phase")
        layers = pd.DataFrame(d.get("layers") or [], columns=["module", *LAYER_COLUMNS]).set_index("module")
        layers.index = layers.index.astype(str)
        for col in ("fwd_s", "bwd_s", "fwd_incl_s", "bwd_incl_s"):
            layers[col] = layers[col].astype(float)
        timings = {k: TimingStats(list(v.get("times_s") or []), int(v.get("warmup", 0)), str(v.get("device", "cpu")),
                                  str(v.get("stop_reason", ""))) for k, v in (d.get("timings") or {}).items()}
        mm = d.get("math_modes") or {}
        ops = pd.DataFrame(d.get("ops") or [], columns=list(OP_COLUMNS))
        ops["time_s"] = ops["time_s"].astype(float)
        memory = MemoryRecord.from_dict(d.get("memory") or {})
        if d.get("memory_timeline") and memory.alloc_trace is not None:
            memory = dataclasses.replace(memory, alloc_trace=dataclasses.replace(
                memory.alloc_trace, timeline=MemoryTimeline.from_dict(d["memory_timeline"])))
        return cls(config=MeasureConfig.from_dict(d.get("config") or {}), run=RunInfo.from_dict(d["run"]),
                   phases=phases.astype({c: float for c in PHASE_COLUMNS}), timings=timings,
                   memory_record=memory, device=dict(d.get("device") or {}),
                   math_modes=MathModes(str(mm.get("device_type", "cpu")), bool(mm.get("cudnn_tf32", True)),
                                        bool(mm.get("matmul_tf32", False))),
                   layers=layers, layer_sum=dict(d.get("layer_sum") or {}), notes=list(d.get("notes") or []),
                   ops=ops)
