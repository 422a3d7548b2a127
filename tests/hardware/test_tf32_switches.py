"""TF32 switches read through the legacy flags and through torch >= 2.9's fp32_precision settings.

Setting the new API marks the process: reading a legacy flag afterwards raises ("mix of the
legacy and new APIs"), so that case runs in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch


def test_legacy_defaults_and_flags() -> None:
    """In a fresh process: torch's defaults (cuDNN convolutions may use TF32, cuBLAS fp32 matmuls
    may not), then every combination of the two legacy flags read back as set, in MathModes too."""
    code = textwrap.dedent("""
        import itertools, torch
        from hwprof.device import MathModes, tf32_switches
        assert tf32_switches() == {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": True}, tf32_switches()
        for matmul, conv in itertools.product((False, True), repeat=2):
            torch.backends.cuda.matmul.allow_tf32 = matmul
            torch.backends.cudnn.allow_tf32 = conv
            assert tf32_switches() == {"cuda_matmul_allow_tf32": matmul, "cudnn_allow_tf32": conv}, tf32_switches()
            assert MathModes.current("cuda") == MathModes("cuda", cudnn_tf32=conv, matmul_tf32=matmul)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch < 2.9")
def test_new_api_in_use() -> None:
    code = textwrap.dedent("""
        import torch
        from hwprof.hardware.ceilings import _tf32
        from hwprof.device import describe_device, tf32_switches
        from hwprof.roofline import MathModes
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        try:
            torch.backends.cuda.matmul.allow_tf32
            raise SystemExit("expected the legacy read to raise once the new API is set")
        except RuntimeError:
            pass
        assert tf32_switches() == {"cuda_matmul_allow_tf32": True, "cudnn_allow_tf32": True}, tf32_switches()
        info = describe_device(torch.device("cpu"))
        assert info["float32_matmul_precision"] == "tf32" and info["cuda_matmul_allow_tf32"], info
        m = MathModes.current("cuda")
        assert m.matmul_tf32 and m.cudnn_tf32, m
        with _tf32(False):
            assert not tf32_switches()["cuda_matmul_allow_tf32"]
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        torch.backends.cudnn.conv.fp32_precision = "ieee"   # conv and RNN now differ: the legacy read raises
        assert tf32_switches()["cudnn_allow_tf32"] is False
        assert not MathModes.current("cuda").cudnn_tf32
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
