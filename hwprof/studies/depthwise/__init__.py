"""The depthwise-convolution study: why ~C x fewer FLOPs is nowhere near C x faster.

Operators at a matched shape, input and output both ``N x C x H x W`` (stride 1, padding k//2,
no bias): dense 3x3, grouped 3x3 (g = 2, 8, 32), depthwise 3x3 / 5x5 / 7x7, pointwise 1x1 and
the depthwise-separable block (depthwise 3x3 then pointwise 1x1); fp32 / bf16, NCHW /
channels_last, forward / forward+backward, over a grid of (C, H=W, N).

Every number comes from hwprof's own stages, never a re-implementation:

* FLOPs, MACs, bytes: :func:`hwprof.count` (aten-level, fake tensors);
  bytes = bytes read of tensor inputs + bytes written of outputs per aten op.
* time: :func:`hwprof.measuring.timers.time_fn` (median of repetitions).
* roofs: :func:`hwprof.measure_ceilings` (measured on this machine).
* roofline columns: :func:`hwprof.roofline.derive` (intensity, achieved FLOP/s and bytes/s,
  attainable = min(roof, bandwidth x intensity), % of each roof, bound, above_roof), with the
  roof of the math mode in force, :func:`hwprof.roofline.roof_key` for a convolution: fp32 ->
  "tf32" on CUDA while ``torch.backends.cudnn.allow_tf32`` is on (the default), bf16 -> "bf16".
  A point above its roof (Winograd/FFT, caches) is flagged, never clipped.

Analytic anchor (what the counter must give, tested in tests/studies): depthwise k x k, fp32,
FLOPs = 2 k^2 N C H W and bytes = 4 (2 N C H W + k^2 C), so intensity -> k^2 / 4 = 2.25 FLOP/byte
for k = 3 at large N H W; a dense k x k conv has FLOPs = 2 k^2 C^2 N H W and intensity -> C k^2 / 4.

Also here: the FasterNet-style table (Chen et al., "Run, Don't Walk", CVPR 2023, Table 1),
MobileNetV1 against its dense twin, and Nsight Compute counters (``ncu``) per operator.
Nothing here prints: the CLI (:mod:`hwprof.cli.study`) does, through the ``progress`` callback
and the returned :class:`StudyResult`.

The study is split by job: :mod:`.operators` (the operators), :mod:`.measure` (one measurement),
:mod:`.sweep` (the grid and its measurement), :mod:`.metrics` (roofs and roofline columns),
:mod:`.summary` (headline and Markdown summary), :mod:`.fasternet` (the FasterNet-style table),
:mod:`.models` (model level), :mod:`.counters` (Nsight Compute and the single-point runner behind
``python -m hwprof.studies.depthwise``), :mod:`.plan` (the dtypes the device has units for, the
``--quick`` time budget) and :mod:`.study` (:func:`compute_study` measures, :func:`save_study`
writes, :func:`run_study` does both). Every public name is re-exported here.
"""

from __future__ import annotations

