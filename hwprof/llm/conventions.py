"""hwprof's exact count of a decoder-only transformer beside the usual closed forms, and where they differ.

Closed forms, for ``N`` parameters, ``L`` layers, ``H`` heads of ``Q`` dimensions, ``T`` tokens per sequence,
``B`` sequences (``D = B * T`` tokens):

    forward, 2N per token           2 * N * D                       (Kaplan et al. 2020, "C_forward ~ 2N")
    training, 6N per token          6 * N * D                       (Kaplan et al. 2020, "C ~ 6N")
    training with attention         (6N + 12 * L * H * Q * T) * D   (Chowdhery et al. 2022, PaLM, appendix B)
    forward with attention          (2N + 4 * L * H * Q * T) * D    (the forward third of the line above)

Where hwprof's count (every aten op that runs, :func:`hwprof.count`) differs, each term from the count's
own op table (forward):

* **embeddings**: a token (or position) embedding is a gather, 0 FLOPs; ``2N`` charges its parameters
  ``2 * params * D`` as if they were a matmul. (A tied LM head is counted once in ``N`` and runs once as
  a matmul, so ``2N`` is right for it; an untied head is a matmul in both.)
* **attention**: Q·Kᵀ and P·V are ``2 * 2 * H * Q`` FLOPs per (query, key) pair; the closed form takes all
  ``T²`` pairs, causal masking leaves ``T (T + 1) / 2`` useful ones (hwprof counts those), about half.
  Softmax adds 5 FLOPs per useful score (hwprof's attention op includes it).
* **everything else**: norms, activations, residual adds, rotary embeddings, the softmax: FLOPs the closed
  forms leave out (a few percent of a large model, more of a small one).
* **LM head and loss**: the head's matmul is in ``N``; training adds the cross-entropy over ``V`` logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from hwprof.counting.counter import CountResult

__all__ = ["Shape", "Conventions", "conventions", "model_shape"]


@dataclass(frozen=True)
class Shape:
    """``layers`` (L), ``heads`` (H), ``head_dim`` (Q), ``seq`` (T), ``batch`` (B)."""

    layers: int
    heads: int
    head_dim: int
    seq: int
    batch: int

    @property
    def tokens(self) -> int:
        return self.seq * self.batch


def model_shape(config: Any, seq: int, batch: int) -> Shape:
    """:class:`Shape` of a transformers config (``num_hidden_layers``, ``num_attention_heads``, ``head_dim``
    or ``hidden_size / heads``)."""
    heads = int(config.num_attention_heads)
    q = getattr(config, "head_dim", None) or config.hidden_size // heads
    return Shape(int(config.num_hidden_layers), heads, int(q), seq, batch)


@dataclass
class Conventions:
    """``table``: one row per closed form (``flops``, ``exact_flops``, ``ratio`` = closed form / exact);
    ``breakdown``: the exact forward count by part (linear matmuls, attention, embeddings, other), each
    beside what the closed forms assign to it; ``lines``: where they differ, in words."""

    table: pd.DataFrame
    breakdown: pd.DataFrame
    lines: list[str]


def _forward_parts(c: CountResult) -> dict[str, float]:
    """Exact forward FLOPs by part, from the op table: matmuls outside attention, attention matmuls
    (2 x MACs), the attention ops' softmax and the rest of their work, embedding gathers, everything else."""
    ops = c.ops[c.ops["phase"] == "fwd"]
    cls = ops["op_class"]
    attn = ops[cls == "attention"]
    return {"linear_matmuls": float(ops.loc[cls == "matmul", "flops"].sum()),
            "attention_matmuls": float(2 * attn["macs"].sum()),
            "attention_softmax": float(attn["flops"].sum() - 2 * attn["macs"].sum()),
            "embeddings": float(ops.loc[cls == "embedding", "flops"].sum()),
            "other": float(ops.loc[~cls.isin(["matmul", "attention", "embedding"]), "flops"].sum())}


def _embedding_params(c: CountResult) -> int:
    return int(c.layers.loc[c.layers["type"] == "Embedding", "params"].sum())


def conventions(forward: CountResult, train: CountResult | None, shape: Shape) -> Conventions:
    """The closed forms of the module docstring against ``forward`` (an inference count of ``B x T``
    token ids) and ``train`` (forward + backward with the model's loss; None: training rows left out)."""
    n = int(forward.totals["params"])
    emb = _embedding_params(forward)
    d = shape.tokens
    attn_fwd = 4 * shape.layers * shape.heads * shape.head_dim * shape.seq * d
    exact_fwd = float(forward.totals["flops_fwd"])
    rows = [("forward, 2N per token", "2·N·D", 2 * n * d, exact_fwd),
            ("forward, 2N without embeddings", "2·(N − N_emb)·D", 2 * (n - emb) * d, exact_fwd),
            ("forward with attention", "(2N + 4·L·H·Q·T)·D", 2 * n * d + attn_fwd, exact_fwd)]
    if train is not None:
        exact_train = float(train.totals["flops_fwd"] + train.totals["flops_bwd"])
        rows += [("training, 6N per token", "6·N·D", 6 * n * d, exact_train),
                 ("training with attention (PaLM)", "(6N + 12·L·H·Q·T)·D", 6 * n * d + 3 * attn_fwd, exact_train)]
    table = pd.DataFrame(rows, columns=["convention", "formula", "flops", "exact_flops"])
    table["ratio"] = table["flops"] / table["exact_flops"]
    parts = _forward_parts(forward)
    assigned: dict[str, float] = {"linear_matmuls": 2 * (n - emb) * d, "attention_matmuls": attn_fwd, "attention_softmax": 0,
                "embeddings": 2 * emb * d, "other": 0}
    breakdown = pd.DataFrame({"exact_flops": parts, "closed_form_flops": assigned}).rename_axis("part")
    return Conventions(table, breakdown, _lines(parts, assigned, shape, n, emb, exact_fwd))


def _lines(parts: dict[str, float], assigned: dict[str, float], s: Shape, n: int, emb: int,
           exact: float) -> list[str]:
    pct = 100.0 / exact if exact else float("nan")
    causal = (s.seq + 1) / (2 * s.seq)
    return [
        f"N = {n:,} parameters, {emb:,} of them in embedding tables; L={s.layers}, H={s.heads}, Q={s.head_dim}, "
        f"T={s.seq}, B={s.batch}",
        f"embeddings: a gather, 0 FLOPs here; 2N charges them {assigned['embeddings']:.4g} FLOPs "
        f"({pct * assigned['embeddings']:.1f}% of the exact forward)",
        f"attention: {parts['attention_matmuls']:.4g} FLOPs of Q·Kᵀ and P·V over the causal pairs vs "
        f"4·L·H·Q·T·D = {assigned['attention_matmuls']:.4g} over all T² pairs (ratio {causal:.3f} = (T+1)/2T); "
        f"softmax {parts['attention_softmax']:.4g} FLOPs more",
        f"linear layers (LM head included): {parts['linear_matmuls']:.4g} FLOPs exact vs 2·(N − N_emb)·D = "
        f"{assigned['linear_matmuls']:.4g} (a tied head: in N once, run once as a matmul)",
        f"other ops (norms, activations, residual adds, rotary embeddings): {parts['other']:.4g} FLOPs = "
        f"{pct * parts['other']:.1f}% of the exact forward, in no closed form",
    ]
