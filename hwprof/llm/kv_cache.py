"""KV-cache memory of generation: the closed form beside weights and activations, the simulated replay of
the whole generation, the measured peak, and the largest batch x context that fits a limit.

Closed form (per layer, keys and values of every kept token, for every sequence)::

    kv_cache_bytes = 2 * layers * kv_heads * head_dim * (P + N) * B * bytes_per_element

``kv_heads`` is ``num_key_value_heads`` (GQA: 8 KV heads for 32 query heads stores 4x less than MHA);
a model whose every layer slides over a window keeps ``window - 1`` tokens. Predictors
(:func:`generation_memory`; P prompt tokens, N new tokens, batch B)::

    formula    = weights + kv_cache_bytes(P + N) + activations of the prefill (hwprof's formula predictor
                 on the prefill: its largest live set beyond weights and inputs) + input ids
    simulated  = peak of the replay of the whole generation (prefill, then N decode steps) on fake
                 tensors, allocation by allocation (hwprof.memory's simulated predictor)
    measured   = CPU: peak of live tensor bytes from torch's allocator events over two real generations
                 (hwprof.measure's allocator trace), parameters and inputs included

:func:`fit_generation`: for each context length, the replay at batch 1 and 2 gives ``peak(B) = a + b * B``
(everything but the weights grows with the batch), hence the largest ``B`` under the limit; that batch
is replayed once more to confirm it fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from torch import nn

from hwprof.llm.phases import Generate, KVGeometry, Prefill, kv_geometry, require_causal_lm
from hwprof.memory.estimate import estimate_memory
from hwprof.memory.validate import error_pct

__all__ = ["kv_cache_bytes", "GenerationMemory", "generation_memory", "fit_generation"]


def kv_cache_bytes(g: KVGeometry, tokens: int, batch: int, bytes_per_element: int) -> int:
    """2 * layers * kv_heads * head_dim * tokens kept * batch * bytes per element (module docstring)."""
    return 2 * g.layers * g.kv_heads * g.head_dim * g.tokens_kept(tokens) * batch * bytes_per_element


@dataclass
class GenerationMemory:
    """``components`` (bytes: weights, kv_cache, activations, inputs), ``predictors`` (index formula /
    simulated / measured: ``peak_bytes``, ``error_pct`` against measured), ``config`` and notes."""

    components: dict[str, int]
    predictors: pd.DataFrame
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _weights_bytes(lm: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in {id(p): p for p in lm.parameters()}.values())


def simulated_peak(meta_lm: nn.Module, prompt: int, new_tokens: int, batch: int, device: str = "cpu") -> int:
    """Peak of the replay of ``Generate(prompt, new_tokens)`` at ``batch`` on fake tensors (bytes)."""
    est = estimate_memory(Generate(meta_lm, new_tokens), f"input_ids=long:{prompt}", mode="inference", batch=batch,
                          device=device, predictors=("simulated",))
    return est.peak_bytes


def generation_memory(meta_lm: nn.Module, *, prompt: int, new_tokens: int, batch: int, device: str = "cpu",
                      real_lm: nn.Module | None = None, budget_s: float = 0.2) -> GenerationMemory:
    """The predictors of the module docstring; with ``real_lm`` (real weights, on ``device``) the measured
    peak too. ``meta_lm``: the same model built on meta (any model works; nothing is allocated)."""
    require_causal_lm(meta_lm)
    g = kv_geometry(meta_lm.config)
    elem = next(meta_lm.parameters()).element_size()
    weights = _weights_bytes(meta_lm)
    kv = kv_cache_bytes(g, prompt + new_tokens, batch, elem)
    pre = estimate_memory(Prefill(meta_lm), f"input_ids=long:{prompt}", mode="inference", batch=batch, device=device,
                          predictors=("formula",)).components
    inputs = int(pre["inputs"] or 0)
    activations = int(pre["peak_predicted"] or 0) - weights - int(pre["buffers"] or 0) - inputs
    rows: dict[str, dict[str, Any]] = {
        "formula": {"peak_bytes": weights + kv + activations + inputs},
        "simulated": {"peak_bytes": simulated_peak(meta_lm, prompt, new_tokens, batch, device)},
    }
    notes = [f"KV cache: 2 x {g.layers} layers x {g.kv_heads} KV heads x {g.head_dim} head_dim x "
             f"{g.tokens_kept(prompt + new_tokens)} tokens x batch {batch} x {elem} B = {kv:,} B"]
    if real_lm is not None:
        rows["measured"] = {"peak_bytes": _measured_peak(real_lm, prompt, new_tokens, batch, device, budget_s)}
        notes.append("measured: peak of live tensor bytes from torch's allocator events over two real generations "
                     "(prefill + N decode steps), weights and inputs included")
    measured = rows.get("measured", {}).get("peak_bytes")
    for r in rows.values():
        r["error_pct"] = error_pct(r["peak_bytes"], measured) if measured is not None else None
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("predictor")
    config = {"prompt": prompt, "new_tokens": new_tokens, "batch": batch, "device": device,
              "dtype": str(next(meta_lm.parameters()).dtype).removeprefix("torch.")}
    return GenerationMemory({"weights": weights, "kv_cache": kv, "activations": activations, "inputs": inputs},
                            table, config, notes)


def _measured_peak(real_lm: nn.Module, prompt: int, new_tokens: int, batch: int, device: str,
                   budget_s: float) -> int | None:
    from hwprof.measuring.runner import measure

    m = measure(Generate(real_lm, new_tokens), f"input_ids=long:{prompt}", device=device, batch=batch,
                budget_s=budget_s, warmup=1, min_reps=2, max_reps=3)
    peak = m.memory.get("alloc_trace_peak_bytes" if device == "cpu" else "alloc_peak_bytes")
    return int(peak) if peak is not None else None


def fit_generation(meta_lm: nn.Module, *, new_tokens: int, contexts: list[int], limit_bytes: int,
                   device: str = "cpu") -> pd.DataFrame:
    """Per context length ``P + N`` (``contexts``): the largest batch whose replayed generation fits
    ``limit_bytes`` (module docstring), with the KV cache and the replayed peak at that batch."""
    require_causal_lm(meta_lm)
    g = kv_geometry(meta_lm.config)
    elem = next(meta_lm.parameters()).element_size()
    rows = []
    for ctx in contexts:
        prompt = ctx - new_tokens
        if prompt < 1:
            continue
        p1, p2 = (simulated_peak(meta_lm, prompt, new_tokens, b, device) for b in (1, 2))
        slope, base = p2 - p1, 2 * p1 - p2
        batch = max(0, int((limit_bytes - base) // slope)) if slope > 0 else 0
        peak = simulated_peak(meta_lm, prompt, new_tokens, batch, device) if batch >= 1 else None
        while batch >= 1 and peak is not None and peak > limit_bytes:   # the line is a bound, not the replay
            batch -= 1
            peak = simulated_peak(meta_lm, prompt, new_tokens, batch, device) if batch >= 1 else None
        rows.append({"context": ctx, "prompt": prompt, "new_tokens": new_tokens, "batch": batch,
                     "tokens_in_flight": batch * ctx, "kv_cache_bytes": kv_cache_bytes(g, ctx, batch, elem),
                     "peak_predicted_bytes": peak, "limit_bytes": limit_bytes})
    return pd.DataFrame(rows)
