"""Reference models, buildable by name (``hwprof.zoo.build("mobilenet_v1")``).

The seed documents' models (docs/SEEDS.md) are reproduced exactly:

* ``lenet5``      seed 001's Caffe variant: 1x28x28 input, conv 5x5 x20, pool, conv 5x5 x50, pool,
                  fc 500, fc 10 (431,080 parameters).
* ``alexnet``     seed 004's AlexNet: bias-free convolutions 96/192/384/256/256 (61,264,904 parameters).
* ``vgg16``       seed 003's Keras VGG16 (``include_top`` and the input size are parameters;
                  1024x1024 gives 14,714,688 parameters without the top, 2,183,080,744 with it).
* ``mobilenet_v1`` seed 000's ``_CONV_DEFS`` (conv 3x3 s2 x32, then 13 depthwise-separable blocks),
                  BN + ReLU after every conv, global average pool, fc 1000.
* ``mobilenet_v1_dense`` its dense twin: the same channels and strides, each depthwise-separable
                  block replaced by one standard 3x3 convolution (seed 000's "src conv").

Plus models for the other studies: ``resnet18`` / ``resnet50`` (torchvision's layout, own code),
``transformer_encoder`` (token ids -> 2 encoder layers), ``gpt_tiny`` / ``gpt_7b`` (decoder-only,
causal SDPA; 7B = 32 layers, d_model 4096, 32 heads, seq 2048) and ``lstm`` (2-layer LSTM).
``torchvision:NAME`` and ``timm:NAME`` build those packages' models when installed (a timm
model's default input is its own pretrained input size), ``hf:MODEL_TYPE`` / ``hf:path/config.json``
build a Hugging Face ``transformers`` model from its configuration alone (no weights, no network:
:func:`build_hf`), and ``package.module:factory`` calls a user factory.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ZooEntry", "ZOO", "build", "names", "UnknownModelError", "MOBILENET_V1_CONV_DEFS", "build_hf", "hf_config",
           "hf_input_spec", "parse_overrides", "HF_DEFAULT_SEQ"]


class UnknownModelError(ValueError):
    """The model name is not in the zoo and no installed package provides it."""


# --------------------------------------------------------------------------- LeNet-5 (seed 001)
class LeNet5(nn.Module):
    """Caffe's LeNet-5 (seed 001): params 520 + 25,050 + 400,500 + 5,010 = 431,080."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)      # 28 -> 24
        self.pool1 = nn.MaxPool2d(2, 2)       # 24 -> 12
        self.conv2 = nn.Conv2d(20, 50, 5)     # 12 -> 8
        self.pool2 = nn.MaxPool2d(2, 2)       # 8 -> 4
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc2(self.relu(self.fc1(torch.flatten(x, 1))))


# --------------------------------------------------------------------------- AlexNet (seed 004)
class AlexNet(nn.Module):
    """Seed 004's AlexNet, convolutions without bias (61,264,904 parameters)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.feature_extraction = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=2, bias=False),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=0),
            nn.Conv2d(96, 192, kernel_size=5, stride=1, padding=2, bias=False),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=0),
            nn.Conv2d(192, 384, kernel_size=3, stride=1, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, stride=1, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, stride=1, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=0),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.feature_extraction(x)
        x = x.view(x.size(0), 256 * 6 * 6)
        return self.classifier(x)


# --------------------------------------------------------------------------- VGG16 (seed 003)
class VGG16(nn.Module):
    """Keras' VGG16 layout (seed 003): 13 conv 3x3 + ReLU, 5 max-pools, optional 3-layer top.

    The top's first layer sees ``512 * (input_size / 32)**2`` features, so at 1024x1024 it
    holds 524,288 x 4,096 + 4,096 = 2,147,487,744 parameters.
    """

    CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, input_size: int = 224, include_top: bool = True, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                c_in = int(v)
        self.features = nn.Sequential(*layers)
        self.include_top = include_top
        if include_top:
            side = input_size // 32
            self.flatten = nn.Flatten()
            self.classifier = nn.Sequential(
                nn.Linear(512 * side * side, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, num_classes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.include_top:
            x = self.classifier(self.flatten(x))
        return x


# --------------------------------------------------------------------------- MobileNetV1 (seed 000)
@dataclass(frozen=True)
class ConvDef:
    """One entry of seed 000's ``_CONV_DEFS``: 'conv' (standard) or 'dsep' (depthwise-separable)."""

    kind: str
    kernel: int
    stride: int
    depth: int