from hwprof.errors import is_oom as is_oom
from hwprof.studies.depthwise.counters import NCU_METRICS as NCU_METRICS
from hwprof.studies.depthwise.counters import NVTX_RANGE as NVTX_RANGE
from hwprof.studies.depthwise.counters import _main as _main
from hwprof.studies.depthwise.counters import ncu_command as ncu_command
from hwprof.studies.depthwise.counters import ncu_path as ncu_path
from hwprof.studies.depthwise.counters import parse_ncu_csv as parse_ncu_csv
from hwprof.studies.depthwise.counters import run_counters as run_counters
from hwprof.studies.depthwise.counters import summarise_kernels as summarise_kernels
from hwprof.studies.depthwise.fasternet import FASTERNET_OPS as FASTERNET_OPS
from hwprof.studies.depthwise.fasternet import FASTERNET_PAPER as FASTERNET_PAPER
from hwprof.studies.depthwise.fasternet import FASTERNET_SHAPES as FASTERNET_SHAPES
from hwprof.studies.depthwise.fasternet import PartialConv as PartialConv
from hwprof.studies.depthwise.fasternet import build_fasternet_stack as build_fasternet_stack
from hwprof.studies.depthwise.fasternet import fasternet_table as fasternet_table
from hwprof.studies.depthwise.measure import CountFn as CountFn
from hwprof.studies.depthwise.measure import Progress as Progress
from hwprof.studies.depthwise.measure import TimeFn as TimeFn
from hwprof.studies.depthwise.measure import log as log
from hwprof.studies.depthwise.measure import point_callable as point_callable
from hwprof.studies.depthwise.metrics import derive as derive
from hwprof.studies.depthwise.metrics import math_modes as math_modes
from hwprof.studies.depthwise.models import depthwise_paths as depthwise_paths
from hwprof.studies.depthwise.models import depthwise_shares as depthwise_shares
from hwprof.studies.depthwise.models import model_comparison as model_comparison
from hwprof.studies.depthwise.operators import OPERATORS as OPERATORS
from hwprof.studies.depthwise.operators import OperatorDef as OperatorDef
from hwprof.studies.depthwise.operators import build_operator as build_operator
from hwprof.studies.depthwise.operators import operator_supported as operator_supported
from hwprof.studies.depthwise.plan import DEFAULT_DTYPES as DEFAULT_DTYPES
from hwprof.studies.depthwise.plan import QUICK_TIME_BUDGET_S as QUICK_TIME_BUDGET_S
from hwprof.studies.depthwise.plan import Deadline as Deadline
from hwprof.studies.depthwise.plan import native_units as native_units
from hwprof.studies.depthwise.plan import plan_dtypes as plan_dtypes
from hwprof.studies.depthwise.study import StudyResult as StudyResult
from hwprof.studies.depthwise.study import compute_study as compute_study
from hwprof.studies.depthwise.study import run_study as run_study
from hwprof.studies.depthwise.study import save_study as save_study
from hwprof.studies.depthwise.summary import REFERENCE_H100 as REFERENCE_H100
from hwprof.studies.depthwise.summary import compare_to_dense as compare_to_dense
from hwprof.studies.depthwise.summary import fmt_pct as fmt_pct
from hwprof.studies.depthwise.summary import fmt_rate as fmt_rate
from hwprof.studies.depthwise.summary import fmt_ratio as fmt_ratio
from hwprof.studies.depthwise.summary import fmt_time as fmt_time
from hwprof.studies.depthwise.summary import headline_shape as headline_shape
from hwprof.studies.depthwise.summary import summary_markdown as summary_markdown
from hwprof.studies.depthwise.sweep import MOBILENET_SHAPES as MOBILENET_SHAPES
from hwprof.studies.depthwise.sweep import POINT_COLUMNS as POINT_COLUMNS
from hwprof.studies.depthwise.sweep import REFERENCE_SHAPE as REFERENCE_SHAPE
from hwprof.studies.depthwise.sweep import Point as Point
from hwprof.studies.depthwise.sweep import SweepConfig as SweepConfig
from hwprof.studies.depthwise.sweep import build_point as build_point
from hwprof.studies.depthwise.sweep import default_config as default_config
from hwprof.studies.depthwise.sweep import measure_point as measure_point
from hwprof.studies.depthwise.sweep import quick_config as quick_config
from hwprof.studies.depthwise.sweep import run_sweep as run_sweep
from hwprof.studies.depthwise.sweep import sweep_points as sweep_points

__all__ = [
    "OperatorDef", "OPERATORS", "build_operator", "operator_supported",
    "Point", "SweepConfig", "default_config", "quick_config", "sweep_points", "MOBILENET_SHAPES", "REFERENCE_SHAPE",
    "build_point", "point_callable", "measure_point", "run_sweep", "is_oom",
    "math_modes", "derive",
    "headline_shape", "compare_to_dense", "summary_markdown", "fmt_ratio", "fmt_time", "fmt_pct", "fmt_rate",
    "REFERENCE_H100", "FASTERNET_PAPER", "FASTERNET_SHAPES", "PartialConv", "build_fasternet_stack",
    "fasternet_table", "depthwise_paths", "depthwise_shares", "model_comparison",
    "NCU_METRICS", "ncu_path", "ncu_command", "parse_ncu_csv", "summarise_kernels", "run_counters",
    "StudyResult", "compute_study", "save_study", "run_study", "POINT_COLUMNS",
    "DEFAULT_DTYPES", "QUICK_TIME_BUDGET_S", "Deadline", "native_units", "plan_dtypes",
]
