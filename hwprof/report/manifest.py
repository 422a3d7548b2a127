"""What every result manifest records about the software that produced it."""

from __future__ import annotations

import platform
from typing import Any

__all__ = ["versions"]


def versions() -> dict[str, Any]:
    """hwprof, Python, torch, CUDA, cuDNN, pandas and matplotlib versions (None where absent)."""
    import pandas as pd
    import torch

    import hwprof

    v: dict[str, Any] = {"hwprof": hwprof.__version__, "python": platform.python_version(), "torch": torch.__version__,
                         "cuda": torch.version.cuda, "pandas": pd.__version__, "platform": platform.platform()}
    try:
        v["cudnn"] = torch.backends.cudnn.version()
    except RuntimeError:
        v["cudnn"] = None
    try:
        import matplotlib
        v["matplotlib"] = matplotlib.__version__
    except ImportError:
        v["matplotlib"] = None
    return v
