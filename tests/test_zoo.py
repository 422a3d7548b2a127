"""The model zoo: every entry builds, parameter counts match their references, names resolve."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hwprof import zoo


@pytest.mark.parametrize("name, params", [
    ("lenet5", 431_080),                 # seed 001
    ("alexnet", 61_264_904),             # seed 004 (torchsummary)
    ("vgg16", 138_357_544),              # Keras/torchvision VGG16 at 224 with the top
    ("vgg16_1024_notop", 14_714_688),    # seed 003
    ("mobilenet_v1", 4_231_976),         # MobileNetV1 1.0-224 (Howard et al. 2017: 4.2 M)
    ("resnet18", 11_689_512),            # torchvision resnet18
    ("resnet50", 25_557_032),            # torchvision resnet50
])
def test_reference_parameter_counts(name: str, params: int) -> None:
    model, _ = zoo.build(name, device="meta")
    assert sum(p.numel() for p in model.parameters()) == params


def test_every_entry_builds_on_meta_with_a_valid_spec() -> None:
    from hwprof.spec import parse_spec

    for name in zoo.names():
        model, spec = zoo.build(name, device="meta")
        assert isinstance(model, torch.nn.Module) and parse_spec(spec)
        assert all(p.device.type == "meta" for p in model.parameters())


def test_dense_twin_keeps_channels_and_strides() -> None:
    sep, dense = zoo.MobileNetV1(), zoo.MobileNetV1(dense=True)
    convs = [m for m in dense.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 14 and all(c.groups == 1 and c.kernel_size == (3, 3) for c in convs)
    assert [c.out_channels for c in convs] == [d.depth for d in zoo.MOBILENET_V1_CONV_DEFS]
    assert [c.stride[0] for c in convs] == [d.stride for d in zoo.MOBILENET_V1_CONV_DEFS]
    dw = [m for m in sep.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(dw) == 13 and all(m.groups == m.in_channels for m in dw)


def test_user_factory_and_unknown_names() -> None:
    model, spec = zoo.build("hwprof.zoo:LeNet5")
    assert isinstance(model, zoo.LeNet5)
    with pytest.raises(zoo.UnknownModelError, match="unknown model"):
        zoo.build("not_a_model")
    with pytest.raises(zoo.UnknownModelError, match="no attribute"):
        zoo.build("hwprof.zoo:Nope")
    with pytest.raises(zoo.UnknownModelError, match="cannot import"):
        zoo.build("no_such_pkg.mod:f")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_torchvision_name_without_torchvision_is_a_clear_error() -> None:
    with pytest.raises(zoo.UnknownModelError, match="needs the 'torchvision.models' package"):
        zoo.build("torchvision:resnet50")


def test_timm_models_default_to_their_own_input_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm:mobilevit_xxs is trained at 256x256 (its pretrained config says so); it was counted
    at 224. timm is not a dependency: a fake module stands in for it."""
    import sys
    import types

    def create_model(name: str, pretrained: bool = False) -> torch.nn.Module:
        model = torch.nn.Conv2d(3, 8, 3)
        if name == "mobilevit_xxs":
            model.pretrained_cfg = {"input_size": (3, 256, 256), "crop_pct": 0.9}  # type: ignore[assignment]
        return model

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    assert zoo.build("timm:mobilevit_xxs")[1] == "3x256x256"
    assert zoo.build("timm:plain")[1] == "3x224x224"  # no config: the usual 224
