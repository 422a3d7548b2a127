"""Memory models: what a training step (or an inference forward) holds, predicted four ways
(:func:`hwprof.estimate_memory`'s ``seed``, ``seed_per_layer``, ``formula`` and ``simulated``).

* ``seed``           - the seed documents' rules, one of seed 000 and one of seed 003 (``seed.py``);
* ``formula``        - closed-form accounting from the tensors autograd saves (``formula.py``);
* ``simulate``       - a replay of the step on fake tensors through a model of the CUDA
                       caching allocator (``simulate.py``, the driver; ``tracker.py``, the
                       dispatch-mode tracker of storages; ``allocator.py``);
* ``validate``/``fit`` - comparison with a measured step, and the largest batch that fits.

Shared by the predictors: ``fake_model.py`` (the fake copy of the model and its storages),
``cuda_kernels.py`` (CUDA's kernels run on a fake-CPU replay), ``storage.py`` (storage identity
and size), ``optimizer_state.py`` (what torch.optim keeps beside the parameters).

Entry point: :func:`hwprof.estimate_memory` (``estimate.py``).
"""

from __future__ import annotations

from hwprof.memory.estimate import COMPONENTS, PREDICTORS, MemoryEstimate, estimate_memory

__all__ = ["estimate_memory", "MemoryEstimate", "PREDICTORS", "COMPONENTS"]
