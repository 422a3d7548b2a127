"""Input specifications: turn "3x224x224" (+ batch), user tensors or a dict of them into model inputs.

An *input spec* names the shape of every model input without its batch dimension.
Several inputs are separated by commas; an integer (token-id) input is prefixed
with its dtype, e.g. ``"long:128"``; an input passed by keyword is prefixed with its name,
``"input_ids=long:128"`` (named inputs follow the positional ones, as in a Python call).

    parse_spec("3x224x224")          -> (TensorSpec((3, 224, 224), None),)
    parse_spec("long:128,128")       -> (TensorSpec((128,), torch.long), TensorSpec((128,), None))
    parse_spec("input_ids=long:128,decoder_input_ids=long:32")
                                     -> (TensorSpec((128,), torch.long, "input_ids"), TensorSpec((32,), torch.long, "decoder_input_ids"))

``None`` as dtype means "the run's floating dtype" (fp32 unless the caller says otherwise).

Built inputs are an :class:`Inputs` record: positional ``args`` and keyword ``kwargs``, called as
``model(*args, **kwargs)`` (:meth:`Inputs.call`); it is also the sequence of all its values (args,
then kwargs), and a pytree node, so code that walks tensors sees every input. Integer inputs are
token ids: with ``vocab`` given (the model's vocabulary, :func:`vocab_size`) and ``random=True``
they are drawn uniformly in ``[0, vocab)``, else zeros (valid for any embedding); an integer or
bool input whose name ends in ``mask`` is ones (attend everywhere).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn
from torch.utils import _pytree as pytree

__all__ = ["Mode", "MODES", "InputSpecError", "TensorSpec", "Inputs", "parse_spec", "parse_dtype", "make_inputs",
           "as_inputs", "as_input_tuple", "vocab_size", "describe_inputs", "resize_batch", "batch_of"]

Mode = Literal["inference", "train"]
"""How a model runs: ``inference`` (eval mode: BatchNorm running statistics, no dropout) or ``train``
(train mode: batch statistics, dropout active)."""
MODES: tuple[str, ...] = get_args(Mode)

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp64": torch.float64, "float64": torch.float64, "double": torch.float64,
    "long": torch.long, "int64": torch.long, "int": torch.long, "int32": torch.int32,
    "bool": torch.bool,
}


class InputSpecError(ValueError):
    """A malformed input spec (the message says what was expected)."""


@dataclass(frozen=True)
class TensorSpec:
    """Shape of one input without the batch dimension, and its dtype (None = run dtype)."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None = None
    name: str | None = None
    """The keyword the input is passed by (None: positional)."""

    def full_shape(self, batch: int | None) -> tuple[int, ...]:
        return self.shape if batch is None else (batch, *self.shape)


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """The floating dtype of a run's parameters and activations: 'bf16' -> torch.bfloat16; a
    torch.dtype passes through. An integer or bool dtype is an :class:`InputSpecError` (a model
    cannot be converted to it: integer inputs are given in the input spec, ``long:128``)."""
    dtype = name if isinstance(name, torch.dtype) else _lookup_dtype(name)
    if not dtype.is_floating_point:
        shown = name if isinstance(name, str) else str(dtype).removeprefix("torch.")
        raise InputSpecError(
            f"dtype {shown!r} is not a floating dtype: parameters and activations take one of "
            f"{', '.join(_FLOAT_NAMES)}; integer inputs go in the input spec, e.g. --input long:128")
    return dtype


_FLOAT_NAMES = ("fp32", "bf16", "fp16", "fp64")


def _lookup_dtype(name: str) -> torch.dtype:
    """Any dtype by name ('long', 'bf16'...): input specs may name integer dtypes."""
    try:
        return _DTYPES[name.strip().lower()]
    except (KeyError, AttributeError):
        raise InputSpecError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}") from None


def parse_spec(text: str) -> tuple[TensorSpec, ...]:
    """Parse ``"3x224x224"`` / ``"long:128,3x32x32"`` / ``"input_ids=long:128"`` into TensorSpecs (see
    module docstring). A name is a Python identifier, given once; named inputs come after positional ones."""
    if not isinstance(text, str) or not text.strip():
        raise InputSpecError(f"empty input spec {text!r}; expected e.g. '3x224x224'")
    specs: list[TensorSpec] = []
    for part in text.split(","):
        spec = _parse_one(text, part.strip())
        if spec.name is None and any(s.name is not None for s in specs):
            raise InputSpecError(f"bad input spec {text!r}: positional input {part.strip()!r} after a named one")
        if spec.name is not None and any(s.name == spec.name for s in specs):
            raise InputSpecError(f"bad input spec {text!r}: input {spec.name!r} given twice")
        specs.append(spec)
    return tuple(specs)