MOBILENET_V1_CONV_DEFS: tuple[ConvDef, ...] = (
    ConvDef("conv", 3, 2, 32),
    ConvDef("dsep", 3, 1, 64),
    ConvDef("dsep", 3, 2, 128),
    ConvDef("dsep", 3, 1, 128),
    ConvDef("dsep", 3, 2, 256),
    ConvDef("dsep", 3, 1, 256),
    ConvDef("dsep", 3, 2, 512),
    ConvDef("dsep", 3, 1, 512),
    ConvDef("dsep", 3, 1, 512),
    ConvDef("dsep", 3, 1, 512),
    ConvDef("dsep", 3, 1, 512),
    ConvDef("dsep", 3, 1, 512),
    ConvDef("dsep", 3, 2, 1024),
    ConvDef("dsep", 3, 1, 1024),
)


def _conv_bn_relu(c_in: int, c_out: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DepthwiseSeparable(nn.Module):
    """Depthwise k x k (groups = C_in) then pointwise 1x1, each followed by BN + ReLU."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int) -> None:
        super().__init__()
        self.depthwise = _conv_bn_relu(c_in, c_in, k, stride, groups=c_in)
        self.pointwise = _conv_bn_relu(c_in, c_out, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetV1(nn.Module):
    """MobileNetV1 from seed 000's ``_CONV_DEFS``; ``dense=True`` builds the dense twin
    (each depthwise-separable block becomes one standard k x k convolution, same channels)."""

    def __init__(self, num_classes: int = 1000, dense: bool = False, width: float = 1.0) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = 3
        for d in MOBILENET_V1_CONV_DEFS:
            c_out = max(8, int(d.depth * width))
            if d.kind == "conv" or dense:
                blocks.append(_conv_bn_relu(c_in, c_out, d.kernel, d.stride))
            else:
                blocks.append(DepthwiseSeparable(c_in, c_out, d.kernel, d.stride))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(c_in, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(c_in, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(c_in: int, c_out: int, stride: int) -> nn.Module | None:
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class ResNet(nn.Module):
    """torchvision's ResNet layout (same module names and parameter counts), written here so
    that the zoo needs no torchvision: resnet18 = 11,689,512 params, resnet50 = 25,557,032."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...],
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, planes, 2 if (j == 0 and i > 0) else 1))
                c_in = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------- sequence models
