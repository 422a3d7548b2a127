"""How a command ends on a signal: SIGINT (Ctrl-C), SIGTERM and SIGHUP all end it the same way.

The first of them raises :class:`Interrupted` (a ``KeyboardInterrupt``) where the command is, so
every ``finally`` and ``except BaseException`` on the way out runs: the ``--out`` folder's
temporary sibling is removed (:func:`hwprof.files.atomic_dir`), the model is restored, and
``main`` prints one line and returns 128 + the signal's number. Any signal after the first is
ignored: a user pressing Ctrl-C five times must not interrupt that cleanup, nor the line, with a
second ``KeyboardInterrupt`` and its traceback. A signal the process was started ignoring
(``nohup`` ignores SIGHUP) stays ignored.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Interrupted", "ending_signals", "exit_code", "describe"]

ENDING_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """The command was ended by signal ``signum`` (SIGINT, SIGTERM or SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def exit_code(e: KeyboardInterrupt) -> int:
    """128 + the signal's number, what shells report for a job a signal ended (130 for Ctrl-C,
    and for a KeyboardInterrupt raised without a signal)."""
    return 128 + int(getattr(e, "signum", signal.SIGINT))


def describe(e: KeyboardInterrupt) -> str:
    """``interrupted`` for Ctrl-C, ``interrupted (SIGTERM)`` for another signal."""
    signum = int(getattr(e, "signum", signal.SIGINT))
    return "interrupted" if signum == signal.SIGINT else f"interrupted ({signal.Signals(signum).name})"


@contextlib.contextmanager
def ending_signals(keep_ignoring: bool = False) -> Iterator[None]:
    """Within the block, the first SIGINT, SIGTERM or SIGHUP raises :class:`Interrupted` and later
    ones are ignored (see the module docstring). On the way out the previous handlers come back,
    unless ``keep_ignoring`` and a signal came: a process about to exit keeps ignoring them (the
    interpreter's own teardown must not show a traceback either). Only in the main thread (the
    only one that can set handlers); elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if came:
            return
        came.append(signum)
        raise Interrupted(signum)
    previous = {}
    for s in ENDING_SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            previous[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, signal.SIG_IGN if came and keep_ignoring else h)
