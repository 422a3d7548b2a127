"""The records ``measure()`` returns: what was asked (:class:`MeasureConfig`), what it ran as
(:class:`RunInfo`) and what it measured (:class:`Measurement`).

Plain data, JSON round-trippable (:meth:`Measurement.to_dict` / :meth:`Measurement.from_dict`), so
that the join (:func:`hwprof.join`) and :func:`hwprof.load_profile` rebuild results from saved
files with no model and no live torch state. Times are seconds (``*_s``), memory bytes (``*_bytes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from hwprof.device import MathModes
from hwprof.files import to_jsonable
from hwprof.measuring.timers import TimingStats

__all__ = ["MeasureConfig", "RunInfo", "Measurement", "Mode", "PHASES", "PHASE_COLUMNS", "LAYER_COLUMNS",
           "OP_COLUMNS"]

Mode = Literal["inference", "train"]
PHASES = ("fwd_nograd", "fwd", "bwd", "step")
PHASE_COLUMNS = ("median_s", "iqr_s", "min_s", "mean_s", "reps", "iqr_over_median")
LAYER_COLUMNS = ("type", "is_leaf", "depth", "calls", "fwd_s", "bwd_s", "fwd_incl_s", "bwd_incl_s")
OP_COLUMNS = ("phase", "op", "time_s")


@dataclass(frozen=True)
class MeasureConfig:
    """What a measurement was asked to do (see :func:`hwprof.measure` for each field's meaning).

    ``optimizer`` is a name ("adam", "sgd", ...) or, from the API, an optimizer class (stored by
    name in :meth:`to_dict`). The clock and the loss function are arguments of ``measure()``, not
    configuration: they are code, not data."""

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

    def __post_init__(self) -> None:
        if self.mode not in ("inference", "train"):
            raise ValueError(f"mode must be 'inference' or 'train', got {self.mode!r}")
        if self.optimizer is not None and self.mode != "train":
            raise ValueError("an optimizer needs mode='train'")

    @property
    def train(self) -> bool:
        return self.mode == "train"

    @property
    def optimizer_name(self) -> str | None:
        o = self.optimizer
        if o is None or isinstance(o, str):
            return o
        return str(getattr(o, "__name__", type(o).__name__))

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
    """What the measurement actually ran: the resolved device ("cuda:0"), dtype, batch and input
    shapes, the model's class name, and whether a moved deep copy of the model was measured."""

    model: str
    device: str
    dtype: str
    batch: int | None
    input_shapes: tuple[Any, ...] = ()
    measured_copy: bool = False
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["input_shapes"] = tuple(tuple(s) if isinstance(s, list) else s for s in kw.get("input_shapes", ()))
        return cls(**kw)


def _empty_layers() -> pd.DataFrame:
    return pd.DataFrame(columns=list(LAYER_COLUMNS)).rename_axis("module")


@dataclass
class Measurement:
    """Result of :func:`hwprof.measure`.

    ``phases``: one row per timed phase (``PHASE_COLUMNS``); ``timings``: the raw repetition times;
    ``layers``: per-module self and inclusive times (``per_layer=True``); ``layer_sum``: whole-model
    medians beside the per-layer sums; ``memory``: the probes' peaks (bytes; None where not
    measurable); ``device``: what torch and NVML report about the device; ``math_modes``: the TF32
    switches in force during the run; ``ops``: per dispatched aten op (``per_op=True``)."""

    config: MeasureConfig
    run: RunInfo
    phases: pd.DataFrame
    timings: dict[str, TimingStats]
    memory: dict[str, Any]
    device: dict[str, Any]
    math_modes: MathModes
    layers: pd.DataFrame = field(default_factory=_empty_layers)
    layer_sum: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ops: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(OP_COLUMNS)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (raw repetition times included under ``timings``); inverse of :meth:`from_dict`."""
        return to_jsonable({
            "config": self.config.to_dict(), "run": self.run.to_dict(), "device": self.device,
            "math_modes": self.math_modes.to_dict(), "phases": self.phases,
            "timings": {k: v.to_dict() for k, v in self.timings.items()},
            "layers": self.layers, "layer_sum": self.layer_sum, "memory": self.memory, "notes": self.notes,
            "ops": self.ops,
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
        return cls(config=MeasureConfig.from_dict(d.get("config") or {}), run=RunInfo.from_dict(d["run"]),
                   phases=phases.astype({c: float for c in PHASE_COLUMNS}), timings=timings,
                   memory=dict(d.get("memory") or {}), device=dict(d.get("device") or {}),
                   math_modes=MathModes(str(mm.get("device_type", "cpu")), bool(mm.get("cudnn_tf32", True)),
                                        bool(mm.get("matmul_tf32", False))),
                   layers=layers, layer_sum=dict(d.get("layer_sum") or {}), notes=list(d.get("notes") or []),
                   ops=ops)
