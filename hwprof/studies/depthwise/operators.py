"""The study's operators: dense / grouped / depthwise / pointwise / depthwise-separable
convolutions mapping ``N x C x H x W`` to the same shape."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class OperatorDef:
    """One operator of the sweep. ``groups=None`` means depthwise (groups = C)."""

    name: str
    label: str
    family: str        # dense | grouped | depthwise | pointwise | separable
    kernel: int
    groups: int | None


OPERATORS: dict[str, OperatorDef] = {d.name: d for d in (
    OperatorDef("dense_3x3", "dense 3x3", "dense", 3, 1),
    OperatorDef("grouped_3x3_g2", "grouped 3x3 g=2", "grouped", 3, 2),
    OperatorDef("grouped_3x3_g8", "grouped 3x3 g=8", "grouped", 3, 8),
    OperatorDef("grouped_3x3_g32", "grouped 3x3 g=32", "grouped", 3, 32),
    OperatorDef("depthwise_3x3", "depthwise 3x3", "depthwise", 3, None),
    OperatorDef("depthwise_5x5", "depthwise 5x5", "depthwise", 5, None),
    OperatorDef("depthwise_7x7", "depthwise 7x7", "depthwise", 7, None),
    OperatorDef("pointwise_1x1", "pointwise 1x1", "pointwise", 1, 1),
    OperatorDef("dw_separable_3x3", "depthwise-separable 3x3 (dw 3x3 + pw 1x1)", "separable", 3, None),
)}


def _conv(c: int, k: int, groups: int) -> nn.Conv2d:
    return nn.Conv2d(c, c, k, stride=1, padding=k // 2, groups=groups, bias=False)


def operator_supported(op: str, channels: int) -> bool:
    """A grouped conv needs ``groups`` to divide C."""
    d = OPERATORS[op]
    g = channels if d.groups is None else d.groups
    return 0 < g <= channels and channels % g == 0


def build_operator(op: str, channels: int) -> nn.Module:
    """The module of ``op`` mapping ``N x C x H x W`` to the same shape (fp32, CPU)."""
    d = OPERATORS[op]
    if not operator_supported(op, channels):
        raise ValueError(f"{op} needs groups={d.groups} to divide channels={channels}")
    if d.family == "separable":
        return nn.Sequential(_conv(channels, d.kernel, channels), _conv(channels, 1, 1))
    return _conv(channels, d.kernel, channels if d.groups is None else d.groups)
