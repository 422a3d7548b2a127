"""The distributed side of the commands: ``--parallel ddp|fsdp`` under ``torchrun`` (measure, profile,
``ceilings --collectives``) and ``--parallel ... --world-size N`` predictions in one process (count, memory).

Under ``torchrun`` every rank runs the command; only rank 0 prints and writes. A failure on any
rank (a rank that dies, a collective that times out, a backend this build lacks) is one line
on rank 0's stderr, exit code 2; every rank exits without waiting longer than the process-group
timeout (``--dist-timeout``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hwprof.cli.common import path_arg, positive_seconds, strict_int, whole_number
from hwprof.distributed.group import DEFAULT_TIMEOUT_S, GroupInfo
from hwprof.files import write_atomic, write_json_atomic
from hwprof.report.tables import human, render

__all__ = ["add_launch_options", "add_group_options", "add_predict_options", "run_on_ranks", "measure_command", "profile_command",
           "ceilings_command", "prediction_lines", "memory_command", "distributed_text"]


def add_launch_options(p: argparse.ArgumentParser) -> None:
    """``--parallel``, ``--backend``, ``--dist-timeout`` (a run under torchrun)."""
    p.add_argument("--parallel", choices=("ddp", "fsdp"), default=None,
                   help="under torchrun: wrap the model in DistributedDataParallel or shard it with FSDP2 "
                        "(fully_shard per block and root); every rank measures, rank 0 reports")
    p.add_argument("--reps", type=whole_number(1, 100000), default=10, metavar="N",
                   help="--parallel: repetitions per phase on every rank (fixed: ranks must issue the same "
                        "collectives; default 10)")
    p.add_argument("--collective-ceilings", default=None, metavar="FILE", type=path_arg,
                   help="--parallel: place the collectives against this ceiling (collective-ceilings.json, written "
                        "by `ceilings --collectives --out DIR`) instead of the cached one")
    add_group_options(p)


def add_group_options(p: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--dist-timeout``: the process group a torchrun run sets up."""
    p.add_argument("--backend", choices=("gloo", "nccl"), default=None,
                   help="process-group backend (default: nccl for cuda, gloo otherwise)")
    p.add_argument("--dist-timeout", type=positive_seconds, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"process-group timeout: a collective waiting longer fails (default {DEFAULT_TIMEOUT_S:g} s)")


def add_predict_options(p: argparse.ArgumentParser, several: bool = False) -> None:
    """``--parallel`` and ``--world-size`` (a prediction on torch's fake process group, one process)."""
    p.add_argument("--parallel", choices=("ddp", "fsdp"), default=None,
                   help="predict per rank for data-parallel (ddp) or FSDP2-sharded (fsdp) training")
    p.add_argument("--world-size", type=_world_size_arg, default=None, metavar="N" + (",N..." if several else ""),
                   help="ranks to predict for with --parallel" + (" (several: 8,64,512)" if several else ""))


