"""What ``torch.optim``'s optimizers hold beside the parameters: their state tensors and the
temporaries of ``step()`` (shared by the seed, formula and simulated predictors' accounting)."""

from __future__ import annotations

from hwprof.training import OPTIMIZERS

__all__ = ["OPTIMIZER_STATES_PER_PARAM", "optimizer_state_bytes", "step_transient_bytes"]

#: optimizer name -> state tensors kept per trainable parameter (same shape and dtype):
#: plain SGD none, SGD with momentum one ``momentum_buffer``, Adam/AdamW ``exp_avg`` and
#: ``exp_avg_sq`` (torch.optim; the per-parameter ``step`` counter is a CPU scalar).
OPTIMIZER_STATES_PER_PARAM: dict[str | None, int] = {None: 0, "sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}


def optimizer_state_bytes(optimizer: str | None, trainable_params_bytes: int) -> int:
    """``k x trainable parameter bytes`` with k from ``OPTIMIZER_STATES_PER_PARAM``."""
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS} or None")
    return OPTIMIZER_STATES_PER_PARAM[optimizer] * trainable_params_bytes


def step_transient_bytes(optimizer: str | None, device: str, trainable_param_sizes: list[int]) -> int:
    """Temporaries of ``optimizer.step()`` beyond its state (torch.optim's default implementations):

    * Adam/AdamW on CUDA (``foreach=True``): ``_foreach_sqrt`` of every second moment, P bytes;
    * Adam/AdamW on CPU (one tensor at a time): ``exp_avg_sq.sqrt() / bias_correction2_sqrt``
      holds two tensors the size of the parameter at once: 2 x the largest parameter;
    * SGD (with or without momentum): updates in place, 0."""
    if optimizer not in ("adam", "adamw"):
        return 0
    if device == "cuda":
        return sum(trainable_param_sizes)
    return 2 * max(trainable_param_sizes, default=0)