def _parse_one(text: str, part: str) -> TensorSpec:
    """One ``[name=][dtype:]shape`` item of ``text``."""
    name = None
    if "=" in part:
        name, part = (x.strip() for x in part.split("=", 1))
        if not name.isidentifier():
            raise InputSpecError(f"bad input spec {text!r}: {name!r} is not an argument name")
    dtype = None
    if ":" in part:
        dname, part = part.split(":", 1)
        dtype = _lookup_dtype(dname)
    dims = part.lower().replace("*", "x").split("x")
    try:
        shape = tuple(int(d) for d in dims)
    except ValueError:
        raise InputSpecError(
            f"bad input spec {text!r}: {part!r} is not a shape like '3x224x224'") from None
    if any(d <= 0 for d in shape):
        raise InputSpecError(f"bad input spec {text!r}: every dimension must be positive")
    return TensorSpec(shape, dtype, name)


@dataclass(frozen=True)
class Inputs(Sequence[Any]):
    """A model's inputs: positional ``args`` and keyword ``kwargs`` (``model(*args, **kwargs)``).

    As a sequence it holds every value, args first, then kwargs in order; it is a pytree node, so
    ``tree_flatten`` / ``tree_map`` reach the tensors of both."""

    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def values(self) -> tuple[Any, ...]:
        return (*self.args, *self.kwargs.values())

    def __getitem__(self, i: Any) -> Any:
        return self.values()[i]

    def __len__(self) -> int:
        return len(self.args) + len(self.kwargs)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values())

    def call(self, fn: Callable[..., Any]) -> Any:
        """``fn(*args, **kwargs)``."""
        return fn(*self.args, **self.kwargs)

    def map(self, fn: Callable[[Any], Any]) -> Inputs:
        """The same structure with ``fn`` applied to every value."""
        return Inputs(tuple(fn(v) for v in self.args), {k: fn(v) for k, v in self.kwargs.items()})


def _flatten_inputs(x: Inputs) -> tuple[list[Any], Any]:
    return list(x.values()), (len(x.args), tuple(x.kwargs))


def _unflatten_inputs(values: Any, context: Any) -> Inputs:
    n, names = context
    values = list(values)
    return Inputs(tuple(values[:n]), dict(zip(names, values[n:], strict=True)))


pytree.register_pytree_node(Inputs, _flatten_inputs, _unflatten_inputs)  # type: ignore[arg-type]


def make_inputs(
    specs: Sequence[TensorSpec],
    batch: int | None = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    random: bool = True,
    vocab: int | None = None,
) -> Inputs:
    """Inputs for ``specs`` (named ones by keyword): floats ~ N(0, 1) (or empty if ``random=False``);
    integers uniform in ``[0, vocab)`` when ``vocab`` is given and ``random``, else zeros; an integer
    or bool input named ``*mask`` is ones."""
    args: list[torch.Tensor] = []
    kwargs: dict[str, torch.Tensor] = {}
    real = random and torch.device(device).type != "meta"
    for s in specs:
        t = _make_tensor(s, s.full_shape(batch), s.dtype or dtype, device, real, vocab)
        if s.name is None:
            args.append(t)
        else:
            kwargs[s.name] = t
    return Inputs(tuple(args), kwargs)


def _make_tensor(s: TensorSpec, shape: tuple[int, ...], dt: torch.dtype, device: torch.device | str, real: bool,
                 vocab: int | None) -> torch.Tensor:
    if dt.is_floating_point:
        return torch.randn(shape, dtype=dt, device=device) if real else torch.empty(shape, dtype=dt, device=device)
    if s.name is not None and s.name.endswith("mask"):
        return torch.ones(shape, dtype=dt, device=device)
    if real and vocab is not None and vocab > 1 and dt != torch.bool:
        return torch.randint(0, vocab, shape, dtype=dt, device=device)
    return torch.zeros(shape, dtype=dt, device=device)


