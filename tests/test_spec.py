"""Input specs: parsing, building, errors."""

from __future__ import annotations

import pytest
import torch

from hwprof.spec import InputSpecError, TensorSpec, as_input_tuple, make_inputs, parse_dtype, parse_spec


def test_parse_shapes_and_dtypes() -> None:
    assert parse_spec("3x224x224") == (TensorSpec((3, 224, 224)),)
    assert parse_spec("long:128, 3X32*32") == (TensorSpec((128,), torch.long), TensorSpec((3, 32, 32)))
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype(torch.float16) is torch.float16


@pytest.mark.parametrize("bad", ["", "3xx", "3x-1", "a:3", "3x0"])
def test_bad_specs_raise_one_clear_error(bad: str) -> None:
    with pytest.raises(InputSpecError):
        parse_spec(bad)


def test_make_inputs_batch_dtype_and_meta() -> None:
    x, ids = make_inputs(parse_spec("3x4x4,long:7"), batch=2, dtype=torch.bfloat16)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.bfloat16
    assert ids.shape == (2, 7) and ids.dtype == torch.long and int(ids.abs().sum()) == 0
    (m,) = make_inputs(parse_spec("5"), batch=None, device="meta")
    assert m.shape == (5,) and m.device.type == "meta"


def test_as_input_tuple_accepts_tensor_tuple_and_spec() -> None:
    t = torch.ones(2)
    assert as_input_tuple(t)[0] is t
    assert as_input_tuple((t, 3))[1] == 3
    assert as_input_tuple("4", batch=3)[0].shape == (3, 4)
    with pytest.raises(InputSpecError):
        as_input_tuple(42)


@pytest.mark.parametrize("name", ["long", "int", "int32", "bool", torch.int64, torch.bool])
def test_parse_dtype_takes_floating_dtypes_only(name: object) -> None:
    """The run's dtype converts parameters: an integer or bool dtype is a one-line error that
    says where integer inputs go (it was a RuntimeError deep in the model conversion)."""
    with pytest.raises(InputSpecError, match=r"not a floating dtype.*long:128"):
        parse_dtype(name)  # type: ignore[arg-type]
    # integer inputs still parse in a spec
    assert parse_spec("long:8, int32:2, bool:3")[0].dtype is torch.long
