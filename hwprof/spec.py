"""Input specifications: turn "3x224x224" (+ batch) or user tensors into model inputs.

An *input spec* names the shape of every model input without its batch dimension.
Several inputs are separated by commas; an integer (token-id) input is prefixed
with its dtype, e.g. ``"long:128"`` (values are zeros, valid for any embedding).

    parse_spec("3x224x224")          -> (TensorSpec((3, 224, 224), None),)
    parse_spec("long:128,128")       -> (TensorSpec((128,), torch.long), TensorSpec((128,), None))

``None`` as dtype means "the run's floating dtype" (fp32 unless the caller says otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

__all__ = ["Mode", "MODES", "InputSpecError", "TensorSpec", "parse_spec", "parse_dtype", "make_inputs", "as_input_tuple"]

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
    """Parse ``"3x224x224"`` / ``"long:128,3x32x32"`` into TensorSpecs (see module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise InputSpecError(f"empty input spec {text!r}; expected e.g. '3x224x224'")
    specs = []
    for part in text.split(","):
        part = part.strip()
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
        specs.append(TensorSpec(shape, dtype))
    return tuple(specs)


def make_inputs(
    specs: Sequence[TensorSpec],
    batch: int | None = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    random: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Tensors for ``specs``: floats ~ N(0, 1) (or empty if ``random=False``), integers zero."""
    out = []
    for s in specs:
        shape = s.full_shape(batch)
        dt = s.dtype or dtype
        if dt.is_floating_point and random and torch.device(device).type != "meta":
            out.append(torch.randn(shape, dtype=dt, device=device))
        elif dt.is_floating_point:
            out.append(torch.empty(shape, dtype=dt, device=device))
        else:
            out.append(torch.zeros(shape, dtype=dt, device=device))
    return tuple(out)


def as_input_tuple(
    inputs: Any,
    batch: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    random: bool = True,
) -> tuple[Any, ...]:
    """Normalise what users pass as ``inputs``.

    * a spec string: parsed, batch defaults to 1;
    * a tensor: ``(tensor,)``; a tuple/list: as a tuple (non-tensors pass through);
    * a TensorSpec sequence: built with :func:`make_inputs`.
    """
    if isinstance(inputs, str):
        return make_inputs(parse_spec(inputs), 1 if batch is None else batch, dtype, device, random)
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, (tuple, list)):
        if inputs and all(isinstance(s, TensorSpec) for s in inputs):
            return make_inputs(inputs, 1 if batch is None else batch, dtype, device, random)
        return tuple(inputs)
    raise InputSpecError(
        f"inputs must be a tensor, a tuple of tensors or a spec string like '3x224x224', got {type(inputs).__name__}")
