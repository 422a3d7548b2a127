"""hf: model names: built from a configuration alone (no weights, no network), with the inputs the
configuration implies, counted, measured and profiled on the CPU; bad names are one-line errors."""

from __future__ import annotations

import sys

import pytest
import torch
from hf_configs import TINY, TINY_LLAMA

import hwprof
from hwprof import zoo
from hwprof.cli import main
from hwprof.hardware.ceilings import Ceilings

pytest.importorskip("transformers")

FAKE_CEILINGS = Ceilings("cpu", "test-cpu", torch.__version__, "2026-11-24", "measured",
                         {"fp32": 100e9, "bf16": 400e9}, 20e9)

SPECS = {  # the default input each type gets at --seq 16
    "gpt2": "input_ids=long:16", "llama": "input_ids=long:16", "mistral": "input_ids=long:16",
    "qwen2": "input_ids=long:16", "bert": "input_ids=long:16",
    "t5": "input_ids=long:16,decoder_input_ids=long:16",
    "vit": "pixel_values=3x32x32",                       # num_channels x image_size x image_size
    "whisper": "input_features=80x3000,decoder_input_ids=long:16",   # mel bins x 2 * max_source_positions
}


TENSOR_OPS = ("aten.mm", "aten.addmm", "aten.bmm", "aten.convolution")


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_each_type_builds_on_meta_with_its_inputs_and_counts(model_type: str) -> None:
    """Counted on meta; the matmuls and convolutions cross-checked against FlopCounterMode on the same
    configuration built with real weights and run on real inputs of the spec (SDPA's CPU kernel, which
    FlopCounterMode reports as 0, is left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    from hwprof.spec import as_inputs

    model, spec = zoo.build(f"hf:{model_type}", device="meta", config=TINY[model_type], seq=16)
    assert spec == SPECS[model_type]
    assert all(p.device.type == "meta" for p in model.parameters())
    c = hwprof.count(model, spec)
    assert not c.uncounted
    torch.manual_seed(0)
    real = zoo.build(f"hf:{model_type}", config=TINY[model_type], seq=16)[0].eval()
    inputs = as_inputs(spec, batch=1, vocab=1000)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        inputs.call(real)
    theirs = {f"aten.{str(k).split('.')[-1]}": v for k, v in fc.get_flop_counts()["Global"].items()}
    ours = c.ops.groupby("op")["flops"].sum()
    assert sum(theirs.get(op, 0) for op in TENSOR_OPS) > 0
    for op in TENSOR_OPS:
        assert ours.get(op, 0) == theirs.get(op, 0), op


def test_tiny_llama_count_is_exact() -> None:
    """2 layers, d 64, 4 heads of 16, 2 KV heads, MLP 128, vocab 1000, 16 tokens, batch 1.

    Linear MACs per token per layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 + gate, up, down 3*64*128
    = 4096 + 2048 + 2048 + 4096 + 24576 = 36864; x 2 layers x 16 tokens = 1,179,648; lm_head 16*64*1000
    = 1,024,000. Causal attention: 16*17/2 = 136 useful pairs x 16 (head_dim) x 2 (QK^T and PV) x 4 heads
    = 17,408 per layer, 34,816 for both. Total 2,238,464 MACs."""
    model, spec = zoo.build("hf:llama", device="meta", config=TINY_LLAMA, seq=16)
    c = hwprof.count(model, spec)
    assert c.totals["macs_fwd"] == 1_179_648 + 1_024_000 + 34_816
    assert c.layers.loc["model.layers.0.self_attn.k_proj", "macs_fwd"] == 16 * 64 * 32
    assert c.totals["params"] == 2 * 1000 * 64 + 2 * (36864 + 2 * 64) + 64   # embed + head, layers + 2 norms, final norm


def test_matmuls_agree_with_flop_counter_mode() -> None:
    """FlopCounterMode covers mm/addmm/bmm; hwprof's FLOPs for those ops must be the same."""
    from torch.utils.flop_counter import FlopCounterMode

    model, spec = zoo.build("hf:gpt2", config=TINY["gpt2"], seq=16)
    model.eval()
    ids = torch.randint(0, 1000, (2, 16))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(input_ids=ids)
    theirs = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    ours = hwprof.count(model, {"input_ids": ids}).ops.groupby("op")["flops"].sum()
    for op in ("aten.addmm", "aten.mm", "aten.bmm"):
        assert ours.get(op, 0) == theirs.get(op, 0), op
    assert theirs.get("aten.addmm", 0) > 0


