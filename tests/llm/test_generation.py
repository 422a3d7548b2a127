"""Generation phases, KV-cache memory and the closed-form conventions, on a tiny llama (seconds).

Tiny llama (tests/llm/hf_configs.py): L=2 layers, d=64, H=4 heads of Q=16, 2 KV heads, MLP 128, V=1000.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import torch
from hf_configs import TINY_LLAMA

import hwprof
from hwprof import zoo
from hwprof.cli import main
from hwprof.hardware.ceilings import Ceilings

pytest.importorskip("transformers")

from hwprof.llm.conventions import conventions, model_shape  # noqa: E402
from hwprof.llm.generation import generation_study, phase_module  # noqa: E402
from hwprof.llm.kv_cache import fit_generation, generation_memory, kv_cache_bytes, simulated_peak  # noqa: E402
from hwprof.llm.phases import KVGeometry, kv_geometry  # noqa: E402

FAKE_CEILINGS = Ceilings("cpu", "test-cpu", torch.__version__, "2026-11-24", "measured",
                         {"fp32": 100e9, "bf16": 400e9}, 20e9)


@pytest.fixture(scope="module")
def meta_lm() -> torch.nn.Module:
    return zoo.build("hf:llama", device="meta", config=TINY_LLAMA)[0]


@pytest.fixture(scope="module")
def real_lm() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.build("hf:llama", config=TINY_LLAMA)[0].eval()


def test_kv_cache_formula_is_gqa_aware(meta_lm: torch.nn.Module) -> None:
    g = kv_geometry(meta_lm.config)
    assert g == KVGeometry(layers=2, kv_heads=2, head_dim=16)
    # 2 (K and V) x 2 layers x 2 KV heads x 16 x (16 + 4) tokens x batch 2 x 4 B = 20,480 B
    assert kv_cache_bytes(g, 20, 2, 4) == 20_480
    mha = KVGeometry(2, 4, 16)                      # every head its own K and V: twice the cache
    assert kv_cache_bytes(mha, 20, 2, 4) == 40_960
    assert kv_cache_bytes(KVGeometry(2, 2, 16, window=8), 20, 2, 4) == 20_480 * 7 // 20   # keeps window - 1


def test_decode_step_counts_one_token_against_the_whole_cache(meta_lm: torch.nn.Module) -> None:
    """Decode at past P=16, batch 2: every matmul sees 2 tokens, attention 17 keys per query."""
    module, spec, tokens = phase_module(meta_lm, "decode", 2, 16, 4)
    c = hwprof.count(module, spec, batch=2)
    assert tokens == 2
    assert c.layers.loc["lm.lm_head", "macs_fwd"] == 2 * 64 * 1000
    assert c.layers.loc["lm.model.layers.0.self_attn.k_proj", "macs_fwd"] == 2 * 64 * 32
    attn = c.ops[c.ops["op_class"] == "attention"]
    # 2 layers x batch 2 x 4 heads x 17 keys x 16 x 2 (QK^T and PV)
    assert attn["macs"].sum() == 2 * 2 * 4 * 17 * 16 * 2
    prefill = hwprof.count(*phase_module(meta_lm, "prefill", 2, 16, 4)[:2], batch=2)
    # the prefill keeps only the last position's logits (logits_to_keep=1): the head sees 2 tokens too
    assert prefill.layers.loc["lm.lm_head", "macs_fwd"] == 2 * 64 * 1000


def test_replayed_generation_matches_the_measured_cpu_peak(meta_lm: torch.nn.Module,
                                                           real_lm: torch.nn.Module) -> None:
    gm = generation_memory(meta_lm, prompt=16, new_tokens=4, batch=2, real_lm=real_lm, budget_s=0.01)
    assert gm.components["kv_cache"] == 20_480 and gm.components["weights"] == 202_048 * 4
    sim, measured = gm.predictors.loc["simulated", "peak_bytes"], gm.predictors.loc["measured", "peak_bytes"]
    assert abs(sim - measured) <= 0.01 * measured          # the replay follows the allocator (exact here)
    assert abs(gm.predictors.loc["formula", "error_pct"]) < 10


def test_fit_gives_the_largest_batch_under_the_limit(meta_lm: torch.nn.Module) -> None:
    limit = 1_500_000
    fit = fit_generation(meta_lm, new_tokens=4, contexts=[20], limit_bytes=limit)
    row = fit.iloc[0]
    assert row["batch"] >= 1 and row["peak_predicted_bytes"] <= limit
    assert simulated_peak(meta_lm, 16, 4, int(row["batch"]) + 1) > limit


def test_generation_study_batching_raises_decode_intensity(real_lm: torch.nn.Module, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = generation_study(real_lm, prompt=16, new_tokens=4, batches=[1, 4], ceilings=FAKE_CEILINGS, budget_s=0.01,
                         min_reps=2, name="tiny")
    t = r.table.set_index(["phase", "batch"])
    assert list(t.index) == [(p, b) for b in (1, 4) for p in ("prefill", "decode", "decode_avg")]
    assert t.loc[("decode", 4), "tokens"] == 4 and t.loc[("decode_avg", 4), "tokens"] == 16
    assert t.loc[("prefill", 1), "tokens"] == 16
    # decode reads every weight for each batch of tokens: 4 sequences do ~4x the FLOPs for about the same bytes
    assert t.loc[("decode", 4), "intensity"] > 2.5 * t.loc[("decode", 1), "intensity"]
    # each row's tokens, FLOPs and bytes are the phase module's count, its time the measurement's median
    for (phase, b), row in t.iterrows():
        run = next(x for x in r.runs if (x.phase, x.batch) == (phase, b))
        assert row["flops"] == run.count.totals["flops_fwd"] and row["bytes"] == run.count.totals["bytes_fwd"]
        assert row["time_s"] == run.measurement.phases.loc["fwd_nograd", "median_s"]
    files = {p.relative_to(tmp_path / "gen").as_posix() for p in r.save(tmp_path / "gen")}
    assert {"phases.csv", "generation.json", "summary.md", "roofline_phases.png", "batch_sweep.png"} <= files
    assert "decode_b1/layers.csv" in files and "decode_b4/layers.csv" not in files   # layers of the first batch


def _run(phase: str, batch: int, tokens: int, flops: float, bytes_: float, time_s: float) -> Any:
    """A PhaseRun's count and measurement with the numbers given (what phase_row reads of them)."""
    from types import SimpleNamespace

    from hwprof.device import MathModes
    phases = pd.DataFrame({"median_s": [time_s], "iqr_over_median": [0.01], "reps": [10]}, index=["fwd_nograd"])
    m = SimpleNamespace(phases=phases, run=SimpleNamespace(dtype="float32"), math_modes=MathModes("cpu"))
    return SimpleNamespace(phase=phase, batch=batch, tokens=tokens, measurement=m,
                           count=SimpleNamespace(totals={"flops_fwd": flops, "bytes_fwd": bytes_}))


