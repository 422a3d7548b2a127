"""`hwprof ceilings`: measure (or read from cache) this machine's peak FLOP/s per dtype and its bandwidth."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from hwprof.cli.common import add_output_options, emit_all, path_arg, whole_number
from hwprof.cli.parallel import add_group_options
from hwprof.files import to_jsonable
from hwprof.hardware.ceilings import Ceilings
from hwprof.report.tables import human, render


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--refresh", action="store_true", help="re-measure even when a cached result exists")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke check, not a ceiling")
    p.add_argument("--cache-dir", default=None, type=path_arg,
                   help="where results are cached (default $HWPROF_CACHE_DIR/ceilings, else the user cache folder, "
                        "e.g. ~/.cache/hwprof/ceilings)")
    p.add_argument("--rounds", type=whole_number(2, 100), default=None,
                   help="interleaved rounds of trials; a ceiling is the best trial (default 3, at least 2)")
    p.add_argument("--collectives", action="store_true",
                   help="under torchrun: busbw of all_reduce, all_gather, reduce_scatter and broadcast over 1 KiB to "
                        "256 MiB messages, cached per backend and world size")
    add_group_options(p)
    p.add_argument("--plot", metavar="PNG", default=None, type=path_arg,
                   help="also plot the memory-level sweep (bandwidth against working set) to PNG (+ SVG beside it)")
    add_output_options(p)


def table(k: Ceilings) -> pd.DataFrame:
    """One row per ceiling: measured, datasheet, measured/datasheet, and the spread of its rounds
    ((best - second best) / best), FLOP/s rows then bytes_per_s."""
    sheet = k.datasheet or {}
    rows = [{"ceiling": f"{mode}_flop_per_s", "measured": v, "datasheet": sheet.get(mode),
             "ratio": k.ratio_to_datasheet.get(mode), "spread": k.spread.get(mode)} for mode, v in k.flop_per_s.items()]
    rows.append({"ceiling": "bytes_per_s", "measured": k.bytes_per_s, "datasheet": sheet.get("bytes_per_s"),
                 "ratio": k.ratio_to_datasheet.get("bytes_per_s"), "spread": k.spread.get("bytes_per_s")})
    rows += [{"ceiling": f"{lv.name}_bytes_per_s", "measured": lv.bytes_per_s, "datasheet": None, "ratio": None,
              "spread": k.spread.get(f"{lv.name}_bytes_per_s")} for lv in k.levels if lv.capacity_bytes is not None]
    return pd.DataFrame(rows).set_index("ceiling")


def level_table(k: Ceilings) -> pd.DataFrame:
    """One row per memory level: effective and reported capacity, bandwidth (strings)."""
    return pd.DataFrame([{"level": lv.name,
                          "capacity": human(lv.capacity_bytes, "B", 1024) if lv.capacity_bytes else "-",
                          "reported": human(lv.reported_bytes, "B", 1024) if lv.reported_bytes else "-",
                          "bandwidth": human(lv.bytes_per_s, "B/s") if lv.bytes_per_s else "not resolved",
                          "from": lv.source} for lv in k.levels]).set_index("level")


def sweep_table(k: Ceilings) -> pd.DataFrame:
    """One row per working set of the sweep: best time, bandwidth without and with the op overhead, level."""
    return pd.DataFrame([{"working_set": human(p.working_set_bytes, "B", 1024), "time": f"{p.time_s * 1e6:.2f} us",
                          "bandwidth": human(p.bytes_per_s, "B/s") if p.bytes_per_s == p.bytes_per_s else "unresolved",
                          "raw": human(p.raw_bytes_per_s, "B/s"), "level": p.level} for p in k.sweep])


def _pct(v: float | None, digits: int = 0) -> str:
    return "-" if v is None or v != v else f"{100 * v:.{digits}f}%"


def run(args: argparse.Namespace) -> int:
    if args.collectives:
        from hwprof.cli.parallel import ceilings_command
        return ceilings_command(args)
    from hwprof.hardware.ceilings import DEFAULT_ROUNDS, measure_ceilings
    k = measure_ceilings(device=args.device, refresh=args.refresh, cache_dir=args.cache_dir, quick=args.quick,
                         rounds=args.rounds or DEFAULT_ROUNDS)
    df = table(k)
    if args.plot:
        from hwprof.report.plots import sweep_plot

        sweep_plot(k, args.plot)
    emit_all(args, {"table": _text(k, df), "json": json.dumps(to_jsonable(k.to_dict()), indent=1),
                    **{fmt: render(df, fmt).rstrip("\n") for fmt in ("csv", "md")}})
    return 0


def _text(k: Ceilings, df: pd.DataFrame) -> str:
    """The table view: the head (device, source, rounds, cache), the ceilings, the levels and sweep, the notes."""
    shown = df.copy()
    for col in ("measured", "datasheet"):
        shown[col] = [human(v, "B/s" if name.endswith("bytes_per_s") else "FLOP/s") for name, v in df[col].items()]
    shown["ratio"] = df["ratio"].map(_pct)
    shown["spread"] = [_pct(v, 1) + (" FLAGGED" if name.removesuffix("_flop_per_s") in k.flagged else "")
                       for name, v in df["spread"].items()]
    rounds = len({t.round for t in k.trials})
    head = (f"{k.device_name} ({k.device_type}, torch {k.torch_version}, {k.threads} threads, host {k.host}): "
            f"source {k.source}, measured {k.date}, best of {rounds} rounds"
            + (f", cached in {k.cache_file}" if k.cache_file else ", not cached"))
    notes = "".join(f"\nnote: {n}" for n in k.notes)
    levels = ""
    if k.levels:
        over = f"{k.op_overhead_s * 1e6:.2f} us" if k.op_overhead_s else "-"
        levels = (f"\n\nmemory levels (working-set copy sweep, best of the rounds; op overhead {over} taken out):\n"
                  + render(level_table(k), "table") + "\n\n" + render(sweep_table(k), "table", index=False))
    return head + "\n" + render(shown, "table") + levels + notes
