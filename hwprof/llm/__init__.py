"""Transformers and LLMs: generation phases (prefill, decode with a KV cache) on the roofline, KV-cache
memory, and the usual closed-form FLOP conventions beside hwprof's exact count (docs/LLM.md)."""