def test_phase_row_metrics_from_given_counts_and_times() -> None:
    """FAKE_CEILINGS: fp32 100 GFLOP/s, 20 GB/s (ridge 5 FLOP/B); the numbers set so that swapping MFU and
    MBU, another roof (bf16 400 GFLOP/s) or tokens per call instead of per second give other answers."""
    from hwprof.llm.generation import phase_row

    # decode at batch 4: 120 MFLOPs and 8 MB in 3 ms; the weights and cache, 6 MB, read at least once
    d = phase_row(_run("decode", 4, 4, 1.2e8, 8e6, 3e-3), FAKE_CEILINGS, 6_000_000)
    assert d["tokens_per_s"] == pytest.approx(4 / 3e-3)                 # 1,333 tokens/s
    assert d["flops_per_token"] == 3e7 and d["bytes_per_token"] == 2e6
    assert d["intensity"] == pytest.approx(15.0)                        # 1.2e8 / 8e6, above the ridge: compute
    assert d["mfu"] == pytest.approx(0.4)                               # 1.2e8 / 3e-3 = 40 GFLOP/s of 100
    assert d["mbu"] == pytest.approx(8e6 / 3e-3 / 20e9)                 # 2.67 GB/s of 20 = 0.133
    assert d["mbu_weights_cache"] == pytest.approx(0.1)                 # 6e6 / 3e-3 = 2 GB/s of 20
    assert d["bound"] == "compute" and d["above_roof"] is False         # 40 GFLOP/s < min(100, 15 x 20)
    # a memory-bound call faster than the bandwidth allows: 1 MFLOP, 2 MB in 50 us = 40 GB/s > 20 GB/s
    fast = phase_row(_run("decode", 1, 1, 1e6, 2e6, 5e-5), FAKE_CEILINGS, 2_000_000)
    assert fast["mfu"] == pytest.approx(0.2) and fast["mbu"] == pytest.approx(2.0)
    assert fast["bound"] == "memory" and fast["above_roof"] is True     # 20 GFLOP/s > 0.5 x 20 = 10 GFLOP/s
    assert fast["tokens_per_s"] == pytest.approx(20_000)