def vocab_size(model: nn.Module) -> int | None:
    """The range token ids of ``model`` must lie in: its config's ``vocab_size`` (Hugging Face models),
    else the smallest ``num_embeddings`` of its ``nn.Embedding`` modules (valid for every one of them),
    else None (integer inputs stay zeros)."""
    v = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(v, int) and v > 0:
        return v
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    return min(sizes) if sizes else None


def as_inputs(
    inputs: Any,
    batch: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    random: bool = True,
    vocab: int | None = None,
) -> Inputs:
    """Normalise what users pass as ``inputs`` into :class:`Inputs`.

    * a spec string: parsed (named items by keyword), batch defaults to 1;
    * a tensor: one positional input; a tuple/list: positional inputs (non-tensors pass through);
    * a TensorSpec sequence: built with :func:`make_inputs`;
    * a dict ``name -> tensor | spec string | TensorSpec``: keyword inputs (``{"input_ids": "long:128"}``;
      a spec string here describes one tensor);
    * :class:`Inputs`: as is.
    """
    b = 1 if batch is None else batch
    if isinstance(inputs, Inputs):
        return inputs
    if isinstance(inputs, str):
        return make_inputs(parse_spec(inputs), b, dtype, device, random, vocab)
    if isinstance(inputs, torch.Tensor):
        return Inputs((inputs,))
    if isinstance(inputs, Mapping):
        return Inputs((), {str(k): _keyword_value(str(k), v, b, dtype, device, random, vocab)
                           for k, v in inputs.items()})
    if isinstance(inputs, (tuple, list)):
        if inputs and all(isinstance(s, TensorSpec) for s in inputs):
            return make_inputs(inputs, b, dtype, device, random, vocab)
        return Inputs(tuple(inputs))
    raise InputSpecError(
        "inputs must be a tensor, a tuple of tensors, a dict of them or a spec string like '3x224x224', "
        f"got {type(inputs).__name__}")


as_input_tuple = as_inputs
"""The former name of :func:`as_inputs`."""


def _keyword_value(name: str, v: Any, batch: int, dtype: torch.dtype, device: torch.device | str, random: bool,
                   vocab: int | None) -> Any:
    """One value of a dict of inputs: a spec string or TensorSpec built under ``name``; anything else as is."""
    if isinstance(v, str):
        specs = parse_spec(v)
        if len(specs) != 1 or specs[0].name is not None:
            raise InputSpecError(f"input {name!r}: {v!r} must describe one tensor, e.g. 'long:128'")
        v = specs[0]
    if isinstance(v, TensorSpec):
        return make_inputs([TensorSpec(v.shape, v.dtype, name)], batch, dtype, device, random, vocab).kwargs[name]
    return v


def describe_inputs(inputs: Inputs) -> str:
    """'1x3x224x224, 1x10' for positional tensors, 'input_ids=1x128' for keyword ones ('' for none;
    non-tensor values are left out)."""
    def one(v: torch.Tensor) -> str:
        return "x".join(str(d) for d in v.shape) or "scalar"
    return ", ".join([one(v) for v in inputs.args if isinstance(v, torch.Tensor)]
                     + [f"{k}={one(v)}" for k, v in inputs.kwargs.items() if isinstance(v, torch.Tensor)])


def resize_batch(inputs: Inputs, batch: int | None) -> Inputs:
    """``inputs`` with dimension 0 of every tensor that has one resized to ``batch`` (None: as they are),
    as :func:`hwprof.estimate_memory` does: the first ``batch`` rows when there are enough, else the
    rows repeated in order (row ``i`` is row ``i % n``), so the values stay the user's data. Each resized
    tensor is a new one (``requires_grad`` kept); the user's tensors are never modified."""
    if batch is None:
        return inputs
    if batch < 1:
        raise InputSpecError(f"batch must be a positive integer, got {batch}")

    def one(v: Any) -> Any:
        if not isinstance(v, torch.Tensor) or v.dim() == 0 or v.shape[0] == batch:
            return v
        if v.shape[0] == 0:
            raise InputSpecError(f"cannot resize an input with an empty dimension 0 to batch {batch}")
        rows = torch.arange(batch, device=v.device) % v.shape[0]
        out = v.detach().index_select(0, rows)
        return out.requires_grad_(v.requires_grad) if out.is_floating_point() else out

    return inputs.map(one)


def batch_of(inputs: Inputs, batch: int | None) -> int | None:
    """``batch`` when given, else dimension 0 of the first input tensor with a dimension (the batch that ran)."""
    if batch is not None:
        return batch
    for v in inputs:
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    return None
