"""Keyword inputs end to end: specs with names, dicts of tensors or specs, token ids in the vocabulary.

The toy encoder-decoder below takes two keyword token-id inputs, like a seq2seq model called
``model(input_ids=..., decoder_input_ids=...)``; its forward FLOPs are exact by hand.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hwprof
from hwprof.spec import Inputs, InputSpecError, TensorSpec, as_inputs, make_inputs, parse_spec, vocab_size
from hwprof.training import loss_tensors, training_loss

VOCAB, D = 50, 8


class ToySeq2Seq(nn.Module):
    """embed(input_ids) -> mean over the source; embed(decoder_input_ids) + that mean -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.head = nn.Linear(D, VOCAB, bias=False)

    def forward(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        assert decoder_input_ids is not None, "decoder_input_ids is required"
        src = self.embed(input_ids).mean(dim=1, keepdim=True)
        return self.head(self.embed(decoder_input_ids) + src)


def _head_flops(batch: int, tgt: int) -> int:
    # head: (batch*tgt) x D @ D x VOCAB = 2 * batch*tgt*D*VOCAB FLOPs
    return 2 * batch * tgt * D * VOCAB


def test_parse_named_specs() -> None:
    assert parse_spec("input_ids=long:128, decoder_input_ids=long:32") == (
        TensorSpec((128,), torch.long, "input_ids"), TensorSpec((32,), torch.long, "decoder_input_ids"))
    assert parse_spec("3x8, mask=bool:8")[1] == TensorSpec((8,), torch.bool, "mask")


@pytest.mark.parametrize("bad", ["a=long:3, 4", "x=3, x=4", "1a=3", "=3"])
def test_bad_named_specs_are_one_clear_error(bad: str) -> None:
    with pytest.raises(InputSpecError):
        parse_spec(bad)


def test_make_inputs_sends_named_specs_by_keyword() -> None:
    xs = make_inputs(parse_spec("4, input_ids=long:6, attention_mask=long:6"), batch=2, vocab=VOCAB)
    assert isinstance(xs, Inputs) and len(xs.args) == 1 and list(xs.kwargs) == ["input_ids", "attention_mask"]
    ids = xs.kwargs["input_ids"]
    assert ids.shape == (2, 6) and int(ids.min()) >= 0 and int(ids.max()) < VOCAB
    assert bool((xs.kwargs["attention_mask"] == 1).all())          # a mask attends everywhere
    assert len(xs) == 3 and xs[0].shape == (2, 4)                   # the sequence of all values


def test_token_ids_are_drawn_within_the_vocabulary() -> None:
    torch.manual_seed(0)
    (ids,) = make_inputs(parse_spec("long:4000"), batch=1, vocab=VOCAB)
    # 4000 draws uniform in [0, 50): every id below VOCAB, and (almost surely) more than one distinct id
    assert int(ids.max()) < VOCAB and int(ids.min()) >= 0 and len(ids.unique()) > 40
    (zeros,) = make_inputs(parse_spec("long:5"), batch=1)          # no vocabulary known: zeros, as before
    assert int(zeros.abs().sum()) == 0


def test_vocab_size_from_config_or_smallest_embedding() -> None:
    m = ToySeq2Seq()
    assert vocab_size(m) == VOCAB
    m.pos = nn.Embedding(16, D)                                     # ids must be valid for both tables
    assert vocab_size(m) == 16
    m.config = type("Cfg", (), {"vocab_size": 32})()
    assert vocab_size(m) == 32
    assert vocab_size(nn.Linear(2, 2)) is None


def test_count_takes_a_dict_of_specs_and_a_dict_of_tensors() -> None:
    """Failed with InputSpecError '... got dict' before keyword inputs."""
    m = ToySeq2Seq()
    by_spec = hwprof.count(m, {"input_ids": "long:12", "decoder_input_ids": "long:5"}, batch=2)
    ids = torch.zeros(2, 12, dtype=torch.long)
    dec = torch.zeros(2, 5, dtype=torch.long)
    by_tensor = hwprof.count(m, {"input_ids": ids, "decoder_input_ids": dec})
    assert by_spec.layers.loc["head", "flops_fwd"] == _head_flops(2, 5) == by_tensor.layers.loc["head", "flops_fwd"]
    assert by_spec.totals["flops_fwd"] == by_tensor.totals["flops_fwd"]
    assert by_spec.config["batch"] == 2
    assert by_tensor.config["inputs"] == "input_ids=2x12, decoder_input_ids=2x5"


def test_count_takes_a_named_spec_string() -> None:
    m = ToySeq2Seq()
    c = hwprof.count(m, "input_ids=long:12,decoder_input_ids=long:5", batch=3)
    assert c.layers.loc["head", "flops_fwd"] == _head_flops(3, 5)
    # the same two inputs positionally: the same count
    assert hwprof.count(m, "long:12,long:5", batch=3).totals["flops_fwd"] == c.totals["flops_fwd"]


def test_dict_value_must_be_one_tensor() -> None:
    with pytest.raises(InputSpecError, match="one tensor"):
        as_inputs({"input_ids": "long:3,long:4"})


def test_measure_and_memory_take_keyword_inputs() -> None:
    m = ToySeq2Seq()
    spec = {"input_ids": "long:12", "decoder_input_ids": "long:5"}
    r = hwprof.measure(m, spec, device="cpu", batch=2, budget_s=0.01, min_reps=2, warmup=1)
    assert r.run.batch == 2 and r.phases.loc["fwd_nograd", "reps"] >= 2
    est = hwprof.estimate_memory(m, "input_ids=long:12,decoder_input_ids=long:5", mode="inference", batch=2,
                                 device="cpu", predictors=("formula", "simulated"))
    # inputs: 2 x 12 + 2 x 5 int64 ids = 34 x 8 B = 272 B
    assert est.components["inputs"] == 272


def test_measure_draws_token_ids_inside_the_vocabulary() -> None:
    """An id outside the embedding would raise IndexError in the first forward."""
    seen: list[torch.Tensor] = []

    class Spy(ToySeq2Seq):
        def forward(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor | None = None,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            seen.append(input_ids)
            return super().forward(input_ids, decoder_input_ids)

    hwprof.measure(Spy(), {"input_ids": "long:64", "decoder_input_ids": "long:4"}, device="cpu", budget_s=0.01,
                   min_reps=2, warmup=1, alloc_trace=False)
    ids = seen[0]
    assert int(ids.max()) < VOCAB and len(ids.unique()) > 1


def test_a_models_own_loss_is_what_training_backpropagates() -> None:
    """A Hugging Face output with ``labels`` carries ``loss``: train on it, not on the logits too."""
    logits = torch.ones(2, 3, requires_grad=True)
    loss = (logits * 2).sum()
    out = {"loss": loss, "logits": logits}
    assert loss_tensors(out) == [loss]
    total = training_loss(out)
    assert total is not None and float(total.detach()) == 12.0                  # 2 * 6 ones
    assert len(loss_tensors((logits, logits * 3))) == 2                        # no loss: every output