def test_conventions_terms_are_exact(meta_lm: torch.nn.Module) -> None:
    """T=16, B=2. Causal attention matmuls: 4 x L x H x Q x T(T+1)/2 x B = 4*2*4*16*136*2 = 139,264 FLOPs;
    the closed form's 4*L*H*Q*T*D = 4*2*4*16*16*32 = 262,144. Embeddings: 2 * 64,000 * 32 = 4,096,000."""
    m, spec = zoo.build("hf:llama", device="meta", config=TINY_LLAMA, seq=16)
    fwd = hwprof.count(m, spec, batch=2)
    cv = conventions(fwd, None, model_shape(m.config, 16, 2))
    b = cv.breakdown
    assert b.loc["attention_matmuls", "exact_flops"] == 139_264
    assert b.loc["attention_matmuls", "closed_form_flops"] == 262_144
    assert b.loc["embeddings", "exact_flops"] == 0 and b.loc["embeddings", "closed_form_flops"] == 4_096_000
    assert b["exact_flops"].sum() == fwd.totals["flops_fwd"]          # the parts add up to the count
    two_n = cv.table.set_index("convention").loc["forward, 2N per token"]
    assert two_n["flops"] == 2 * fwd.totals["params"] * 32


def test_cli_generation_commands(capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = ["--config", TINY_LLAMA]
    assert main(["memory", "hf:llama", *cfg, "--generate", "--prompt", "16", "--new-tokens", "4", "--batch", "2",
                 "--device", "cpu"]) == 0
    assert "KV cache: 2 x 2 layers x 2 KV heads x 16 head_dim x 20 tokens x batch 2 x 4 B = 20,480 B" \
        in capsys.readouterr().out
    assert main(["count", "hf:llama", *cfg, "--seq", "16", "--conventions"]) == 0
    assert "training with attention (PaLM)" in capsys.readouterr().out
    assert main(["profile", "hf:bert", "--generate"]) == 2                 # not a causal LM: one line, rc 2
    assert main(["profile", "resnet18", "--batch", "1,4"]) == 2            # a batch list needs --generate


def test_generation_memory_json_holds_what_the_table_shows(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--format json of `memory --generate`: the components (the KV cache among them), the predictors and the
    notes the table prints, and the same numbers in the --out folder's memory.json."""
    import json

    args = ["memory", "hf:llama", "--config", TINY_LLAMA, "--generate", "--prompt", "16", "--new-tokens", "4",
            "--batch", "2", "--device", "cpu"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert main([*args, "--format", "json", "--out", str(tmp_path / "o")]) == 0
    body = json.loads(capsys.readouterr().out)
    # KV cache = 2 x layers 2 x kv_heads 2 x head_dim 16 x tokens (16 + 4) x batch 2 x 4 B = 20,480 B
    assert body["components"]["kv_cache"] == 2 * 2 * 2 * 16 * 20 * 2 * 4 == 20_480
    from hwprof.report.tables import mib

    for name, value in body["components"].items():        # every component of the table's line, by value
        assert f"{name} {mib(value)} MiB" in table, (name, value)
    assert any("KV cache: 2 x 2 layers" in n for n in body["notes"]) and all(n in table for n in body["notes"])
    assert {r["predictor"] for r in body["predictors"]} == {"formula", "simulated"}
    assert json.loads((tmp_path / "o" / "memory.json").read_text()) == body