class TransformerEncoderModel(nn.Module):
    """Token ids -> embedding -> ``nn.TransformerEncoder`` (post-norm, batch_first) -> linear head."""

    def __init__(self, vocab: int = 1000, d_model: int = 256, n_heads: int = 4, d_ff: int = 1024,
                 n_layers: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (t.view(b, s, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, s, d))


class GPTBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model, bias=False), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer (pre-norm, causal SDPA, untied head)."""

    def __init__(self, vocab: int = 32000, d_model: int = 4096, n_heads: int = 32, n_layers: int = 32,
                 max_seq: int = 2048) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_seq, d_model)
        self.blocks = nn.Sequential(*(GPTBlock(d_model, n_heads) for _ in range(n_layers)))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok(tokens) + self.pos(pos)
        return self.head(self.ln_f(self.blocks(x)))


class LSTMModel(nn.Module):
    """(batch, seq, features) -> 2-layer LSTM -> linear head on the last step."""

    def __init__(self, input_size: int = 128, hidden: int = 256, layers: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ZooEntry:
    """A buildable model with its default input spec (see :mod:`hwprof.spec`)."""

    name: str
    factory: Callable[[], nn.Module]
    input_spec: str
    description: str


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry("lenet5", LeNet5, "1x28x28", "LeNet-5, Caffe variant (seed 001)"),
    ZooEntry("alexnet", AlexNet, "3x224x224", "AlexNet with bias-free convs (seed 004)"),
    ZooEntry("vgg16", VGG16, "3x224x224", "VGG16 with top (seed 003, Keras layout)"),
    ZooEntry("vgg16_1024_notop", lambda: VGG16(1024, include_top=False), "3x1024x1024",
             "VGG16 without top at 1024x1024 (seed 003)"),
    ZooEntry("mobilenet_v1", MobileNetV1, "3x224x224", "MobileNetV1 (seed 000 _CONV_DEFS)"),
    ZooEntry("mobilenet_v1_dense", lambda: MobileNetV1(dense=True), "3x224x224",
             "MobileNetV1's dense twin: standard 3x3 convs instead of depthwise-separable"),
    ZooEntry("resnet18", lambda: ResNet(BasicBlock, (2, 2, 2, 2)), "3x224x224", "ResNet-18 (torchvision layout)"),
    ZooEntry("resnet50", lambda: ResNet(Bottleneck, (3, 4, 6, 3)), "3x224x224", "ResNet-50 (torchvision layout)"),
    ZooEntry("transformer_encoder", TransformerEncoderModel, "long:128",
             "token embedding + 2 TransformerEncoderLayers (d 256, 4 heads) + head"),
    ZooEntry("gpt_tiny", lambda: GPT(vocab=1000, d_model=128, n_heads=4, n_layers=2, max_seq=256), "long:64",
             "2-layer decoder-only transformer, d 128"),
    ZooEntry("gpt_7b", GPT, "long:2048", "decoder-only, 32 layers, d 4096, 32 heads (~6.9B params; build on meta)"),
    ZooEntry("lstm", LSTMModel, "64x128", "2-layer LSTM, hidden 256, on (seq 64, features 128)"),
)}


def names() -> list[str]:
    return sorted(ZOO)


def build(name: str, device: torch.device | str | None = None, *, config: str | Mapping[str, Any] | None = None,
          seq: int | None = None, mode: str = "inference") -> tuple[nn.Module, str]:
    """Build ``name`` and return ``(model, default_input_spec)``.

    ``name`` is a zoo name, ``torchvision:NAME``, ``timm:NAME``, ``hf:MODEL_TYPE``, ``hf:path/config.json``
    or ``package.module:factory``. Pass ``device="meta"`` to build without allocating parameters.
    ``config`` (field overrides, ``"num_hidden_layers=2,hidden_size=256"`` or a dict), ``seq`` (the
    sequence length of the default input) and ``mode`` (``"train"`` adds ``labels``, so the model
    computes its own loss) apply to ``hf:`` models only (:func:`build_hf`).
    """
    if not name.startswith("hf:") and (config is not None or seq is not None):
        raise UnknownModelError(f"--config and --seq apply to hf: models only, not {name!r}")
    ctx = torch.device(device) if device is not None else _nullcontext()
    with ctx:
        if name in ZOO:
            e = ZOO[name]
            return e.factory(), e.input_spec
        if ":" in name:
            prefix, attr = name.split(":", 1)
            if prefix == "torchvision":
                return _build_torchvision(attr), "3x224x224"
            if prefix == "timm":
                model = _build_timm(attr)
                return model, _timm_input_spec(model)
            if prefix == "hf":
                return build_hf(attr, config, seq=seq, mode=mode)
            return _build_user(prefix, attr), "3x224x224"
    raise UnknownModelError(
        f"unknown model {name!r}; zoo names: {', '.join(names())}; or torchvision:NAME, timm:NAME, hf:MODEL_TYPE, "
        "hf:path/config.json, package.module:factory")


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _import_optional(module: str, what: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UnknownModelError(f"{what} needs the '{module}' package, which is not installed ({e})") from None


def _from_package(module: str, prefix: str, attr: str, make: Callable[[Any], nn.Module],
                  unknown: type[Exception]) -> nn.Module:
    """``make(module)`` with random weights; a missing package or an ``unknown`` error (the
    package's way of saying it has no such model) becomes :class:`UnknownModelError`."""
    pkg = _import_optional(module, f"{prefix}:{attr}")
    try:
        return make(pkg)
    except unknown as e:
        raise UnknownModelError(f"{prefix} has no model {attr!r} ({e})") from None


def _build_torchvision(attr: str) -> nn.Module:
    return _from_package("torchvision.models", "torchvision", attr, lambda tv: tv.get_model(attr, weights=None),
                         ValueError)


def _build_timm(attr: str) -> nn.Module:
    return _from_package("timm", "timm", attr, lambda timm: timm.create_model(attr, pretrained=False), RuntimeError)


def _timm_input_spec(model: nn.Module) -> str:
    """A timm model's own default input size, from its pretrained config (``pretrained_cfg``,
    ``default_cfg`` in older timm): ``{"input_size": (3, 256, 256)}`` -> "3x256x256" (mobilevit_xxs
    is trained at 256, not 224). "3x224x224" when the model has no config."""
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        size = cfg.get("input_size") if isinstance(cfg, Mapping) else getattr(cfg, "input_size", None)
        if size:
            return "x".join(str(int(d)) for d in size)
    return "3x224x224"


def _build_user(module: str, attr: str) -> nn.Module:
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise UnknownModelError(f"cannot import {module!r} for model {module}:{attr} ({e})") from None
    factory = getattr(mod, attr, None)
    if factory is None:
        raise UnknownModelError(f"module {module!r} has no attribute {attr!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise UnknownModelError(f"{module}:{attr}() returned {type(model).__name__}, not an nn.Module")
    return model


# --------------------------------------------------------------------------- Hugging Face (hf:)
HF_DEFAULT_SEQ = 128
"""Sequence length of an ``hf:`` model's default input (capped by its ``max_position_embeddings``)."""


def parse_overrides(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``"num_hidden_layers=2,hidden_size=256,tie_word_embeddings=false"`` -> a dict of Python values
    (ints, floats, ``true``/``false``/``none`` in any case, quoted or bare strings, lists). A comma
    starts a new field only before ``name=``, so ``layer_types=['full','sliding']`` stays whole."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    out: dict[str, Any] = {}
    for item in re.split(r",\s*(?=[A-Za-z_]\w*\s*=)", text.strip()):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UnknownModelError(f"bad --config item {item!r}; expected key=value, e.g. num_hidden_layers=2")
        out[key] = _literal(raw.strip())
    return out


def _literal(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "false", "none", "null"):
        return {"true": True, "false": False}.get(low)
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _transformers() -> Any:
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise UnknownModelError("hf: models need the 'transformers' package, which is not installed "
                                "(pip install 'hwprof[hf]')") from None


@contextlib.contextmanager
def _quiet_transformers(tf: Any) -> Iterator[None]:
    """transformers' own warnings (e.g. about random weights) silenced while building; its verbosity restored."""
    level = tf.logging.get_verbosity()
    tf.logging.set_verbosity_error()
    try:
        yield
    finally:
        tf.logging.set_verbosity(level)


def hf_config(source: str, overrides: str | Mapping[str, Any] | None = None) -> Any:
    """The configuration of ``hf:SOURCE``: ``AutoConfig.for_model(SOURCE)`` (library defaults, no
    network) or, when SOURCE is a ``.json`` file or a folder holding ``config.json``, that file's fields;
    ``overrides`` (:func:`parse_overrides`) go to the config's constructor with them, so fields derived
    from others follow (llama's ``head_dim`` from ``hidden_size``); each must name a known field."""
    tf = _transformers()
    fields = parse_overrides(overrides)
    model_type, base = _config_source(source)
    try:
        with _quiet_transformers(tf):
            default = tf.AutoConfig.for_model(model_type)
    except ValueError:
        raise UnknownModelError(f"unknown hf: model type {model_type!r}; expected a transformers model_type "
                                "such as gpt2, llama, mistral, qwen2, bert, t5, vit, whisper, "
                                "or a path to a config.json") from None
    for key in fields:
        if not hasattr(default, key):
            raise UnknownModelError(f"hf:{source}: its {type(default).__name__} has no field {key!r}")
    try:
        with _quiet_transformers(tf):
            return tf.AutoConfig.for_model(model_type, **{**base, **fields})
    except (ValueError, TypeError) as e:
        raise UnknownModelError(f"hf:{source}: bad config ({_first_line(e)})") from None


def _config_source(source: str) -> tuple[str, dict[str, Any]]:
    """(model_type, fields) of ``hf:SOURCE``: a model type and no fields, or a config file's contents."""
    path = Path(source)
    if not (source.endswith(".json") or path.is_dir()):
        return source, {}
    file = path / "config.json" if path.is_dir() else path
    try:
        fields = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise UnknownModelError(f"hf:{source}: cannot read the config file ({_first_line(e)})") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("model_type"), str):
        raise UnknownModelError(f"hf:{source}: not a transformers config (no 'model_type' field)")
    return fields.pop("model_type"), fields


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _hf_auto_class(tf: Any, cfg: Any) -> Any:
    """The task head an ``hf:`` model is built with, from its model type: speech seq2seq (whisper),
    seq2seq LM (t5), masked LM (bert: an encoder, though it also has a causal-LM head), causal LM
    (gpt2, llama, ...), image classification (vit), else the bare model."""
    from transformers.models.auto import modeling_auto as ma
    t = cfg.model_type
    for names, cls in ((ma.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES, tf.AutoModelForSpeechSeq2Seq),
                       (ma.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES, tf.AutoModelForSeq2SeqLM),
                       (ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES, tf.AutoModelForMaskedLM),
                       (ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, tf.AutoModelForCausalLM),
                       (ma.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES, tf.AutoModelForImageClassification)):
        if t in names:
            return cls
    return tf.AutoModel


def build_hf(source: str, overrides: str | Mapping[str, Any] | None = None, *, seq: int | None = None,
             mode: str = "inference") -> tuple[nn.Module, str]:
    """A ``transformers`` model from its configuration (:func:`hf_config`) with its library's random
    initialisation (under ``torch.device("meta")``: no memory), and its default input spec
    (:func:`hf_input_spec`). Raises :class:`UnknownModelError` (one line) when transformers is
    missing, the type is unknown or the model cannot be built from that configuration."""
    tf = _transformers()
    cfg = hf_config(source, overrides)
    with _quiet_transformers(tf):
        try:
            model = _hf_auto_class(tf, cfg).from_config(cfg)
        except (ValueError, TypeError, AttributeError, KeyError, AssertionError) as e:
            raise UnknownModelError(f"hf:{source}: cannot build a model from this config ({_first_line(e)})") from None
    return model, hf_input_spec(cfg, seq, mode)


def hf_input_spec(cfg: Any, seq: int | None = None, mode: str = "inference") -> str:
    """The keyword inputs an ``hf:`` model takes, from its configuration, at sequence length ``seq``
    (default :data:`HF_DEFAULT_SEQ`, capped by the model's positions): ``input_features`` (speech:
    ``num_mel_bins x 2·max_source_positions``, the frames Whisper's encoder requires) or
    ``pixel_values`` (vision: ``num_channels x image_size x image_size``) or ``input_ids``; an
    encoder-decoder adds ``decoder_input_ids``; ``mode="train"`` adds ``labels`` (token ids, so that
    the model computes its language-modelling loss) for text models."""
    if seq is not None and seq <= 0:
        raise UnknownModelError(f"--seq must be positive, got {seq}")
    n = seq or min(HF_DEFAULT_SEQ, _max_positions(cfg) or HF_DEFAULT_SEQ)
    if getattr(cfg, "num_mel_bins", None):
        items = [f"input_features={cfg.num_mel_bins}x{2 * cfg.max_source_positions}"]
    elif getattr(cfg, "image_size", None) and getattr(cfg, "num_channels", None):
        size = cfg.image_size
        items = [f"pixel_values={cfg.num_channels}x{size}x{size}"]
    else:
        items = [f"input_ids=long:{n}"]
    if getattr(cfg, "is_encoder_decoder", False):
        items.append(f"decoder_input_ids=long:{n}")
    if mode == "train" and not items[0].startswith("pixel_values"):
        items.append(f"labels=long:{n}")
    return ",".join(items)


def _max_positions(cfg: Any) -> int | None:
    found = hf_max_positions(cfg)
    return found[1] if found else None


def hf_max_positions(cfg: Any) -> tuple[str, int] | None:
    """(configuration key, value) of the longest sequence an ``hf:`` model's configuration allows
    (``max_position_embeddings``, ``n_positions`` or ``max_target_positions``), or None."""
    keys = ("max_position_embeddings", "n_positions", "max_target_positions")
    own = cfg.to_dict() if callable(getattr(cfg, "to_dict", None)) else {}
    for key in sorted(keys, key=lambda k: k not in own):   # the name the configuration itself uses first
        v = getattr(cfg, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return key, v
    return None


def hf_positions_problem(cfg: Any, spec: str) -> str | None:
    """Why ``spec`` is too long for the model of ``cfg`` (an integer input, token ids, whose last
    dimension is beyond :func:`hf_max_positions`: its position embeddings would be indexed out of
    range), or None."""
    found = hf_max_positions(cfg)
    if found is None:
        return None
    from hwprof.spec import parse_spec

    key, top = found
    for s in parse_spec(spec):
        if s.dtype is not None and not s.dtype.is_floating_point and s.shape and s.shape[-1] > top:
            n = s.shape[-1]
            return (f"{s.name + ' ' if s.name else ''}sequence length {n} is beyond the model's {key} = {top}: "
                    f"use --seq {top} or less, or allow more with --config {key}={n}")
    return None
