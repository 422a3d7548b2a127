"""``hwprof.count``: analytical FLOPs, MACs, params and bytes per aten op and per layer.

The model is deep-copied onto fake tensors (``FakeCopyMode``): no real memory, no compute,
and the user's module is never touched. A ``TorchDispatchMode`` sees every aten op that
actually runs, forward and (with ``backward=True``) the ops autograd dispatches in backward;
each op gets a cost from :mod:`hwprof.counting.formulas` and is attributed to the module that
ran it (:mod:`hwprof.counting.tracking`).

Bytes per op = bytes of its tensor inputs (read) + bytes of its outputs (written), as if
every op were its own kernel (eager, unfused). Views and metadata ops move nothing and are
left out of the op table. An op without a formula is listed in ``uncounted`` with its call
count and has NaN FLOPs in the op table: never a silent zero.

Per-layer columns without suffix are the layer's *own* ops (self); ``*_incl`` columns add
its descendants. Summing a self column over all rows gives the model total. Each op carries
its class from the formula registry (``op_class``); each layer the class of its FLOP-heaviest
own op (:func:`layer_op_classes`) and, for convolutions, its variant (:func:`layer_variant`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from hwprof.amp import amp_name, autocast, resolve_amp
from hwprof.counting import formulas as F
from hwprof.counting.tracking import ModuleStack, backward_module, shapes_str, sizes_str, tensor_bytes
from hwprof.errors import HwprofError, InputShapeError
from hwprof.fakes import convert_tensors, fake_copy, fake_inputs
from hwprof.placement import model_device, model_float_dtype
from hwprof.spec import MODES, Inputs, Mode, batch_of, describe_inputs, parse_dtype
from hwprof.stepping.unit import Step
from hwprof.training import loss_tensors

__all__ = ["count", "count_step", "StepCount", "CountResult", "Mode", "MODES", "layer_variant", "layer_op_classes", "layer_top_ops"]

log = logging.getLogger(__name__)

_SUM_COLUMNS = ("flops", "macs", "bytes_read", "bytes_written")



@dataclass
class CountResult:
    """Counts of one model on one input (the public API: README.md, docs/ARCHITECTURE.md).

    layers: one row per module (index = path, "" = root); ops: one row per aten op call;
    totals: model-wide sums; uncounted: aten op -> calls with no formula; notes: caveats;
    config: what was counted (mode, backward, batch, dtype, device, inputs).
    """

    layers: pd.DataFrame
    ops: pd.DataFrame
    totals: dict[str, Any]
    uncounted: dict[str, int]
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def leaf_layers(self) -> pd.DataFrame:
        return self.layers[self.layers["is_leaf"]]


# ----------------------------------------------------------------------------- the dispatch mode
class _Counter(TorchDispatchMode):
    """Records (module, phase, op, shapes, dtype, cost, bytes) for every aten op call."""

    def __init__(self, modules: ModuleStack) -> None:
        super().__init__()
        self.modules = modules
        self.in_optimizer = 0          # > 0 inside an optimizer's step() (count_step's global optimizer hooks)
        self.rows: list[tuple[Any, ...]] = []
        self.uncounted: Counter[str] = Counter()
        self.formula_errors: dict[str, str] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if F.is_view(func) or func.namespace == "profiler":   # profiler: record_function markers, no work
            return func(*args, **kwargs)
        formula = F.lookup(packet)
        if formula is None:
            # Like FlopCounterMode: count a composite op through its decomposition when it has one.
            r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
        out = func(*args, **kwargs)
        self._record(func, packet, formula, args, kwargs, out)
        return out

    def _record(self, func: Any, packet: Any, formula: F.Formula | None, args: tuple, kwargs: dict, out: Any) -> None:
        ins = _tensors(args) + (_tensors(tuple(kwargs.values())) if kwargs else [])
        outs = _tensors(out if isinstance(out, (tuple, list)) else (out,))
        name = str(packet)
        bytes_read = sum(tensor_bytes(t) for t in ins)
        bytes_written = sum(tensor_bytes(t) for t in outs)
        flops = macs = math.nan
        if formula is not None:
            try:
                cost = formula(_op_call(func, name, args, kwargs, out))
                flops, macs = float(cost.flops), float(cost.macs)
                if cost.bytes_read is not None:
                    bytes_read = cost.bytes_read
                if cost.bytes_written is not None:
                    bytes_written = cost.bytes_written
            except Exception as e:  # a formula that cannot read this call: listed, never zero
                self.formula_errors[name] = f"{type(e).__name__}: {e}"
                formula = None
        if formula is None:
            self.uncounted[name] += 1
        bwd = torch._C._current_graph_task_id() != -1
        module = backward_module() if bwd else self.modules.current
        phase = "bwd" if bwd else "opt" if self.in_optimizer else "fwd"
        dtype = str(ins[0].dtype).removeprefix("torch.") if ins else (str(outs[0].dtype).removeprefix("torch.") if outs else "")
        self.rows.append((module, phase, name, F.op_class(packet), shapes_str(ins), shapes_str(outs),
                          dtype, flops, macs, bytes_read, bytes_written, formula is not None))


def _tensors(values: tuple | list) -> list[torch.Tensor]:
    """The tensors among an op's arguments or outputs (tensors, and lists or tuples of them: aten's only
    nesting), in order: what ``tree_flatten`` finds there, without its per-call cost on every op."""
    out: list[torch.Tensor] = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (tuple, list)):
            out += _tensors(v)
    return out


def _meta(x: Any) -> Any:
    return F.T(tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else x


def _op_call(func: Any, name: str, args: tuple, kwargs: dict, out: Any) -> F.OpCall:
    """Bind positional args to schema names and replace tensors by shapes (formulas are pure)."""
    named: dict[str, Any] = {}
    for i, a in enumerate(func._schema.arguments):
        if i < len(args):
            named[a.name] = args[i]
        elif a.name in kwargs:
            named[a.name] = kwargs[a.name]
        elif a.has_default_value():
            named[a.name] = a.default_value
    outputs = tuple(tree_map(_meta, o) for o in (out if isinstance(out, (tuple, list)) else (out,)))
    return F.OpCall(name, tree_map(_meta, named), outputs, tuple(tree_map(_meta, list(args))))


# ----------------------------------------------------------------------------- public entry point
def count(
    model: nn.Module,
    inputs: Any,
    backward: bool = False,
    batch: int | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    training: bool | None = None,
    *,
    mode: Mode | None = None,
    amp: str | torch.dtype | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
) -> CountResult:
    """Count ``model`` on ``inputs`` (a tensor, a tuple of tensors, or a spec like ``"3x224x224"``).

    Runs on a fake copy of the model (no memory, no compute; models on ``torch.device("meta")``
    work, counted with the CPU's kernels unless ``device`` says otherwise). ``backward=True``
    also counts the ops autograd runs for ``outputs.backward(ones)``; ``backward=False`` (the
    default, as in ``hwprof count``) runs under ``torch.no_grad()`` (so eval-mode fused fast
    paths run, as they would in inference). ``mode`` sets the copy's mode independently of
    ``backward``: "inference" (default: eval, batch norm on running statistics, dropout off) or
    "train" (batch statistics, dropout active); the model itself is untouched. ``dtype``
    converts the copy and floating inputs (e.g. ``"bf16"``). ``amp="bf16" | "fp16"`` runs the
    forward under ``torch.autocast`` (parameters keep their dtype; each op row carries the dtype
    autocast gave it); a call inside the user's own autocast region counts under it and records it.
    ``batch``: the batch of a spec string; with tensors, dimension 0 of every input is resized to it
    (as :func:`hwprof.estimate_memory` does). ``loss_fn`` (with ``backward``): the backward starts from
    ``loss_fn(output)`` (its ops counted too; tensors it closes over, such as labels, are read as
    constants), as :func:`hwprof.measure` runs it. ``training=`` is the deprecated spelling of ``mode``.
    """
    mode = _resolve_mode(mode, training)
    dt = parse_dtype(dtype) if dtype is not None else None
    notes: list[str] = []
    target = count_device(model_device(model), device, notes)
    amp_dtype = resolve_amp(amp, target.type)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=False)
    fmodel = fake_copy(model, fake_mode)
    built = _built_from_spec(inputs)
    with fake_mode:
        if dt is not None or target != model_device(model):
            convert_tensors(fmodel, dt, target)
        fmodel.train(mode == "train")
        args = fake_inputs(inputs, batch=batch, spec_dtype=dt or model_float_dtype(model), device=target,
                           fake_mode=fake_mode, cast_tensors=dt is not None, rebatch=batch is not None and not built)
        stack = ModuleStack(fmodel)
        counter = _Counter(stack)
        grad_ctx = torch.enable_grad() if backward else torch.no_grad()
        with grad_ctx, stack:
            try:
                with counter, autocast(target.type, amp_dtype):
                    output = args.call(fmodel)
            except Exception as e:
                raise _input_error(stack, e) from e
            if backward:
                # the user's loss may close over real tensors (labels), read as constants by the loss and by the
                # backward ops that saved them
                fake_mode.allow_non_fake_inputs = loss_fn is not None
                try:
                    _run_backward(_loss_output(output, loss_fn, counter, target.type, amp_dtype), counter, notes)
                finally:
                    fake_mode.allow_non_fake_inputs = False
    config = {"mode": mode, "backward": backward, "batch": 1 if batch is None and built else batch_of(args, batch),
              "dtype": str(dt or model_float_dtype(model)).removeprefix("torch."), "amp": amp_name(amp_dtype),
              "device": target.type, "inputs": inputs if isinstance(inputs, str) else describe_inputs(args)}
    return _build_result(fmodel, args, stack, counter, notes, config)


def _built_from_spec(inputs: Any) -> bool:
    """Inputs that hwprof builds (a spec string, or a dict holding one): ``batch`` is theirs to take."""
    return isinstance(inputs, str) or (isinstance(inputs, Mapping) and any(isinstance(v, str) for v in inputs.values()))


class StepCount:
    """The counter over a step's module tree (:class:`ModuleStack` with nodes claimed as calls end, and the
    dispatch mode), entered and left by the caller: :func:`count_step` around one run of a step,
    ``hwprof.capture`` at two boundaries of the user's own loop. ``opt_enter`` / ``opt_leave`` mark an
    optimizer's ``step()`` (its ops get phase ``opt``); ``adopt`` names modules that start outside the
    tree (an open world: :attr:`hwprof.modules.ModuleCalls.adopt`)."""

    def __init__(self, root: nn.Module, adopt: Callable[[nn.Module], str] | None = None) -> None:
        self.root = root
        self.stack = ModuleStack(root, claim_on_exit=True)
        self.stack.adopt = adopt
        self.counter = _Counter(self.stack)

    def begin(self) -> None:
        self.stack.__enter__()
        try:
            self.counter.__enter__()
        except BaseException:
            self.stack.__exit__()
            raise

    def end(self) -> None:
        try:
            self.counter.__exit__(None, None, None)
        finally:
            self.stack.__exit__()

    def opt_enter(self, *_: Any) -> None:
        self.counter.in_optimizer += 1

    def opt_leave(self, *_: Any) -> None:
        self.counter.in_optimizer = max(0, self.counter.in_optimizer - 1)

    def result(self, args: Inputs, config: dict[str, Any]) -> CountResult:
        """The :class:`CountResult` of what was counted (``mode``/``backward`` from the ops that ran)."""
        has_bwd = any(r[1] == "bwd" for r in self.counter.rows)
        config = {"mode": "train" if has_bwd else "inference", "backward": has_bwd, "batch": batch_of(args, None),
                  "dtype": str(model_float_dtype(self.root)).removeprefix("torch."), "inputs": describe_inputs(args),
                  "kind": "step", **config}
        return _build_result(self.root, args, self.stack, self.counter, [], config)


def count_step(step: Step) -> CountResult:
    """Count one run of a user's step (:class:`hwprof.stepping.unit.Step`, prepared by one run already) on
    its *real* tensors, under the same dispatch mode as :func:`count`: every op the step dispatches,
    forward, backward and optimizer (phase ``opt``, between torch's global optimizer step hooks), in
    the dtype it actually ran in (the step's own autocast included). Forward ops belong to the module
    running them; backward ops to the module call that created their autograd node, claimed as each
    call ends (:meth:`hwprof.modules.ModuleCalls._claim`, as the step's loss is never handed to hwprof);
    optimizer ops and ops outside every module to the root (""). The step really runs: the caller
    restores what it changed (:meth:`Step.restore`)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    sc = StepCount(step.root)
    handles = [register_optimizer_step_pre_hook(sc.opt_enter), register_optimizer_step_post_hook(sc.opt_leave)]
    try:
        sc.begin()
        try:
            step.run()
        finally:
            sc.end()
    finally:
        for h in handles:
            h.remove()
    args = Inputs(tuple(t for t in tree_flatten((step.args, step.kwargs))[0] if isinstance(t, torch.Tensor)))
    return sc.result(args, {"device": step.device.type, "amp": step.amp, "step": step.label})


def _resolve_mode(mode: str | None, training: bool | None) -> Mode:
    """``mode``, or the deprecated ``training`` flag translated; default "inference"."""
    if training is not None:
        warnings.warn("count(training=...) is deprecated: pass mode='train' or mode='inference'",
                      DeprecationWarning, stacklevel=3)
        legacy: Mode = "train" if training else "inference"
        if mode is not None and mode != legacy:
            raise ValueError(f"count(): mode={mode!r} contradicts training={training}")
        return legacy
    if mode is None:
        return "inference"
    if mode not in MODES:
        raise ValueError(f"count(): unknown mode {mode!r}; expected one of {MODES}")
    return mode  # type: ignore[return-value]


def count_device(model_dev: torch.device, requested: torch.device | str | None, notes: list[str]) -> torch.device:
    """The device whose kernels are counted: ``requested``, else the model's. A model on meta never
    runs anywhere, and meta dispatch picks other kernels than a real device (e.g. SDPA's math path,
    which materialises the full causal matrix, instead of CPU's flash kernel), so it is counted as
    on the CPU unless a device is given."""
    if requested is not None:
        return torch.device(requested)
    if model_dev.type == "meta":
        notes.append("model on meta: counted with CPU kernels (pass device='cuda' to count CUDA's)")
        return torch.device("cpu")
    return model_dev


def _input_error(stack: ModuleStack, e: Exception) -> Exception:
    """Name the innermost module that failed and its input shapes."""
    frame = stack.innermost_active()
    stack.stack.clear()
    if "convert all Tensors to FakeTensors" in str(e):
        where = f"module '{frame.path or '<root>'}' ({type(frame.module).__name__})" if frame else "the model"
        return HwprofError(
            f"{where} uses a tensor or module that is not registered on the model (a closure or a global); "
            "hwprof counts on a fake copy of the registered parameters, buffers and submodules only")
    if frame is None:
        return e
    return InputShapeError(frame.path, type(frame.module).__name__, [sizes_str(frame.input_shapes)], e)


def _loss_output(output: Any, loss_fn: Callable[[Any], torch.Tensor] | None, counter: _Counter,
                 device_type: str, amp_dtype: torch.dtype | None) -> Any:
    """``loss_fn(output)`` counted (under the forward's autocast), or ``output`` itself without a ``loss_fn``."""
    if loss_fn is None:
        return output
    with counter, autocast(device_type, amp_dtype):
        return loss_fn(output)


def _run_backward(output: Any, counter: _Counter, notes: list[str]) -> None:
    """Backward from every floating output that requires grad (the output's ``loss`` alone when it
    carries one: :func:`hwprof.training.loss_tensors`), with all-ones seed gradients (created outside
    the count)."""
    outs = loss_tensors(output)
    if not outs:
        notes.append("backward skipped: no output requires grad (all parameters frozen and inputs without grad)")
        return
    grads = [torch.ones_like(t) for t in outs]
    counter.modules.label_backward(outs)
    with counter:
        torch.autograd.backward(outs, grads)


# ----------------------------------------------------------------------------- tables
_OP_COLUMNS = ["module", "phase", "op", "op_class", "input_shapes", "output_shapes", "dtype", "flops", "macs",
               "bytes_read", "bytes_written", "counted"]


def _build_result(fmodel: nn.Module, args: Inputs, stack: ModuleStack, counter: _Counter,
                  notes: list[str], config: dict[str, Any]) -> CountResult:
    ops = pd.DataFrame(counter.rows, columns=_OP_COLUMNS)
    ops["bytes"] = ops["bytes_read"] + ops["bytes_written"]
    layers = _layer_table(fmodel, stack, ops)
    input_bytes = sum(tensor_bytes(a) for a in args if isinstance(a, torch.Tensor))
    totals = _totals(fmodel, ops, layers, input_bytes)
    for op, err in counter.formula_errors.items():
        notes.append(f"formula for {op} could not read a call ({err}); listed as uncounted")
    if counter.uncounted:
        log.warning("ops without a formula (listed in .uncounted, not counted as zero): %s", dict(counter.uncounted))
    return CountResult(layers, ops, totals, dict(counter.uncounted), notes, config)


def _own_params(fmodel: nn.Module) -> dict[str, tuple[int, int]]:
    """path -> (params, trainable params) owned directly; a shared parameter counts once (first owner)."""
    seen: set[int] = set()
    out: dict[str, tuple[int, int]] = {}
    for path, mod in fmodel.named_modules():
        n = t = 0
        for p in mod.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            n += p.numel()
            t += p.numel() if p.requires_grad else 0
        out[path] = (n, t)
    return out


def _layer_table(fmodel: nn.Module, stack: ModuleStack, ops: pd.DataFrame) -> pd.DataFrame:
    params = _own_params(fmodel)
    modules = dict(fmodel.named_modules())
    children = {path: [n for n, _ in mod.named_children()] for path, mod in modules.items()}
    rows = []
    for path, rec in stack.records.items():
        rows.append({
            "path": path, "type": rec.type, "variant": layer_variant(modules.get(path)),
            "depth": 0 if path == "" else path.count(".") + 1, "is_leaf": not children.get(path), "calls": rec.calls,
            "input_shapes": rec.input_shapes, "output_shapes": rec.output_shapes,
            "params": params.get(path, (0, 0))[0], "trainable_params": params.get(path, (0, 0))[1],
            "output_bytes": rec.output_bytes, "output_is_alias": rec.output_is_alias,
        })
    layers = pd.DataFrame(rows).set_index("path")
    layers.insert(1, "op_class", layer_op_classes(ops).reindex(layers.index).fillna("other"))
    cols: dict[str, Any] = {}
    sums = ops.groupby(["phase", "module"])[list(_SUM_COLUMNS)].sum(min_count=1) if len(ops) else None
    unc = ops[~ops["counted"]].groupby(["phase", "module"]).size() if len(ops) else None
    for phase in ("fwd", "bwd"):     # one groupby for every column and phase; the frame is built once
        for col in _SUM_COLUMNS:
            cols[f"{col}_{phase}"] = _phase_column(sums, col, phase, layers.index, 0.0)
        cols[f"uncounted_calls_{phase}"] = _phase_column(unc, None, phase, layers.index, 0).astype(int)
        cols[f"bytes_{phase}"] = cols[f"bytes_read_{phase}"] + cols[f"bytes_written_{phase}"]
    cols["params"] = layers["params"]
    for col in ("flops_fwd", "macs_fwd", "bytes_fwd", "flops_bwd", "macs_bwd", "bytes_bwd", "params"):
        cols[f"{col}_incl"] = _inclusive(cols[col], children)
    del cols["params"]
    for phase in ("fwd", "bwd"):
        b = cols[f"bytes_{phase}"]
        cols[f"intensity_{phase}"] = cols[f"flops_{phase}"] / b.where(b > 0)
    return pd.concat([layers, pd.DataFrame(cols, index=layers.index)], axis=1)


def _phase_column(grouped: Any, col: str | None, phase: str, index: pd.Index, fill: float) -> pd.Series:
    """``grouped`` (indexed by phase, module) for one phase (and column), on ``index``, missing = ``fill``."""
    if grouped is None or phase not in grouped.index.get_level_values(0):
        return pd.Series(fill, index=index, dtype=float)
    part = grouped.xs(phase, level=0)
    values = part[col] if col is not None else part
    return values.reindex(index).fillna(fill).astype(float)


def layer_variant(module: nn.Module | None) -> str:
    """'depthwise' (groups = C_in > 1), 'grouped', 'pointwise' (1x1), 'dense' for convs; else ''."""
    if not isinstance(module, nn.modules.conv._ConvNd):
        return ""
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise"
    if module.groups > 1:
        return "grouped"
    if all(k == 1 for k in module.kernel_size):
        return "pointwise"
    return "dense"


def layer_top_ops(ops: pd.DataFrame) -> pd.DataFrame:
    """Per module (index), the op that sets its roof: ranked first by class (conv, then the
    matmul-rule classes matmul/attention/rnn, then every other class: the roofline's TF32 switches
    follow the class), then by FLOPs, over both phases; columns ``op_class`` and ``dtype``. A module
    without ops of its own is absent (its class is "other")."""
    cols = [c for c in ("op_class", "dtype") if c in ops.columns or ops.empty]
    if ops.empty:
        return pd.DataFrame(columns=cols)
    rank = [2 if k in F.CONV_CLASSES else 1 if k in F.MATMUL_CLASSES else 0 for k in ops["op_class"]]
    best = ops.assign(rank=rank).sort_values(["rank", "flops"], ascending=False).groupby("module").head(1)
    return best.set_index("module")[cols]


def layer_op_classes(ops: pd.DataFrame) -> pd.Series:
    """Per module (index): the class of its top op (:func:`layer_top_ops`)."""
    return layer_top_ops(ops)["op_class"]


def _inclusive(col: pd.Series, children: dict[str, list[str]]) -> pd.Series:
    """Self value + all descendants' (paths join with '.'; the root's children have no prefix)."""
    memo: dict[str, float] = {}

    def total(path: str) -> float:
        if path not in memo:
            kids = [f"{path}.{c}" if path else c for c in children.get(path, [])]
            memo[path] = float(col.get(path, 0.0)) + sum(total(k) for k in kids if k in col.index)
        return memo[path]

    return pd.Series({p: total(p) for p in col.index}, dtype=float)


def _totals(fmodel: nn.Module, ops: pd.DataFrame, layers: pd.DataFrame, input_bytes: int) -> dict[str, Any]:
    unique = {id(p): p for p in fmodel.parameters()}.values()
    t: dict[str, Any] = {
        "params": sum(p.numel() for p in unique),
        "trainable_params": sum(p.numel() for p in unique if p.requires_grad),
        "params_bytes": sum(p.numel() * p.element_size() for p in unique),
        "input_bytes": input_bytes,
    }
    phases = ("fwd", "bwd", "opt") if (ops["phase"] == "opt").any() else ("fwd", "bwd")   # opt: a step's optimizer
    for phase in phases:
        sel = ops[ops["phase"] == phase]
        for col in ("flops", "macs", "bytes_read", "bytes_written", "bytes"):
            t[f"{col}_{phase}"] = int(sel[col].sum()) if len(sel) else 0
    leaves = layers[layers["is_leaf"] & (layers["calls"] > 0)]
    # Feature maps: the input plus every leaf output that is a new tensor (an in-place op or a
    # view, e.g. ReLU(inplace=True) or Flatten, produces no new feature map).
    t["feature_map_bytes"] = input_bytes + int(leaves.loc[~leaves["output_is_alias"], "output_bytes"].sum())
    t["uncounted_calls"] = int((~ops["counted"]).sum()) if len(ops) else 0
    return t
