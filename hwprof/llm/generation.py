"""Generation phases measured for real and placed on the roofline: prefill, decode with a KV cache of the
prompt's length, and decode averaged over the new tokens, at each batch size of a sweep.

Per phase and batch ``B`` (modules of :mod:`hwprof.llm.phases`; prompt ``P``, new tokens ``N``)::

    phase       module                 tokens per call   KV cache seen
    prefill     Prefill                B * P             0 -> P (written)
    decode      Decode(steps=1)        B                 P
    decode_avg  Decode(steps=N)        B * N             P -> P + N

FLOPs and bytes come from :func:`hwprof.count` on the phase module (bytes: every op its own kernel,
hwprof's convention), times from :func:`hwprof.measure` (median of the timed repetitions, one call =
one row above) and the roofline metrics from :func:`hwprof.roofline.derive` against the measured
ceilings::

    tokens_per_s = tokens / time_s          flops_per_token = flops / tokens   bytes_per_token = bytes / tokens
    MFU = achieved FLOP/s / compute roof    MBU = achieved bytes/s / bandwidth roof
    above_roof = achieved FLOP/s above the attainable min(compute roof, intensity x bandwidth): a rate
                 the ceilings say is impossible (ceilings measured under more load than the phase ran in)
    weights_cache_bytes = what a call must read at least: the weights once per forward, plus the KV cache
                          (read by decode, written by prefill); mbu_weights_cache = that / time_s / bandwidth

The first batch of the sweep is also profiled layer by layer (:func:`hwprof.profile`: every layer of each
phase on the roofline). Decode reads all weights and the whole cache for ``B`` tokens, so its intensity
grows about linearly with ``B`` and it climbs the memory roof toward the compute roof as the batch grows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from hwprof.counting.counter import CountResult, count
from hwprof.files import atomic_dir, write_atomic, write_json_atomic
from hwprof.hardware.ceilings import Ceilings
from hwprof.joining import Profile
from hwprof.llm.kv_cache import kv_cache_bytes
from hwprof.llm.phases import Decode, KVGeometry, Prefill, kv_geometry, require_causal_lm
from hwprof.measuring.records import Measurement
from hwprof.measuring.runner import measure
from hwprof.profiler import profile
from hwprof.roofline import derive, roof_key

__all__ = ["PHASES", "PhaseRun", "GenerationResult", "generation_study", "phase_module", "phase_row"]

log = logging.getLogger(__name__)

PHASES = ("prefill", "decode", "decode_avg")


@dataclass(frozen=True)
class PhaseRun:
    """One phase at one batch: its count, its measurement, and its per-layer profile (or None)."""

    phase: str
    batch: int
    tokens: int
    count: CountResult
    measurement: Measurement
    profile: Profile | None = None


def phase_module(lm: nn.Module, phase: str, batch: int, prompt: int, new_tokens: int) -> tuple[nn.Module, str, int]:
    """(module, input spec, tokens per call) of ``phase`` (see the module docstring)."""
    if phase == "prefill":
        return Prefill(lm), f"input_ids=long:{prompt}", batch * prompt
    if phase == "decode":
        return Decode(lm, batch, prompt, 1), "input_ids=long:1", batch
    if phase == "decode_avg":
        return Decode(lm, batch, prompt, new_tokens), "input_ids=long:1", batch * new_tokens
    raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")


def _weights_cache_bytes(phase: str, params_bytes: int, g: KVGeometry, batch: int, prompt: int, new_tokens: int,
                         elem_bytes: int) -> int:
    """The bytes a call must move at least: weights once per forward plus the KV cache it reads (decode)
    or writes (prefill); decode_avg sums its N steps (cache P, P + 1, ..., P + N - 1)."""
    if phase == "prefill":
        return params_bytes + kv_cache_bytes(g, prompt, batch, elem_bytes)
    if phase == "decode":
        return params_bytes + kv_cache_bytes(g, prompt, batch, elem_bytes)
    return sum(params_bytes + kv_cache_bytes(g, prompt + i, batch, elem_bytes) for i in range(new_tokens))


def phase_row(run: PhaseRun, ceilings: Ceilings, weights_cache_bytes: int) -> dict[str, Any]:
    """The phase's numbers (see the module docstring), derived with :func:`hwprof.roofline.derive`."""
    m, c = run.measurement, run.count
    stats = m.phases.loc["fwd_nograd"]
    key = roof_key(m.run.dtype, "matmul", m.math_modes)
    base = pd.DataFrame([{"flops": float(c.totals["flops_fwd"]), "bytes": float(c.totals["bytes_fwd"]),
                          "time_s": float(stats["median_s"]), "roof_key": key}])
    bw = ceilings.bytes_per_s if ceilings.bytes_per_s is not None else float("nan")
    d = derive(base, ceilings.flop_per_s, bw).iloc[0]
    t = float(stats["median_s"])
    return {"phase": run.phase, "batch": run.batch, "tokens": run.tokens, "time_s": t,
            "iqr_over_median": float(stats["iqr_over_median"]), "reps": int(stats["reps"]),
            "tokens_per_s": run.tokens / t, "flops": d["flops"], "bytes": d["bytes"],
            "flops_per_token": d["flops"] / run.tokens, "bytes_per_token": d["bytes"] / run.tokens,
            "intensity": d["intensity"], "achieved_flop_per_s": d["achieved_flop_per_s"],
            "achieved_bytes_per_s": d["achieved_bytes_per_s"], "roof_key": key,
            "mfu": d["pct_of_compute_roof"] / 100, "mbu": d["pct_of_memory_roof"] / 100, "bound": d["bound"],
            "above_roof": bool(d["above_roof"]),
            "weights_cache_bytes": weights_cache_bytes, "mbu_weights_cache": weights_cache_bytes / t / bw}


