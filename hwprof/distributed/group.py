"""The process group of a run launched by ``torchrun``, with bounded waits and one-line failures.

``torchrun --nproc_per_node N -m hwprof ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`process_group` checks them and
the backend (gloo on CPU, NCCL on CUDA) before anything else, then initialises the default
group with a bounded ``timeout``: a collective waiting for a rank that hangs fails after
``timeout_s`` instead of the 30 minutes torch defaults to, and a rank that dies makes the
others' next collective fail at once (gloo: "Connection closed by peer").

When a rank fails it writes one line about it to the group's store (``hwprof/failure``; the
store lives in the ``torchrun`` agent, which outlives the ranks); :func:`explain` turns the
error a surviving rank sees into one line that names the failed rank when it can. The CLI
prints it on rank 0 only.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from hwprof.errors import HwprofError

__all__ = ["DistributedError", "GroupInfo", "torchrun_env", "default_backend", "check_backend", "process_group",
           "explain", "post_failure", "require_torchrun", "DEFAULT_TIMEOUT_S", "FAILURE_KEY", "STOPPED"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300.0
FAILURE_KEY = "hwprof/failure"
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(HwprofError, RuntimeError):
    """A distributed run could not start or failed: one line that says where and why."""


@dataclass(frozen=True)
class GroupInfo:
    """This process's place in the group and the device it runs on."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    timeout_s: float


def torchrun_env() -> dict[str, str] | None:
    """The launcher's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), or
    None when one is missing (not started by ``torchrun``)."""
    env = {k: os.environ.get(k) for k in _ENV}
    return None if any(v is None for v in env.values()) else {k: str(v) for k, v in env.items()}


def require_torchrun() -> dict[str, str]:
    """:func:`torchrun_env`, or a one-line DistributedError saying how to launch (none is needed when a process
    group is initialised already)."""
    import torch.distributed as dist

    env = torchrun_env()
    if env is None and not (dist.is_available() and dist.is_initialized()):
        raise DistributedError("a distributed run needs torchrun's environment (RANK, WORLD_SIZE, ...): launch it as "
                               "`torchrun --nproc_per_node N -m hwprof ...`")
    return env or {}


def default_backend(device: str) -> str:
    """NCCL for a CUDA device ("cuda", "cuda:1"), gloo otherwise."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def check_backend(backend: str, device: str) -> None:
    """DistributedError (one line) when ``backend`` cannot run here: unknown, not built into this torch, or NCCL
    without a CUDA device."""
    import torch.distributed as dist

    if not dist.is_available():
        raise DistributedError(f"this torch build ({torch.__version__}) has no torch.distributed")
    known = ("gloo", "nccl", "mpi", "ucc", "xccl")
    if backend not in known:
        raise DistributedError(f"unknown backend {backend!r}; expected one of {', '.join(known)}")
    if not dist.is_backend_available(backend):
        have = [b for b in known if dist.is_backend_available(b)]
        raise DistributedError(f"backend {backend!r} is not available in this torch build ({torch.__version__}); "
                               f"available: {', '.join(have) or 'none'}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise DistributedError("backend 'nccl' needs a CUDA device and none is available; use --backend gloo on CPU")
    if backend == "gloo" and str(device).startswith("cuda"):
        log.warning("gloo on CUDA tensors copies every message through the host; NCCL is the CUDA backend")


def _device(backend: str, device: str, local_rank: int) -> torch.device:
    if backend == "nccl" or str(device).startswith("cuda"):
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


@contextlib.contextmanager
def process_group(device: str = "cpu", backend: str | None = None,
                  timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[GroupInfo]:
    """The default process group for the block: reused when one is initialised already (and then left
    open), else initialised from ``torchrun``'s environment with ``timeout_s`` and, on a clean exit,
    destroyed after a barrier (every rank leaves together). A failure inside is written to the store
    (:func:`post_failure`) and re-raised."""
    import torch.distributed as dist

    if dist.is_initialized():
        be = str(dist.get_backend())
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        yield GroupInfo(dist.get_rank(), dist.get_world_size(), local, be, _device(be, device, local), timeout_s)
        return
    env = require_torchrun()
    be = backend or default_backend(device)
    check_backend(be, device)
    if timeout_s <= 0:
        raise DistributedError(f"the process-group timeout must be > 0 s, got {timeout_s}")
    local = int(env["LOCAL_RANK"])
    dev = _device(be, device, local)
    dist.init_process_group(be, timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=dev if dev.type == "cuda" else None)
    info = GroupInfo(dist.get_rank(), dist.get_world_size(), local, be, dev, timeout_s)
    try:
        yield info
    except BaseException as e:
        post_failure(info.rank, e)
        raise
    try:
        dist.barrier()   # leave together: a gloo rank whose peer tears its pairs down mid-exit can abort (SIGABRT)
    finally:
        dist.destroy_process_group()


STOPPED = "stopped by the launcher"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, HwprofError):
        return text.splitlines()[0] if text else type(e).__name__
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _is_peer_failure(e: BaseException) -> bool:
    """A collective that failed because of another rank (closed connection, timeout, aborted communicator), or
    this rank stopped by the launcher after another one failed."""
    text = str(e).lower()
    cues = ("connection closed", "connection reset", "timed out", "timeout", "broken pipe", "aborted",
            "remote worker", "nccl communicator", STOPPED)
    return type(e).__name__ in ("DistBackendError", "DistNetworkError") or any(c in text for c in cues)


def post_failure(rank: int, e: BaseException) -> None:
    """Write ``rank <r>: <first line of e>`` to the store unless ``e`` is itself the echo of another rank's
    failure; never raises (the store may be gone)."""
    if _is_peer_failure(e) or isinstance(e, (KeyboardInterrupt, SystemExit)):
        return
    try:
        import torch.distributed.distributed_c10d as c10d

        store = c10d._get_default_store()
        store.compare_set(FAILURE_KEY, "", f"rank {rank}: {_first_line(e)}")
    except Exception as err:  # noqa: BLE001 - best effort, the run is failing already
        log.debug("could not post the failure to the store: %s", err)


def _posted_failure(wait_s: float = 0.5) -> str | None:
    """The failure another rank wrote to the store, polling for up to ``wait_s``; None if there is none."""
    import time

    try:
        import torch.distributed.distributed_c10d as c10d

        store = c10d._get_default_store()
        deadline = time.monotonic() + wait_s
        while not store.check([FAILURE_KEY]):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return store.get(FAILURE_KEY).decode()
    except Exception:  # noqa: BLE001 - the store is unreachable
        return None


def explain(rank: int, e: BaseException, timeout_s: float) -> str:
    """One line for the failure ``e`` that ``rank`` saw: its own error; or, when it failed because of another
    rank, that rank's posted line when there is one, else what happened (a rank that died, one that did
    not answer within ``timeout_s``, or this rank stopped by the launcher)."""
    if not _is_peer_failure(e):
        return f"rank {rank}: {_first_line(e)}" if rank else _first_line(e)
    posted = _posted_failure()
    if posted is not None:
        return f"{posted} (rank {rank} stopped at its next collective)"
    low = str(e).lower()
    if STOPPED in low:
        return (f"another rank died or failed and the launcher stopped rank {rank} (torchrun's summary names the "
                "rank)")
    if "timed out" in low or "timeout" in low:
        return f"a rank did not answer within the {timeout_s:g} s process-group timeout ({_first_line(e)})"
    return f"another rank died; rank {rank}'s collective failed: {_first_line(e)}"
