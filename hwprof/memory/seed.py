"""The seed documents' memory rules, reproduced exactly (seeds 000 and 003: docs/SEEDS.md).

Seed 000 (training memory, "训练所占显存")::

    model bytes    = params x 4 B x (1 + terms)     the seed: terms = 1 ("1 为 params, 1 为 Adam")
    feature bytes  = feature values per image x 4 B x batch x 2     ("2 为 forward 和 backward")
    total          = model bytes + feature bytes

  Worked example: 5,000,000 params -> 20,000,000 B = 19.07 MiB ("19MB"), x 2 = 38 MiB;
  a 1M-value feature map per image -> 4 MiB ("4MB", i.e. 2**20 values; 1,000,000 values are
  3.81 MiB), x 128 images x 2 = 1024 MiB; total 38 + 1024 MiB > 1 GiB.

  hwprof's ``seed`` predictor applies the rule with the terms a training step really holds:
  ``1 + 1 (grads) + k`` (k optimizer states: 0 SGD, 1 momentum, 2 Adam/AdamW) and the
  feature values taken from seed 003's per-layer sum below (batch included). For inference:
  params x 1 + feature maps x 1. "MB" in the seeds is 2**20 bytes.

Seed 003 (per-layer, Keras ``layer.count_params()`` and ``layer.output_shape``)::

    params bytes   = sum over layers of params x 4 B
    feature bytes  = sum over layers of prod(output shape) x 4 B, the input layer included
    total          = params bytes + feature bytes

  hwprof's ``seed_per_layer`` predictor: sum over *leaf module calls* of their output bytes,
  plus the model input, plus the parameter bytes. PyTorch differs from Keras in one way that
  matters: Keras folds the activation into ``Conv2D(activation="relu")`` (one output per conv)
  while PyTorch has a separate ``ReLU`` module whose in-place output is the same storage as the
  conv's, so the plain sum counts every conv's feature map twice. VGG16 at 1024x1024 without top:
  plain leaf sum 2294 MiB; counting each storage once 1214 MiB, which is the seed's Keras sum up
  to ``block5_pool`` (the seed's 1216.035 MiB also includes ``flatten`` (2 MiB) and the top's
  three dense outputs (0.035 MiB), as its loop runs on the model built with ``include_top=True``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwprof.memory.formula import Inspection, inspect_forward
from hwprof.memory.optimizer_state import OPTIMIZER_STATES_PER_PARAM

__all__ = ["MIB", "seed000_training_bytes", "FeatureMaps", "feature_maps", "SeedResult", "seed_rule",
           "seed_per_layer_rule"]

MIB = 2**20
#: bytes per value in both seeds (float32)
SEED_BYTES_PER_VALUE = 4


def seed000_training_bytes(n_params: int, feature_values_per_image: int, batch: int, *,
                           terms: int = 1, bytes_per_value: int = SEED_BYTES_PER_VALUE) -> dict[str, int]:
    """Seed 000's rule: ``model = params x B x (1 + terms)``, ``features = values x B x batch x 2``.

    ``terms`` = copies of the parameters beyond themselves (the seed: 1, "Adam"). Returns
    ``params_bytes``, ``model_bytes``, ``feature_bytes_per_image``, ``feature_bytes`` and ``total_bytes``.
    """
    params_bytes = n_params * bytes_per_value
    model_bytes = params_bytes * (1 + terms)
    per_image = feature_values_per_image * bytes_per_value
    feature_bytes = per_image * batch * 2
    return {"params_bytes": params_bytes, "model_bytes": model_bytes, "feature_bytes_per_image": per_image,
            "feature_bytes": feature_bytes, "total_bytes": model_bytes + feature_bytes}


@dataclass
class FeatureMaps:
    """Seed 003's feature-map sums over one forward (batch included), in bytes."""

    input_bytes: int          # the model inputs (Keras' InputLayer output)
    leaf_sum_bytes: int       # sum over leaf module calls of output bytes (plain, as the seed)
    distinct_bytes: int       # same, each storage once (in-place results and views not recounted)
    n_leaf_calls: int
    n_aliasing_calls: int     # leaf calls whose output is an in-place result or a view of an input

    @property
    def total_bytes(self) -> int:
        """The seed's "feature map memory": input + plain leaf sum."""
        return self.input_bytes + self.leaf_sum_bytes

    @property
    def total_distinct_bytes(self) -> int:
        return self.input_bytes + self.distinct_bytes


