"""What every result manifest records about the software that produced it."""

from __future__ import annotations

import platform
from typing import Any

__all__ = ["versions"]


def versions() -> dict[str, Any]:
    """hwprof, Python, torch, CUDA, cuDNN, pandas, matplotlib and plotly versions (None where absent)."""
    import pandas as pd
    import torch

    import hwprof

    v: dict[str, Any] = {"hwprof": hwprof.__version__, "python": platform.python_version(), "torch": torch.__version__,
                         "cuda": torch.version.cuda, "pandas": pd.__version__, "platform": platform.platform()}
    try:
        v["cudnn"] = torch.backends.cudnn.version()
    except RuntimeError:
        v["cudnn"] = None
    for name in ("matplotlib", "plotly"):
        try:
            v[name] = __import__(name).__version__
        except ImportError:
            v[name] = None
    return v
