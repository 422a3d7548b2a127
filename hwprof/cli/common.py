"""Options and output shared by the sub-commands (--format, --out, model/input resolution)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from hwprof import zoo
from hwprof.files import write_atomic
from hwprof.report.tables import FORMATS, render

__all__ = ["add_output_options", "add_model_options", "add_input_options", "add_generation_options", "input_spec",
           "build_model", "emit", "MODEL_HELP"]

MODEL_HELP = ("zoo name (see `hwprof count --list`), torchvision:NAME, timm:NAME, hf:MODEL_TYPE (e.g. hf:llama), "
              "hf:path/config.json or package.module:factory")


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--out", metavar="PATH", help="also write the output to PATH (atomically)")


def add_model_options(p: argparse.ArgumentParser, default_model: str | None = None) -> None:
    p.add_argument("model", nargs="?" if default_model is not None else None, default=default_model, help=MODEL_HELP)
    add_input_options(p)
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")


def add_input_options(p: argparse.ArgumentParser) -> None:
    """``--input`` (repeatable, ``name=spec`` for a keyword input), and ``--config`` / ``--seq`` for hf: models."""
    p.add_argument("--input", metavar="SPEC", action="append",
                   help="input shape without batch, e.g. 3x224x224 (default: the model's); repeat it or use "
                        "name=spec for keyword inputs: --input input_ids=long:128 --input decoder_input_ids=long:32")
    p.add_argument("--config", metavar="K=V,...", default=None,
                   help="hf: models: configuration overrides, e.g. num_hidden_layers=2,hidden_size=256")
    p.add_argument("--seq", type=int, default=None, help="hf: models: sequence length of the default input "
                                                         f"(default {zoo.HF_DEFAULT_SEQ})")


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """``--generate``, ``--prompt``, ``--new-tokens`` (hf: causal language models)."""
    p.add_argument("--generate", action="store_true",
                   help="hf: causal LMs: generation phases, prefill of --prompt tokens then decode with a KV cache")
    p.add_argument("--prompt", type=int, default=128, metavar="P", help="--generate: prompt tokens (default 128)")
    p.add_argument("--new-tokens", type=int, default=32, metavar="N",
                   help="--generate: generated tokens (default 32)")


def input_spec(given: list[str] | str | None, default: str) -> str:
    """The spec the command runs on: the ``--input`` values joined by commas, else the model's default."""
    if not given:
        return default
    return given if isinstance(given, str) else ",".join(given)


def build_model(args: argparse.Namespace, name: str | None = None, device: str | None = None) -> tuple[Any, str]:
    """``zoo.build`` of ``name`` (default ``args.model``) with the command's --config, --seq and --mode,
    and the spec to run it on (``--input`` or the model's default)."""
    model, default = zoo.build(name or args.model, device=device, config=getattr(args, "config", None),
                               seq=getattr(args, "seq", None), mode=getattr(args, "mode", "inference"))
    return model, input_spec(getattr(args, "input", None), default)


def emit(text: str, out: str | None, df: pd.DataFrame | None = None, fmt: str = "table") -> None:
    """Print ``text``; with ``out``, write the chosen format of ``df`` (or ``text``) to that path."""
    print(text)
    if out:
        body = render(df, fmt) if df is not None and fmt != "table" else text
        write_atomic(Path(out), body if body.endswith("\n") else body + "\n")
        print(f"wrote {out}", file=sys.stderr)