@dataclass
class GenerationResult:
    """The sweep: ``table`` (one row per phase and batch: :func:`phase_row`), the runs behind it, the
    ceilings and the configuration (model, prompt, new_tokens, batches, dtype)."""

    table: pd.DataFrame
    runs: list[PhaseRun]
    ceilings: Ceilings
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def save(self, directory: str | Path, command: str | None = None, html: bool = True) -> list[Path]:
        """The folder, complete or absent: ``phases.csv``, ``generation.json``, ``summary.md``, the phase
        roofline and batch-sweep plots, and each profiled phase's folder (``<phase>_b<B>/``; its
        ``report.html`` unless ``html`` is False)."""
        from hwprof.llm.plots import batch_sweep_plot, phase_roofline_plot

        target = Path(directory)
        with atomic_dir(target) as tmp:
            write_atomic(tmp / "phases.csv", self.table.to_csv(index=False))
            write_json_atomic(tmp / "generation.json", {"config": self.config, "command": command,
                                                        "ceilings": self.ceilings.to_dict(), "notes": self.notes,
                                                        "phases": self.table.to_dict(orient="records")})
            phase_roofline_plot(self.table, self.ceilings, tmp / "roofline_phases.png",
                                title=f"{self.config['model']}: generation phases")
            batch_sweep_plot(self.table, self.ceilings, tmp / "batch_sweep.png",
                             title=f"{self.config['model']}: decode vs batch")
            for r in self.runs:
                if r.profile is not None:
                    r.profile.save(tmp / f"{r.phase}_b{r.batch}", command=command, html=html)
            write_atomic(tmp / "summary.md", summary_markdown(self, command))
        return sorted(target.rglob("*"))


def generation_study(lm: nn.Module, *, prompt: int, new_tokens: int, batches: Sequence[int], ceilings: Ceilings,
                     budget_s: float = 0.5, per_layer: bool = True, name: str | None = None,
                     device: str = "cpu", min_reps: int = 3) -> GenerationResult:
    """Count and measure every phase at every batch (the first batch also layer by layer with
    ``per_layer``); ``lm`` is a transformers causal LM with real weights on ``device``."""
    require_causal_lm(lm)
    if prompt < 1 or new_tokens < 1 or not batches or min(batches) < 1:
        raise ValueError("generation needs prompt >= 1, new_tokens >= 1 and batches >= 1")
    g = kv_geometry(lm.config)
    p0 = next(lm.parameters())
    params_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in lm.parameters()}.values())
    runs, rows = [], []
    for i, b in enumerate(batches):
        for phase in PHASES:
            log.info("generation: %s at batch %d", phase, b)
            run = _run_phase(lm, phase, b, prompt, new_tokens, ceilings, budget_s, per_layer and i == 0, device,
                             min_reps, name)
            runs.append(run)
            wc = _weights_cache_bytes(phase, params_bytes, g, b, prompt, new_tokens, p0.element_size())
            rows.append(phase_row(run, ceilings, wc))
    config = {"model": name or type(lm).__name__, "prompt": prompt, "new_tokens": new_tokens,
              "batches": list(batches), "dtype": str(p0.dtype).removeprefix("torch."), "params_bytes": params_bytes,
              "kv_geometry": {"layers": g.layers, "kv_heads": g.kv_heads, "head_dim": g.head_dim, "window": g.window},
              "device": runs[0].measurement.run.device, "threads": runs[0].measurement.run.threads}
    notes = sorted({n for r in runs for n in r.measurement.notes if "IQR/median" in n})
    return GenerationResult(pd.DataFrame(rows), runs, ceilings, config, notes)


