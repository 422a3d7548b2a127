"""`hwprof measure MODEL`: timed forward / backward / optimizer step, per-layer times and memory peaks."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from hwprof.cli.common import (
    add_amp_option,
    add_model_options,
    add_output_options,
    build_model,
    dtype_arg,
    emit_all,
    positive_seconds,
    whole_number,
)
from hwprof.cli.parallel import add_launch_options
from hwprof.files import to_jsonable
from hwprof.measuring.records import MeasureConfig
from hwprof.report.profile_report import memory_lines
from hwprof.report.tables import render


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--mode", choices=("inference", "train"), default="inference",
                   help="inference: forward without grad; train: forward, backward (and step with --optimizer)")
    p.add_argument("--optimizer", default=None, choices=("sgd", "momentum", "adam", "adamw"),
                   help="train mode: also time the optimizer step")
    p.add_argument("--per-layer", action="store_true", help="also time every module (separate hooked pass)")
    p.add_argument("--depth", type=whole_number(0, 1000), default=None, help="per-layer: deepest module path depth to time")
    p.add_argument("--per-op", action="store_true", help="also time every aten op (separate torch.profiler pass)")
    p.add_argument("--dtype", type=dtype_arg, default=None, help="fp32 | bf16 | fp16 (default: the model's)")
    add_amp_option(p)
    p.add_argument("--channels-last", action="store_true", help="run in channels_last memory format")
    p.add_argument("--budget", type=positive_seconds, default=1.0, metavar="S", help="seconds of timed repetitions per phase")
    p.add_argument("--warmup", type=whole_number(0, 1000), default=3, help="untimed repetitions before timing (default 3)")
    p.add_argument("--threads", type=whole_number(1, 1024), default=None, help="torch intra-op threads for the run")
    p.add_argument("--l2-flush", action="store_true", help="write a buffer larger than L2 before each repetition")
    add_launch_options(p)
    add_output_options(p)


def check_optimizer(args: argparse.Namespace) -> None:
    """``--optimizer`` only with ``--mode train`` (its step is part of a training step): one line, before work."""
    if getattr(args, "optimizer", None) and args.mode != "train":
        from hwprof.errors import HwprofError
        raise HwprofError(f"--optimizer {args.optimizer} needs --mode train (the optimizer step is part of a training "
                          "step)")


def config_of(args: argparse.Namespace) -> MeasureConfig:
    """The :class:`MeasureConfig` the command line asks for."""
    check_optimizer(args)
    return MeasureConfig(device=args.device, mode=args.mode, optimizer=args.optimizer, per_layer=args.per_layer,
                         depth=args.depth, per_op=args.per_op, batch=args.batch, dtype=args.dtype,
                         channels_last=args.channels_last, budget_s=args.budget, warmup=args.warmup,
                         l2_flush=args.l2_flush, threads=args.threads, amp=args.amp)


def run(args: argparse.Namespace) -> int:
    check_optimizer(args)
    if args.parallel:
        from hwprof.cli.parallel import measure_command
        return measure_command(args, config_of(args))
    from hwprof.measuring.runner import measure
    model, spec = build_model(args)
    m = measure(model, spec, config_of(args))
    emit_all(args, _outputs(args, spec, m))
    return 0


def _outputs(args: argparse.Namespace, spec: str, m: Any) -> dict[str, str]:
    """Every format of the result (what ``--out`` writes, ``--format`` picking the one printed): the
    text view, the record as JSON, the tables in Markdown, and the layer (``--per-layer``) or phase table as CSV."""
    md = "## phases\n\n" + render(m.phases, "md")
    if args.per_layer:
        md += "\n## layers\n\n" + render(m.layers, "md")
    if args.per_op:
        md += "\n## ops\n\n" + render(m.ops, "md")
    return {"table": _text(args.model, spec, m),
            "csv": render(m.layers if args.per_layer else m.phases, "csv").rstrip("\n"),
            "json": json.dumps(to_jsonable({"model": args.model, **m.to_dict()}), indent=1),
            "md": md + "\n" + "\n".join(f"- note: {n}" for n in m.notes)}


def _ms(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{1e3 * float(x):.4g} ms"


def _unit_free(col: str) -> str:
    return col[:-2] if col.endswith("_s") else col


def _text(name: str, spec: str, m: Any) -> str:
    c, r, d = m.config, m.run, m.device
    lines = [f"{name} (input {spec}, batch {r.batch}, {r.dtype}" + (f", autocast {r.amp}" if r.amp else "") + f", {c.mode}"
             + (f", {c.optimizer_name}" if c.optimizer_name else "") + f") on {d['type']}: {d['name']}, "
             f"torch {d['torch_version']}, threads {d['threads']}", "", "phases (times in ms; raw seconds in csv/json):"]
    ph = m.phases.copy()
    for col in ("median_s", "iqr_s", "min_s", "mean_s"):
        ph[col] = ph[col].map(_ms)
    ph["iqr_over_median"] = m.phases["iqr_over_median"].map(lambda v: f"{100 * v:.1f}%")
    lines += [render(ph.rename(columns=_unit_free), "table"), ""]
    lines += ["memory:", *memory_lines(m.memory)]
    if not m.layers.empty:
        ly = m.layers.copy()
        for col in ("fwd_s", "bwd_s", "fwd_incl_s", "bwd_incl_s"):
            ly[col] = ly[col].map(_ms)
        ly.index = [p or "<root>" for p in ly.index]
        ly = ly.rename(columns=_unit_free).rename(columns={"fwd": "fwd_self", "bwd": "bwd_self"})
        lines += ["", "per layer (self = inclusive - children; times in ms):", render(ly, "table"), ""]
        lines += layer_sum_lines(m.layer_sum)
    if len(m.ops):
        top = m.ops.assign(time=m.ops["time_s"].map(_ms)).sort_values("time_s", ascending=False).head(15)
        lines += ["", f"slowest aten ops of {len(m.ops)} (torch.profiler pass):",
                  render(top[["phase", "op", "time"]], "table")]
    lines += [""] + [f"note: {n}" for n in m.notes]
    return "\n".join(lines).rstrip()



def layer_sum_lines(s: dict[str, Any]) -> list[str]:
    """Per phase: the whole-model median beside the sum of per-layer self times, and the paired ratio
    sum(per-layer self) / whole with its spread (median, q25-q75 over the pairs of repetitions)."""
    lines = []
    for ph in ("fwd", "bwd"):
        if s.get(f"{ph}_whole_s") is None:
            continue
        ratio = s.get(f"{ph}_ratio")
        line = (f"{ph}: whole model {_ms(s[f'{ph}_whole_s'])}, sum of per-layer self {_ms(s[f'{ph}_layer_sum_s'])}"
                + (f" ({100 * ratio:.0f}%)" if ratio is not None else "")
                + f", hooked root {_ms(s[f'{ph}_hooked_root_s'])}")
        paired = s.get(f"{ph}_paired_ratio")
        if paired is not None:
            line += (f"; per-layer sum / whole measured in pairs: {100 * paired:.0f}% "
                     f"(q25-q75 {100 * s[f'{ph}_paired_ratio_q25']:.0f}-{100 * s[f'{ph}_paired_ratio_q75']:.0f}%, "
                     f"{s[f'{ph}_pairs']} pairs)")
        lines.append(line)
    return lines
