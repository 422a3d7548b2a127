"""`hwprof profile hf:MODEL --generate` and `hwprof memory hf:MODEL --generate`: generation phases on the
roofline (:mod:`hwprof.llm.generation`) and KV-cache memory (:mod:`hwprof.llm.kv_cache`)."""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from hwprof.cli.common import MAX_DIM, build_model, command_line, emit, emit_all, out_folder, strict_int
from hwprof.device import resolve_device
from hwprof.report.tables import mib, render

__all__ = ["batch_list", "run_profile", "run_memory", "run_conventions"]

_COLUMNS = ["phase", "batch", "tokens", "time_s", "tokens_per_s", "flops_per_token", "bytes_per_token", "intensity",
            "achieved_flop_per_s", "mfu", "mbu", "bound"]


def batch_list(text: str) -> list[int]:
    """``"1,4,16,64"`` -> [1, 4, 16, 64] (argparse type; positive integers)."""
    try:
        values = [strict_int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad batch list {text!r}; expected e.g. 8 or 1,4,16,64") from None
    if not values or min(values) < 1 or max(values) > MAX_DIM:
        raise argparse.ArgumentTypeError(f"bad batch list {text!r}: batch sizes are from 1 to {MAX_DIM}")
    return values


def _check(args: argparse.Namespace) -> None:
    from hwprof.errors import HwprofError
    if not str(args.model or "").startswith("hf:"):
        raise HwprofError("--generate needs an hf: causal LM, e.g. hf:llama")
    if args.prompt < 1 or args.new_tokens < 1:
        raise HwprofError("--prompt and --new-tokens must be positive")


def _check_context(meta: object, args: argparse.Namespace) -> None:
    """The prompt and the new tokens fit the model's positions (one line, before any work)."""
    from hwprof.errors import HwprofError
    from hwprof.zoo import hf_max_positions

    found = hf_max_positions(getattr(meta, "config", None))
    if found and args.prompt + args.new_tokens > found[1]:
        key, top = found
        raise HwprofError(f"{args.model}: --prompt {args.prompt} + --new-tokens {args.new_tokens} = "
                          f"{args.prompt + args.new_tokens} positions, beyond the model's {key} = {top}; use fewer "
                          f"or allow more with --config {key}={args.prompt + args.new_tokens}")


def run_profile(args: argparse.Namespace) -> int:
    """Count and measure prefill, decode and the decode average at each --batch; table, plots, folder."""
    from hwprof.hardware.ceilings import measure_ceilings
    from hwprof.llm.generation import generation_study, summary_lines
    from hwprof.llm.phases import require_causal_lm

    _check(args)
    meta, _ = build_model(args, device="meta")
    require_causal_lm(meta)                      # a one-line error before anything is measured
    _check_context(meta, args)
    dev = resolve_device(args.device)
    ceilings = measure_ceilings(dev, refresh=args.refresh_ceilings, cache_dir=args.ceilings_cache, quick=args.quick)
    lm, _ = build_model(args)
    if args.dtype:
        from hwprof.spec import parse_dtype
        lm = lm.to(parse_dtype(args.dtype))
    lm.eval()
    r = generation_study(lm.to(dev), prompt=args.prompt, new_tokens=args.new_tokens, batches=args.batch or [1],
                         ceilings=ceilings, budget_s=0.1 if args.quick else args.budget, name=args.model,
                         device=str(dev))
    shown = r.table[_COLUMNS]
    if args.format != "table":
        print(render(shown, args.format, index=False))
    else:
        print(f"== {args.model}: prompt {args.prompt}, {args.new_tokens} new tokens, {r.config['dtype']}, "
              f"on {ceilings.device_name}")
        print(render(_readable(shown), "table", index=False))
        print("\n".join(["", *summary_lines(r), *(f"note: {n}" for n in r.notes)]))
    with out_folder(args.out) as d:
        if d is not None:
            r.save(d, command=command_line(), html=not getattr(args, "no_html", False))
    return 0


def _readable(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["time_s"] = out["time_s"].map(lambda v: f"{1e3 * v:.4g} ms")
    for col in ("tokens_per_s", "flops_per_token", "bytes_per_token", "achieved_flop_per_s"):
        out[col] = out[col].map(lambda v: f"{v:.4g}")
    out["intensity"] = out["intensity"].map(lambda v: f"{v:.3g}")
    for col in ("mfu", "mbu"):
        out[col] = out[col].map(lambda v: f"{100 * v:.2f}%")
    return out.rename(columns={"time_s": "time", "achieved_flop_per_s": "flop/s"})


def run_memory(args: argparse.Namespace, device: str) -> int:
    """KV cache beside weights and activations (formula, simulated, measured with --validate), or --fit."""
    from hwprof.llm.kv_cache import fit_generation, generation_memory
    from hwprof.memory.fit import device_total_bytes, parse_size

    _check(args)
    meta, _ = build_model(args, device="meta")
    _check_context(meta, args)
    if args.fit is not None:
        limit = device_total_bytes(device) if args.fit == "auto" else parse_size(args.fit)
        ctx = args.prompt + args.new_tokens
        top = getattr(meta.config, "max_position_embeddings", None) or 4 * ctx
        contexts = sorted({c for c in (ctx // 4, ctx // 2, ctx, 2 * ctx, 4 * ctx) if args.new_tokens < c <= top})
        table = fit_generation(meta, new_tokens=args.new_tokens, contexts=contexts, limit_bytes=limit, device=device)
        text = (f"{args.model}: largest batch x context predicted to fit in {limit:,} B (simulated generation: "
                f"prefill + {args.new_tokens} decode steps)\n" + render(table, "table", index=False))
        emit(text if args.format == "table" else render(table, args.format, index=False), args.out, table)
        return 0
    real = build_model(args)[0].eval() if args.validate else None
    gm = generation_memory(meta, prompt=args.prompt, new_tokens=args.new_tokens, batch=args.batch, device=device,
                           real_lm=real)
    emit_all(args, _memory_outputs(args, gm, device))
    return 0


def _memory_outputs(args: argparse.Namespace, gm: Any, device: str) -> dict[str, str]:
    """Every format of a generation's memory: the table view, and JSON holding all it shows (the components,
    the KV cache among them, the predictors and the notes, the KV-cache formula's included); CSV and
    Markdown of the predictors with the components as rows of their own."""
    import json

    from hwprof.files import to_jsonable

    comp = ", ".join(f"{k} {mib(v)} MiB" for k, v in gm.components.items())
    shown = gm.predictors.assign(peak_mib=gm.predictors["peak_bytes"].map(mib),
                                 error=gm.predictors["error_pct"].map(lambda v: "-" if v is None or pd.isna(v)
                                                                      else f"{v:+.2f}%"))
    head = (f"{args.model} generation: prompt {args.prompt}, {args.new_tokens} new tokens, batch {args.batch}, "
            f"{gm.config['dtype']}, on {device}")
    table = "\n".join([head, f"components: {comp}", "", render(shown[["peak_mib", "error"]], "table"), "",
                       *(f"note: {n}" for n in gm.notes)])
    body = {"model": args.model, "prompt": args.prompt, "new_tokens": args.new_tokens, "batch": args.batch,
            "device": device, "config": gm.config, "components": gm.components,
            "predictors": gm.predictors.reset_index().to_dict(orient="records"), "notes": gm.notes}
    rows = pd.concat([gm.predictors, pd.DataFrame({"peak_bytes": pd.Series(gm.components)}).rename(
        index=lambda k: f"component:{k}")])
    return {"table": table, "json": json.dumps(to_jsonable(body), indent=1),
            **{fmt: render(rows, fmt).rstrip("\n") for fmt in ("csv", "md")}}


def run_conventions(args: argparse.Namespace) -> int:
    """`hwprof count hf:MODEL --conventions`: the exact forward and training counts beside the closed forms."""
    from hwprof.counting.counter import count
    from hwprof.errors import HwprofError
    from hwprof.llm.conventions import conventions, model_shape
    from hwprof.spec import parse_spec

    model, spec = build_model(args, device="meta")
    if getattr(model, "config", None) is None or getattr(model.config, "is_encoder_decoder", False):
        raise HwprofError("--conventions needs a decoder-only hf: model (hf:llama, hf:gpt2, ...)")
    seq = next(s.shape[-1] for s in parse_spec(spec) if s.name == "input_ids")
    fwd = count(model, spec, batch=args.batch, device=args.device)
    train_model, train_spec = build_model(argparse.Namespace(**{**vars(args), "mode": "train"}), device="meta")
    train = count(train_model, train_spec, batch=args.batch, mode="train", backward=True, device=args.device)
    cv = conventions(fwd, train, model_shape(model.config, seq, args.batch))
    if args.format != "table":
        emit(render(cv.table, args.format, index=False), args.out, cv.table)
        return 0
    shown = cv.table.assign(flops=cv.table["flops"].map(lambda v: f"{v:.4g}"),
                            exact_flops=cv.table["exact_flops"].map(lambda v: f"{v:.4g}"),
                            ratio=cv.table["ratio"].map(lambda v: f"{v:.3f}"))
    parts = cv.breakdown.map(lambda v: f"{v:.4g}")
    emit("\n".join([f"{args.model} ({spec}, batch {args.batch}): closed forms vs hwprof's exact count "
                    "(training: forward + backward with the model's loss)", render(shown, "table", index=False), "",
                    "exact forward by part, beside what the closed forms assign to it:", render(parts, "table"), "",
                    *cv.lines]), args.out, cv.table)
    return 0
