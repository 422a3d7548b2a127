"""``torch.profiler`` sessions that keep Kineto's start/stop lines off the terminal.

Kineto (libkineto, inside libtorch_cpu) writes ``USDT:... profiler_start`` / ``profiler_stop`` lines
straight to file descriptor 2 whenever a session starts or stops; its only switch,
``KINETO_LOG_LEVEL``, is read once per process, at the first session, so an API call cannot set it
and put it back. :func:`quiet_profile` is ``torch.profiler.profile`` whose ``__enter__`` and
``__exit__`` (only those: never the code the session records, whose output is the user's) run with
fd 2 pointed at ``/dev/null``. A user who set ``KINETO_LOG_LEVEL`` chose what to see: then nothing
is redirected. (The CLI sets ``KINETO_LOG_LEVEL=6`` before torch starts: :mod:`hwprof.cli.common`.)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["quiet_profile", "fd2_silenced"]


@contextlib.contextmanager
def fd2_silenced() -> Iterator[None]:
    """File descriptor 2 to ``/dev/null`` inside the block (Python's ``sys.stderr`` flushed first); nothing
    when ``KINETO_LOG_LEVEL`` is set or fd 2 cannot be duplicated."""
    if os.environ.get("KINETO_LOG_LEVEL"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietProfile:
    """A ``torch.profiler.profile`` whose start and stop run under :func:`fd2_silenced`."""

    def __init__(self, **kwargs: Any) -> None:
        from torch.profiler import profile

        self.prof = profile(**kwargs)

    def __enter__(self) -> Any:
        with fd2_silenced():
            self.prof.__enter__()
        return self.prof

    def __exit__(self, *exc: Any) -> None:
        with fd2_silenced():
            self.prof.__exit__(*exc)


def quiet_profile(**kwargs: Any) -> _QuietProfile:
    """``with quiet_profile(activities=..., profile_memory=True) as prof:``: ``torch.profiler.profile(**kwargs)``,
    its session lines kept off the terminal (module docstring)."""
    return _QuietProfile(**kwargs)
