"""The phases of autoregressive generation with a Hugging Face causal LM, as modules hwprof can count,
measure and replay like any model.

* :class:`Prefill` — the prompt: ``lm(input_ids, use_cache=True, logits_to_keep=1)`` on ``B x P`` token
  ids, which builds the KV cache of the prompt and the logits of its last position (as
  ``GenerationMixin.generate`` runs it).
* :class:`Decode` — ``steps`` decode steps starting from a KV cache of ``past`` tokens: each feeds one
  token per sequence (the argmax of the previous logits) and appends its keys and values to the cache
  (``DynamicCache``, so each step concatenates the cache it extends, as ``generate`` does). The
  starting cache is held in buffers of the module (zeros), so every call starts from the same cache:
  ``steps=1`` is "one token with a KV cache of P", ``steps=N`` the N tokens after the prompt (cache
  from P to P + N), averaged per token by the caller.
* :class:`Generate` — the prefill then ``new_tokens`` decode steps: what the memory predictors replay
  and the allocator trace measures (the cache reaches ``P + N`` tokens; ``generate(max_new_tokens=N)``
  runs one decode step fewer, as its last token's keys and values are never needed).

The wrapped model is a child named ``lm``, so its layers are ``lm.model.layers.0.mlp`` etc.; the
user's model is never modified (buffers live on the wrapper).

KV-cache geometry (:class:`KVGeometry`): ``layers``, ``kv_heads`` (``num_key_value_heads``, GQA/MQA;
``num_attention_heads`` without it) and ``head_dim`` (``head_dim`` or ``hidden_size / heads``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["KVGeometry", "kv_geometry", "Prefill", "Decode", "Generate", "require_causal_lm"]


@dataclass(frozen=True)
class KVGeometry:
    """What sizes a decoder's KV cache: per layer, keys and values of ``kv_heads x head_dim`` per token;
    ``window``: the sliding window of a model whose every layer slides (None: full attention)."""

    layers: int
    kv_heads: int
    head_dim: int
    window: int | None = None

    def tokens_kept(self, tokens: int) -> int:
        """Tokens a cache holds after ``tokens`` positions (a sliding layer keeps ``window - 1``)."""
        return tokens if self.window is None else min(tokens, self.window - 1)


def kv_geometry(config: Any) -> KVGeometry:
    """:class:`KVGeometry` of a transformers config (the decoder's, for an encoder-decoder)."""
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = int(cfg.num_attention_heads)
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    types = getattr(cfg, "layer_types", None)
    window = getattr(cfg, "sliding_window", None)
    slides = window is not None and (types is None and getattr(cfg, "use_sliding_window", True)
                                     or types is not None and all(t == "sliding_attention" for t in types))
    return KVGeometry(int(cfg.num_hidden_layers), int(kv), int(head_dim),
                      int(window) if slides and window is not None else None)


def require_causal_lm(model: nn.Module) -> None:
    """A one-line error unless ``model`` is a transformers causal LM (a ``generate``-capable decoder)."""
    from hwprof.errors import HwprofError

    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(model, "generate") or getattr(cfg, "is_encoder_decoder", False) \
            or not type(model).__name__.endswith("ForCausalLM"):
        raise HwprofError(f"generation phases need a decoder-only causal LM (hf:llama, hf:gpt2, ...), "
                          f"not {type(model).__name__}")


def _cache(config: Any) -> Any:
    from transformers import DynamicCache
    return DynamicCache(config=config)


def _cache_kw(lm: nn.Module) -> str:
    """The keyword ``lm.forward`` takes its KV cache by: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


def _keep_last(lm: nn.Module) -> dict[str, int]:
    """``logits_to_keep=1`` when ``lm`` takes it (only the last position's logits, as ``generate`` asks)."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(lm.forward).parameters else {}


class Prefill(nn.Module):
    """The prompt's forward, building the KV cache (see the module docstring)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm
        self._kw = {**_keep_last(lm), "use_cache": True}
        self._cache_kw = _cache_kw(lm)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, **{self._cache_kw: _cache(self.lm.config)}, **self._kw).logits


class Decode(nn.Module):
    """``steps`` decode steps from a cache of ``past`` tokens held in buffers (see the module docstring)."""

    def __init__(self, lm: nn.Module, batch: int, past: int, steps: int = 1) -> None:
        super().__init__()
        if past < 1 or steps < 1:
            raise ValueError(f"Decode needs past >= 1 and steps >= 1, got past={past}, steps={steps}")
        self.lm, self.past, self.steps = lm, past, steps
        self._cache_kw = _cache_kw(lm)
        g = kv_geometry(lm.config)
        p = next(lm.parameters())
        shape = (batch, g.kv_heads, g.tokens_kept(past), g.head_dim)
        for i in range(g.layers):
            for kind in ("k", "v"):
                self.register_buffer(f"{kind}_cache_{i}", torch.zeros(shape, dtype=p.dtype, device=p.device),
                                     persistent=False)

    def start_cache(self) -> Any:
        """A ``DynamicCache`` whose layers hold this module's buffers (no copy) and know ``past`` tokens."""
        cache = _cache(self.lm.config)
        for i, layer in enumerate(cache.layers):
            k, v = getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}")
            layer.keys, layer.values, layer.device, layer.is_initialized = k, v, k.device, True
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = self.past
        return cache

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        cache = self.start_cache()
        ids = input_ids
        logits = input_ids
        for _ in range(self.steps):
            logits = self.lm(input_ids=ids, **{self._cache_kw: cache}, use_cache=True).logits
            ids = logits[:, -1:].argmax(dim=-1)
        return logits


class Generate(nn.Module):
    """The prefill, then ``new_tokens`` decode steps (see the module docstring)."""

    def __init__(self, lm: nn.Module, new_tokens: int) -> None:
        super().__init__()
        self.lm, self.new_tokens = lm, new_tokens
        self._kw = {**_keep_last(lm), "use_cache": True}
        self._cache_kw = _cache_kw(lm)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        cache = {self._cache_kw: _cache(self.lm.config)}
        logits = self.lm(input_ids=input_ids, **cache, **self._kw).logits
        for _ in range(self.new_tokens):
            ids = logits[:, -1:].argmax(dim=-1)
            logits = self.lm(input_ids=ids, **cache, use_cache=True).logits
        return logits