def test_config_file_and_overrides(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "llama", "num_hidden_layers": 3, "hidden_size": 32, "num_attention_heads": 2,'
                   ' "intermediate_size": 64, "vocab_size": 100}')
    model, spec = zoo.build(f"hf:{cfg}", device="meta", config="num_hidden_layers=1", seq=8)
    assert model.config.num_hidden_layers == 1 and model.config.hidden_size == 32
    assert model.config.head_dim == 16            # derived from the overridden fields: 32 / 2
    assert spec == "input_ids=long:8"
    same, _ = zoo.build(f"hf:{tmp_path}", device="meta")
    assert same.config.num_hidden_layers == 3


def test_parse_overrides_values() -> None:
    assert zoo.parse_overrides("a=2,b=0.5,c=true,d=None,e=silu,f=[1, 2],g='x,y'") == {
        "a": 2, "b": 0.5, "c": True, "d": None, "e": "silu", "f": [1, 2], "g": "x,y"}


def test_train_mode_adds_labels_and_the_model_loss_is_backpropagated() -> None:
    model, spec = zoo.build("hf:llama", device="meta", config=TINY_LLAMA, seq=16, mode="train")
    assert spec == "input_ids=long:16,labels=long:16"
    c = hwprof.count(model, spec, mode="train", backward=True)
    # backward from the scalar loss: the lm_head's grad_input and grad_weight matmuls, 2 x its forward MACs
    assert c.layers.loc["lm_head", "macs_bwd"] == 2 * 16 * 64 * 1000


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2", "bert", "t5", "vit", "whisper"])
def test_each_type_measures_on_cpu(model_type: str) -> None:
    """The measured forward runs the model on the inputs the count assumed: torch.profiler (the per-op
    pass) sees as many matmul, convolution and attention calls as the counter, op by op."""
    model, spec = zoo.build(f"hf:{model_type}", config=TINY[model_type], seq=8)
    m = hwprof.measure(model, spec, device="cpu", budget_s=0.01, min_reps=2, warmup=1, alloc_trace=False,
                       per_op=True)
    c = hwprof.count(model, spec)
    ops = (*TENSOR_OPS, "aten._scaled_dot_product_flash_attention_for_cpu")
    measured, counted = m.ops.groupby("op").size(), c.ops.groupby("op").size()
    assert {op: int(measured.get(op, 0)) for op in ops} == {op: int(counted.get(op, 0)) for op in ops}
    assert sum(int(counted.get(op, 0)) for op in TENSOR_OPS) > 0
    assert m.timings["fwd_nograd"].reps >= 2


def test_llama_profiles_on_cpu_and_trains() -> None:
    model, spec = zoo.build("hf:llama", config=TINY_LLAMA, seq=8, mode="train")
    p = hwprof.profile(model, spec, device="cpu", mode="train", budget_s=0.02, ceilings=FAKE_CEILINGS)
    row = p.layers.loc["model.layers.0.mlp.down_proj"]
    assert row["flops"] == 3 * 2 * 8 * 128 * 64          # forward + 2 backward matmuls, 2 FLOPs per MAC
    assert row["time_s"] > 0


def test_unknown_type_and_missing_transformers_are_one_line_errors(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert main(["count", "hf:no_such_type"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown hf: model type 'no_such_type'" in err
    monkeypatch.setitem(sys.modules, "transformers", None)        # import transformers -> ImportError
    assert main(["count", "hf:llama"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'hwprof[hf]'" in err


def test_cli_named_inputs_reach_their_keywords(capsys) -> None:  # type: ignore[no-untyped-def]
    """A second long: input used to land in attention_mask; by name it goes where it is meant to."""
    cfg = TINY["t5"]
    assert main(["count", "hf:t5", "--config", cfg, "--input", "input_ids=long:8",
                 "--input", "decoder_input_ids=long:4", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"input": "input_ids=long:8,decoder_input_ids=long:4"' in out
    assert main(["count", "resnet18", "--config", "a=1"]) == 2          # --config is for hf: only