def _run_phase(lm: nn.Module, phase: str, batch: int, prompt: int, new_tokens: int, ceilings: Ceilings,
               budget_s: float, layered: bool, device: str, min_reps: int, name: str | None) -> PhaseRun:
    module, spec, tokens = phase_module(lm, phase, batch, prompt, new_tokens)
    label = f"{name or type(lm).__name__} {phase} b{batch}"
    if layered:
        p = profile(module, spec, device=device, batch=batch, budget_s=budget_s, ceilings=ceilings, name=label)
        return PhaseRun(phase, batch, tokens, p.counts, p.measurement, p)
    m = measure(module, spec, device=device, batch=batch, budget_s=budget_s, warmup=1, min_reps=min_reps,
                alloc_trace=False)
    return PhaseRun(phase, batch, tokens, count(module, spec, batch=batch), m)


def summary_lines(r: GenerationResult) -> list[str]:
    """What the sweep shows, in words: each phase at the smallest and largest batch."""
    t = r.table
    lines = [f"{p} at batch {int(b)}: above its roof (MFU or MBU over 100%): the ceilings were measured under more "
             "load than this phase ran in; re-measure them on a quiet machine"
             for p, b in t.loc[t["above_roof"], ["phase", "batch"]].itertuples(index=False)]
    for phase in PHASES:
        rows = t[t["phase"] == phase].sort_values("batch")
        if rows.empty:
            continue
        lo, hi = rows.iloc[0], rows.iloc[-1]
        lines.append(f"{phase}: batch {int(lo['batch'])} {lo['tokens_per_s']:.4g} tok/s, {lo['intensity']:.3g} FLOP/B, "
                     f"MFU {100 * lo['mfu']:.2f}%, MBU {100 * lo['mbu']:.1f}% ({lo['bound']}-bound)"
                     + ("" if len(rows) == 1 else
                        f"; batch {int(hi['batch'])} {hi['tokens_per_s']:.4g} tok/s, {hi['intensity']:.3g} FLOP/B, "
                        f"MFU {100 * hi['mfu']:.2f}%, MBU {100 * hi['mbu']:.1f}% ({hi['bound']}-bound)"))
    return lines


def summary_markdown(r: GenerationResult, command: str | None) -> str:
    from hwprof.report.tables import render

    cols = ["phase", "batch", "tokens", "time_s", "iqr_over_median", "tokens_per_s", "flops_per_token",
            "bytes_per_token", "intensity", "achieved_flop_per_s", "mfu", "mbu", "mbu_weights_cache", "bound"]
    c = r.config
    head = (f"# {c['model']}: generation phases\n\nprompt {c['prompt']}, new tokens {c['new_tokens']}, {c['dtype']}, "
            f"on {r.ceilings.device_name} ({c['threads']} threads); roofs: "
            + ", ".join(f"{k} {v / 1e9:.4g} GFLOP/s" for k, v in r.ceilings.flop_per_s.items())
            + (f", bandwidth {r.ceilings.bytes_per_s / 1e9:.4g} GB/s" if r.ceilings.bytes_per_s else "") + "\n\n")
    body = render(r.table[cols], "md", index=False)
    tail = "\n" + "\n".join(f"- {line}" for line in summary_lines(r)) + "\n"
    tail += "".join(f"- note: {n}\n" for n in r.notes)
    return head + body + tail + (f"\nCommand: `{command}`\n" if command else "")
