"""Memory models: what a training step (or an inference forward) holds, predicted four ways.

* ``seed``           - the seed documents' rules (``seed.py``);
* ``formula``        - closed-form accounting from the tensors autograd saves (``formula.py``);
* ``simulate``       - a replay of the step on fake tensors through a model of the CUDA
                       caching allocator (``simulate.py``, ``allocator.py``);
* ``validate``/``fit`` - comparison with a measured step, and the largest batch that fits.

Entry point: :func:`hwprof.estimate_memory` (``estimate.py``).
"""

from __future__ import annotations

from hwprof.memory.estimate import COMPONENTS, PREDICTORS, MemoryEstimate, estimate_memory

__all__ = ["estimate_memory", "MemoryEstimate", "PREDICTORS", "COMPONENTS"]