def feature_maps(insp: Inspection) -> FeatureMaps:
    """Feature-map sums of an inspection pass (see module docstring)."""
    seen: set[int] = set(insp.setup.input_keys)
    distinct = 0
    for c in insp.leaves:
        for k, b in zip(c.output_keys, c.output_storage_bytes, strict=True):
            if k not in seen:
                seen.add(k)
                distinct += b
    return FeatureMaps(insp.setup.inputs_bytes, sum(c.output_bytes for c in insp.leaves), distinct,
                       len(insp.leaves), sum(c.aliases_input for c in insp.leaves))


@dataclass
class SeedResult:
    """Components (bytes) of a seed predictor and a note on how they were obtained."""

    components: dict[str, int | None]
    feature_maps: FeatureMaps
    notes: list[str]


def _inspect(model: nn.Module | None, inputs: Any, insp: Inspection | None, **kw: Any) -> Inspection:
    if insp is not None:
        return insp
    if model is None:
        raise ValueError("pass a model (and inputs) or an inspection")
    return inspect_forward(model, inputs, **kw)


def seed_rule(model: nn.Module | None = None, inputs: Any = None, *, mode: str = "train",
              optimizer: str | None = None, batch: int | None = None, dtype: torch.dtype | str = torch.float32,
              amp: bool = False, device: str = "cuda", inspection: Inspection | None = None) -> SeedResult:
    """Seed 000's rule with grads and the optimizer's real state count (see module docstring).

    ``params x B x (1 + 1 + k) + features x 2`` (train), ``params x B + features`` (inference),
    features = seed 003's plain leaf-output sum plus the input, B = the parameters' bytes per value.
    """
    insp = _inspect(model, inputs, inspection, mode=mode, dtype=dtype, amp=amp, batch=batch, device=device)
    fm = feature_maps(insp)
    train = mode == "train"
    p = insp.setup.params_bytes
    k = OPTIMIZER_STATES_PER_PARAM[optimizer] if train else 0
    grads = insp.setup.trainable_params_bytes if train else 0
    opt_state = k * insp.setup.trainable_params_bytes
    fwd = fm.total_bytes
    bwd = fm.total_bytes if train else 0
    comps: dict[str, int | None] = {
        "params": p, "buffers": None, "grads": grads, "optimizer_state": opt_state, "activations_saved": fwd,
        "inputs": None, "transient": bwd, "workspace": None, "allocator_rounding": None,
        "peak_predicted": p + grads + opt_state + fwd + bwd, "reserved_predicted": None,
    }
    notes = [f"seed 000: params x (1 + {1 if train else 0} grad + {k} optimizer states) "
             f"+ feature maps x {2 if train else 1}; feature maps = input + sum of {fm.n_leaf_calls} leaf outputs"
             + (f" ({fm.n_aliasing_calls} in-place/view outputs counted again)" if fm.n_aliasing_calls else "")]
    return SeedResult(comps, fm, notes)


def seed_per_layer_rule(model: nn.Module | None = None, inputs: Any = None, *, mode: str = "train",
                        batch: int | None = None, dtype: torch.dtype | str = torch.float32, amp: bool = False,
                        device: str = "cuda", inspection: Inspection | None = None) -> SeedResult:
    """Seed 003: parameter bytes + input + sum over leaf module calls of output bytes."""
    insp = _inspect(model, inputs, inspection, mode=mode, dtype=dtype, amp=amp, batch=batch, device=device)
    fm = feature_maps(insp)
    p = insp.setup.params_bytes
    comps: dict[str, int | None] = {
        "params": p, "buffers": None, "grads": None, "optimizer_state": None, "activations_saved": fm.total_bytes,
        "inputs": None, "transient": None, "workspace": None, "allocator_rounding": None,
        "peak_predicted": p + fm.total_bytes, "reserved_predicted": None,
    }
    notes = [f"seed 003: params + input + leaf outputs; each storage once: {fm.total_distinct_bytes} B"]
    return SeedResult(comps, fm, notes)