def _world_size_arg(text: str) -> str:
    """``--world-size`` as given, once it is whole numbers >= 1 separated by commas (parse time)."""
    try:
        sizes = [strict_int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number (or a comma list), got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected ranks >= 1, got {text!r}")
    return text


def world_sizes(args: argparse.Namespace) -> list[int]:
    """``--world-size`` as a list of ints (>= 1); a one-line error for anything else."""
    from hwprof.distributed.group import DistributedError

    if args.world_size is None:
        raise DistributedError("--parallel needs --world-size N (the ranks to predict for)")
    try:
        sizes = [strict_int(s) for s in str(args.world_size).split(",") if s.strip()]
    except ValueError:
        raise DistributedError(f"--world-size must be a whole number (or a comma list), got {args.world_size!r}") \
            from None
    if not sizes or min(sizes) < 1:
        raise DistributedError(f"--world-size must be >= 1, got {args.world_size!r}")
    return sizes


# --------------------------------------------------------------------------- running on every rank
class _Stopped(Exception):
    """SIGTERM from the launcher (another rank failed)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    from hwprof.distributed.group import STOPPED

    raise _Stopped(f"{STOPPED} (SIGTERM): another rank failed")


REPORT_GRACE_S = 5.0
"""How long a rank other than 0 waits before it exits on its own error: the launcher stops every rank as soon
as one exits, and rank 0 must have written its line first."""


def run_on_ranks(args: argparse.Namespace, command: str, body: Callable[[GroupInfo], int]) -> int:
    """``body(info)`` on every rank inside :func:`hwprof.distributed.group.process_group`. Rank 0 prints a failure
    as one line (:func:`hwprof.distributed.group.explain`); every rank then exits with code 2 (``os._exit``:
    the interpreter's teardown would wait on a process group whose peers are gone), a rank other than 0
    that failed on its own after :data:`REPORT_GRACE_S` (or when rank 0 is done and the launcher stops it)."""
    from hwprof.distributed.group import _is_peer_failure, explain, process_group, require_torchrun

    require_torchrun()     # outside torchrun: an ordinary one-line error, no process to stop
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        logging.getLogger("hwprof").setLevel(logging.ERROR)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with process_group(getattr(args, "device", "cpu") or "cpu", args.backend, args.dist_timeout) as info:
            return body(info)
    except BaseException as e:  # noqa: BLE001 - every failure becomes one line and a bounded exit
        if rank == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)   # the launcher stops the others now: finish this line
            print(f"hwprof {command}: error: {explain(rank, e, args.dist_timeout)}", file=sys.stderr)
        elif not _is_peer_failure(e):
            signal.signal(signal.SIGTERM, lambda *_: os._exit(2))   # rank 0 has reported: go
            time.sleep(REPORT_GRACE_S)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130 if isinstance(e, KeyboardInterrupt) else 2)
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- measure / profile
def _ms(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{1e3 * float(v):.2f}"


def _mib(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v) / 2**20:.2f}"


def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.1f}%"


def rank_lines(res: Any) -> list[str]:
    """The per-rank table (ms, MiB), the spread across ranks and the slowest rank."""
    t = res.rank_table()
    shown = pd.DataFrame(index=t.index)
    for col in t.columns:
        if col.endswith("_s"):
            shown[col.removesuffix("_s") + "_ms"] = t[col].map(_ms)
        elif col.endswith("_bytes"):
            shown[col.removesuffix("_bytes") + "_mib"] = t[col].map(_mib)
        else:
            shown[col] = t[col]
    spread = res.spread()
    keys = [k for k in ("iteration_s", "exposed_comm_s", "alloc_trace_peak_bytes") if k in spread]
    slow = res.slowest_rank
    return ["per rank (times: median of each phase, ms; memory MiB):", render(shown, "table"), "",
            "spread across ranks ((max - min) / median): " + ", ".join(f"{k} {_pct(spread[k])}" for k in keys),
            f"slowest rank: {slow} (iteration {_ms(t.loc[slow, 'iteration_s'])} ms)"]


def collective_lines(table: pd.DataFrame) -> list[str]:
    """The collectives of one step: calls, bytes, time, algbw, busbw and, when placed, the ceiling."""
    shown = pd.DataFrame({"phase": table["phase"], "kind": table["kind"], "calls": table["calls"],
                          "bytes": table["bytes"].map(lambda v: human(v, "B", 1024)),
                          "mean_msg": table["mean_message_bytes"].map(lambda v: human(v, "B", 1024)),
                          "time_ms": table["time_s"].map(_ms),
                          "algbw": table["algbw_bytes_per_s"].map(lambda v: human(v, "B/s")),
                          "busbw": table["busbw_bytes_per_s"].map(lambda v: human(v, "B/s"))})
    if "of_ceiling" in table:
        shown["ceiling"] = table["ceiling_busbw_bytes_per_s"].map(lambda v: human(v, "B/s"))
        shown["of_ceiling"] = table["of_ceiling"].map(_pct)
    return ["collectives per step (counted from what dispatched; time from the backend's spans, median over ranks; "
            "busbw = algbw x 2(n-1)/n for all_reduce, (n-1)/n for all_gather / reduce_scatter):",
            render(shown, "table", index=False)]


def phase_lines(res: Any) -> list[str]:
    """Compute, communication and exposed communication per rank and phase (ms)."""
    t = res.phase_table()
    if t.empty:
        return []
    shown = t.assign(**{c: t[c].map(_ms) for c in ("wall_s", "compute_s", "comm_s", "exposed_comm_s")},
                     overlap=t["overlap"].map(_pct))
    shown = shown.rename(columns=lambda c: c.removesuffix("_s") + "_ms" if c.endswith("_s") else c)
    return ["compute and communication per phase (profiled steps, median; exposed = communication no compute "
            "overlapped):", render(shown.drop(columns=["iterations"]), "table", index=False)]


def distributed_text(res: Any, header: str, collectives: pd.DataFrame, ceiling_note: str | None) -> str:
    """The whole text report of a distributed measurement (rank 0)."""
    lines = [header, "", *rank_lines(res), "", *collective_lines(collectives), ""]
    lines += phase_lines(res)
    notes = [*res.notes, *([ceiling_note] if ceiling_note else []), *res.ranks[0].notes,
             *res.ranks[0].measurement.notes]
    lines += [""] + [f"note: {n}" for n in dict.fromkeys(notes)]
    return "\n".join(lines).rstrip()


def _placed(res: Any, info: GroupInfo, ceilings_file: str | None) -> tuple[pd.DataFrame, str | None]:
    """The collective table placed against ``ceilings_file`` (a saved CollectiveCeilings), else the cached
    ceiling of this backend and world size; a note saying which, or that there is none."""
    import json

    from hwprof.distributed.ceilings import CollectiveCeilings, cached_collective_ceilings, place

    if ceilings_file:
        k = CollectiveCeilings.from_dict(json.loads(Path(ceilings_file).read_text()))
        if (k.backend, k.world_size) != (info.backend, info.world_size):
            raise ValueError(f"{ceilings_file} holds the ceiling of {k.backend} on {k.world_size} ranks, not "
                             f"{info.backend} on {info.world_size}")
        flagged = f"; its rounds disagreed on {', '.join(k.flagged)} (a busy machine)" if k.flagged else ""
        return place(res.collectives(), k), f"collectives placed against {ceilings_file} ({k.date}{flagged})"
    cached = cached_collective_ceilings(info.backend, info.world_size, info.device)
    note = None if cached is not None else (
        f"no communication ceiling cached for {info.backend} on {info.world_size} ranks: run `torchrun "
        f"--nproc_per_node {info.world_size} -m hwprof ceilings --collectives` to place the collectives against it")
    return place(res.collectives(), cached), note


def save_distributed(res: Any, out: Path, text: str, table: pd.DataFrame, command: str) -> None:
    """``out/``: distributed.json (every rank's record), ranks.csv, collectives.csv, phases.csv, report.txt,
    command.txt and the manifest, through the commands' one ``--out`` writer (:func:`hwprof.cli.common.out_folder`:
    complete or absent)."""
    from hwprof.cli.common import out_folder

    with out_folder(out) as tmp:
        assert tmp is not None
        write_json_atomic(tmp / "distributed.json", res.to_dict())
        write_json_atomic(tmp / "report.json", report_json(res, table, None))
        write_atomic(tmp / "ranks.csv", render(res.rank_table(), "csv"))
        write_atomic(tmp / "collectives.csv", render(table, "csv", index=False))
        write_atomic(tmp / "phases.csv", render(res.phase_table(), "csv", index=False))
        write_atomic(tmp / "report.txt", text + "\n")
        write_atomic(tmp / "command.txt", command + "\n")


def report_json(res: Any, table: pd.DataFrame, note: str | None) -> dict[str, Any]:
    """The JSON of a distributed measurement: every rank's record, and what the table shows beside them: the
    per-step totals of the collectives (collectives.csv: per kind and phase, bytes, time, bus bandwidth,
    placed against the collective ceiling when there is one), the phases per rank and the ranks' table."""
    from hwprof.files import to_jsonable

    return to_jsonable({**res.to_dict(), "collectives_per_step": table.to_dict(orient="records"),
                        "phases_per_rank": res.phase_table().to_dict(orient="records"),
                        "ranks_table": res.rank_table().reset_index().to_dict(orient="records"),
                        "collective_ceiling_note": note})


def _command_line() -> str:
    return "torchrun ... -m hwprof " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _measure_on_rank(args: argparse.Namespace, config: Any) -> tuple[Any, Any, str]:
    from hwprof.cli.common import build_model
    from hwprof.distributed.measure import measure

    if args.reps < 1:
        raise ValueError(f"--reps must be >= 1, got {args.reps}")
    model, spec = build_model(args)
    return measure(model, spec, args.parallel, config, min_reps=args.reps), model, spec


def measure_command(args: argparse.Namespace, config: Any) -> int:
    """``torchrun ... -m hwprof measure MODEL --parallel ddp|fsdp``."""

    def body(info: GroupInfo) -> int:
        res, _, spec = _measure_on_rank(args, config)
        if info.rank == 0:
            _report(args, res, info, spec)
        return 0

    return run_on_ranks(args, "measure", body)


def _report(args: argparse.Namespace, res: Any, info: GroupInfo, spec: str) -> str:
    m = res.ranks[0].measurement
    c = m.config
    header = (f"{args.model} (input {spec}, batch {m.run.batch} per rank, {m.run.dtype}, {c.mode}"
              + (f", {c.optimizer_name}" if c.optimizer_name else "")
              + f"): {res.parallel} on {res.world_size} ranks, {res.backend}, {m.device.get('name', m.run.device)}")
    table, note = _placed(res, info, args.collective_ceilings)
    text = distributed_text(res, header, table, note)
    if args.format == "json":
        import json

        print(json.dumps(report_json(res, table, note), indent=1))
    elif args.format in ("csv", "md"):
        print(render(res.rank_table(), args.format))
    else:
        print(text)
    if args.out:
        save_distributed(res, Path(args.out), text, table, _command_line())
        print(f"wrote {args.out}/", file=sys.stderr)
    return text


def profile_command(args: argparse.Namespace, config: Any) -> int:
    """``torchrun ... -m hwprof profile MODEL --parallel ...``: the distributed measurement with per-layer and
    per-op passes; rank 0 also joins its own measurement with the count and the ceilings (per-layer roofline)."""

    def body(info: GroupInfo) -> int:
        res, model, spec = _measure_on_rank(args, config)
        if info.rank != 0:
            return 0
        text = _report(args, res, info, spec)
        _rank0_profile(args, res, model, spec, text)
        return 0

    return run_on_ranks(args, "profile", body)


def _rank0_profile(args: argparse.Namespace, res: Any, model: Any, spec: str, text: str) -> None:
    import torch

    from hwprof.counting.counter import count
    from hwprof.distributed.records import user_paths
    from hwprof.hardware.ceilings import measure_ceilings
    from hwprof.profiler import trusted_join
    from hwprof.report.profile_report import summary_lines

    m = user_paths(res.ranks[0].measurement, res.parallel)
    train = m.config.mode == "train"
    c = count(model, spec, backward=train, batch=m.run.batch, dtype=m.config.dtype,
              device=torch.device(m.math_modes.device_type), mode="train" if train else "inference")
    k = measure_ceilings(m.run.device, cache_dir=args.ceilings_cache, quick=args.quick)
    p = trusted_join(c, m, k, name=args.model)
    print("\n".join(["", f"== rank 0's layers on the roofline of {k.device_name}", *summary_lines(p)]))
    if args.out:
        p.save(Path(args.out) / "rank0", command=_command_line())


# --------------------------------------------------------------------------- ceilings --collectives
def ceilings_command(args: argparse.Namespace) -> int:
    """``torchrun ... -m hwprof ceilings --collectives``: busbw per collective and message size."""
    from hwprof.distributed.ceilings import measure_collective_ceilings

    def body(info: GroupInfo) -> int:
        k = measure_collective_ceilings(refresh=args.refresh, cache_dir=args.cache_dir, quick=args.quick,
                                        rounds=args.rounds or 3)
        if info.rank != 0:
            return 0
        t = k.table()
        shown = t.apply(lambda col: col.map(lambda v: human(v, "B/s")))
        shown.index = [human(s, "B", 1024) for s in t.index]
        head = (f"collective busbw on {k.world_size} ranks ({k.backend}, {k.device_name}, host {k.host}, torch "
                f"{k.torch_version}): source {k.source}, {k.date}"
                + (f", cached in {k.cache_file}" if k.cache_file else ", not cached"))
        spread = ", ".join(f"{kind} {_pct(s)}" for kind, s in k.spread.items())
        text = "\n".join([head, render(shown.rename_axis("message"), "table"), f"spread of the best two rounds: {spread}",
                          *[f"note: {n}" for n in k.notes]])
        import json

        print(json.dumps(k.to_dict(), indent=1) if args.format == "json" else text)
        if args.out:
            from hwprof.cli.common import out_folder

            with out_folder(args.out) as tmp:
                assert tmp is not None
                write_json_atomic(tmp / "collective-ceilings.json", k.to_dict())
                write_atomic(tmp / "collective-ceilings.txt", text + "\n")
                write_atomic(tmp / "command.txt", _command_line() + "\n")
            print(f"wrote {args.out}/", file=sys.stderr)
        return 0

    return run_on_ranks(args, "ceilings", body)


# --------------------------------------------------------------------------- predictions
def prediction_lines(pred: Any) -> list[str]:
    """The collectives of one predicted step on one rank."""
    t = pred.collective_table()
    if t.empty:
        return [f"{pred.parallel} on {pred.world_size} ranks: no collectives per step"]
    shown = t.assign(bytes=t["bytes"].map(lambda v: f"{int(v):,}"),
                     mean_message_bytes=t["mean_message_bytes"].map(lambda v: f"{v:,.0f}"))
    return [f"collectives per step on each of {pred.world_size} ranks ({pred.parallel}, fake process group; bytes per "
            "rank, nccl-tests' message size):", render(shown, "table", index=False)]


def memory_command(args: argparse.Namespace, model: Any, spec: str, optimizer: str | None) -> int:
    """``hwprof memory MODEL --parallel ddp|fsdp --world-size N[,N...]``: the predicted per-rank peak for each N."""
    from hwprof.distributed.predict import predict

    rows, preds = [], []
    for n in world_sizes(args):
        p = predict(model, spec, args.parallel, n, mode=args.mode, optimizer=optimizer, batch=args.batch,
                    dtype=args.dtype, device=args.device or "cpu", count_flops=False)
        preds.append(p)
        rows.append({"world_size": n, "peak_bytes": p.peak_bytes, **{f"{k}_bytes": v for k, v in p.at_peak.items()},
                     "peak_in": p.peak_phase})
    df = pd.DataFrame(rows).set_index("world_size").fillna(0)
    head = (f"{args.model} (input {spec}, batch {args.batch} per rank, {args.dtype}, {args.mode}"
            f"{', ' + optimizer if optimizer else ''}): {args.parallel}, predicted per rank for {args.device or 'cpu'}")
    if args.format != "table":
        text = render(df, args.format)
    else:
        shown = df.apply(lambda col: col.map(_mib) if str(col.name).endswith("_bytes") else col)
        shown.columns = [str(c).replace("_bytes", "_mib") for c in shown.columns]
        text = "\n".join([head, "", "predicted peak of live tensor bytes per rank (MiB; by category at the peak):",
                          render(shown, "table"), "", *prediction_lines(preds[-1]), "",
                          *[f"note: {n}" for n in dict.fromkeys(preds[-1].notes)]])
    print(text)
    if args.out:
        write_atomic(Path(args.out), text + "\n")
    return 0
