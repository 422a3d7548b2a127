"""hwprof's exceptions: each says what failed and where, in one line."""

from __future__ import annotations

__all__ = ["HwprofError", "InputShapeError", "MeasurementError", "DeviceUnavailableError", "OutputPathError",
           "ModelBuildError", "is_oom"]


class HwprofError(Exception):
    """Base class of hwprof's own errors."""


class InputShapeError(HwprofError, ValueError):
    """The model failed on the given inputs; names the innermost module that raised and its input shapes."""

    def __init__(self, module_path: str, module_type: str, input_shapes: list, cause: BaseException) -> None:
        self.module_path = module_path
        self.module_type = module_type
        self.input_shapes = input_shapes
        self.cause = cause
        where = module_path or "<root>"
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        super().__init__(f"module '{where}' ({module_type}) failed on input shapes {input_shapes}: {first}")


class MeasurementError(HwprofError, RuntimeError):
    """A timed run failed (e.g. out of memory): which phase, at which batch, and what the allocator held."""

    def __init__(self, phase: str, batch: int | None, message: str, allocated_bytes: int | None = None,
                 reserved_bytes: int | None = None, oom: bool = False) -> None:
        self.phase = phase
        self.batch = batch
        self.allocated_bytes = allocated_bytes
        self.reserved_bytes = reserved_bytes
        self.oom = oom
        mem = ""
        if allocated_bytes is not None:
            mem = f"; allocator held {allocated_bytes / 2**20:.1f} MiB allocated"
            if reserved_bytes is not None:
                mem += f", {reserved_bytes / 2**20:.1f} MiB reserved"
        super().__init__(f"{'out of memory' if oom else 'failure'} in phase '{phase}' at batch {batch}{mem}: {message}")


class DeviceUnavailableError(HwprofError, RuntimeError):
    """The requested device is not usable here (e.g. device='cuda' without CUDA)."""


class OutputPathError(HwprofError, OSError):
    """An output folder (``--out``) that cannot be written: below a file, an existing file, a place
    where no folder can be created, or a folder hwprof did not write and will not replace."""


class ModelBuildError(HwprofError, RuntimeError):
    """The model's own constructor (a ``package.module:factory``) raised; names the model and the cause."""

    def __init__(self, name: str, cause: BaseException) -> None:
        self.name = name
        self.cause = cause
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        super().__init__(f"building model {name!r} failed: {type(cause).__name__}: {first}".rstrip(": "))


def is_oom(exc: BaseException) -> bool:
    """Out of memory: ``torch.OutOfMemoryError`` (CUDA), ``MemoryError``, ``MeasurementError(oom=True)``,
    or a RuntimeError saying "out of memory" / "can't allocate memory" (CPU allocator), also when it
    is the cause or context of another exception (up to 8 levels)."""
    import torch

    cur: BaseException | None = exc
    for _ in range(8):
        if cur is None:
            return False
        if isinstance(cur, (torch.OutOfMemoryError, MemoryError)) or (isinstance(cur, MeasurementError) and cur.oom):
            return True
        text = str(cur).lower()
        if isinstance(cur, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
            return True
        cur = cur.__cause__ or cur.__context__
    return False
