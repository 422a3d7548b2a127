"""What the sub-commands share: --format and --out, model options, the output folder and its
manifest, the terminal (log line format, progress bars, torch's profiler log).

``--out DIR`` is a folder for every command. It receives the command's result in each
structured format it has (``<command>.txt`` = the table view, ``.csv``, ``.json``, ``.md``;
``profile`` and ``study`` write their own set of files) plus ``manifest.json`` (command line,
hwprof/torch/Python versions, device, date, the files). The folder is written complete or not at
all: everything goes into a temporary sibling that is renamed into place at the end
(:func:`hwprof.files.atomic_dir`); an error or Ctrl-C leaves no half-written folder and an
earlier folder of that name as it was. The path is checked before any work
(:func:`check_out_dir`): a path below a file, an existing file, a symbolic link, a name too long
for its temporary sibling, a place where no folder can be created, a folder that is or holds an
input of the command (``compare A B --out A``), or an existing non-empty folder that is not an
earlier hwprof result (no ``manifest.json`` naming an ``hwprof`` command) is a one-line error,
exit code 2. An earlier hwprof result is replaced only when it holds nothing but the files its
manifest lists (hwprof never deletes what it did not write); ``--force`` replaces one that holds
more. A folder that appears at DIR while the command works is never replaced.

This module imports nothing heavy at load time (no torch, no pandas), so that ``main`` can check
``--out`` before the commands are imported.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import datetime as _dt
import json
import logging
import math
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from hwprof.errors import DeviceUnavailableError, OutputPathError
from hwprof.files import TEMP_SUFFIX_CHARS, folder_entries

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

__all__ = ["add_output_options", "add_model_options", "add_input_options", "add_amp_option", "amp_choice", "add_generation_options", "input_spec",
           "MODEL_HELP", "emit", "emit_all", "check_out_dir", "out_folder", "add_force_option", "input_paths",
           "write_outputs", "Invocation", "invocation", "set_invocation", "reset_invocation", "command_line", "configure_logging",
           "LogFormatter", "progress_enabled", "quiet_profiler_log", "build_model", "FORMAT_FILES",
           "strict_int", "whole_number", "positive_seconds", "input_arg", "dtype_arg", "path_arg", "MAX_DIM"]

FORMAT_FILES = {"table": "txt", "csv": "csv", "json": "json", "md": "md"}
"""--format -> extension of its file in the --out folder (``<command>.<ext>``)."""

MANIFEST = "manifest.json"

MODEL_HELP = ("zoo name (see `hwprof count --list`), torchvision:NAME, timm:NAME, hf:MODEL_TYPE (e.g. hf:llama), "
              "hf:path/config.json or package.module:factory")
HF_DEFAULT_SEQ = 128
"""``--seq`` of an hf: model when not given (:data:`hwprof.zoo.HF_DEFAULT_SEQ`, repeated here so that
this module imports no torch; a test keeps them equal)."""


# ----------------------------------------------------------------------------- the invocation
@dataclass(frozen=True)
class Invocation:
    """The command being run: its name (``count``), the arguments after ``hwprof``, the device and
    the ``--format`` asked for, ``--force``, and its input paths as (option, value) pairs (what
    ``--out`` must not replace, :func:`input_paths`)."""

    command: str
    argv: tuple[str, ...] = ()
    device: str | None = None
    format: str | None = None
    force: bool = False
    inputs: tuple[tuple[str, str], ...] = ()


_INVOCATION: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("hwprof_invocation", default=None)


def set_invocation(inv: Invocation) -> contextvars.Token[Invocation | None]:
    """Make ``inv`` the current command (``main`` does this once per call)."""
    return _INVOCATION.set(inv)


def reset_invocation(token: contextvars.Token[Invocation | None]) -> None:
    """Undo :func:`set_invocation` (``main`` on its way out)."""
    _INVOCATION.reset(token)


def invocation() -> Invocation:
    """The current command (a bare ``hwprof`` invocation outside ``main``)."""
    return _INVOCATION.get() or Invocation("hwprof", tuple(sys.argv[1:]))


def command_line() -> str:
    """The command line as typed (shell-quoted): ``hwprof count lenet5 --out d``."""
    return shlex.join(["hwprof", *invocation().argv])


# ----------------------------------------------------------------------------- argument types
# argparse ``type=`` functions: a bad value is an ArgumentTypeError, which the parser reports as one
# line (``hwprof <command>: error: argument --batch: ...``, exit 2) before any work.
def strict_int(text: str) -> int:
    """``text`` as an int when it is ASCII digits with an optional sign, else ValueError: ``int()``
    alone reads ``3_0`` as 30 and full-width digits (``３``) as digits."""
    t = str(text).strip()
    if not re.fullmatch(r"[+-]?[0-9]+", t):
        raise ValueError(f"not a whole number: {text!r}")
    return int(t)


def whole_number(lo: int = 1, hi: int | None = None) -> Callable[[str], int]:
    """A ``type=`` for a whole number in [``lo``, ``hi``]."""
    bounds = f">= {lo}" if hi is None else f"from {lo} to {hi}"

    def parse(text: str) -> int:
        try:
            v = strict_int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number {bounds} (digits 0-9), got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected a whole number {bounds}, got {text!r}")
        return v
    return parse


MAX_SECONDS = 86400.0
"""The longest time budget or timeout the command line takes (a day): more is a typo."""

MAX_DIM = 2**31 - 1
"""The largest batch or dimension the command line takes (torch sizes are 64-bit, but no model
runs a dimension beyond this; larger values overflow in the kernels' int32 indexing or in the
bytes a shape holds)."""


def positive_seconds(text: str) -> float:
    """A ``type=`` for a positive, finite number of seconds up to :data:`MAX_SECONDS` (ASCII:
    ``float()`` takes ``1_0`` too)."""
    t = str(text).strip()
    if not re.fullmatch(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", t):
        raise argparse.ArgumentTypeError(f"expected a number of seconds such as 0.5, got {text!r}")
    v = float(t)
    if not math.isfinite(v) or v <= 0 or v > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds up to {MAX_SECONDS:g}, got {text!r}")
    return v


def input_arg(text: str) -> str:
    """A ``type=`` for ``--input``: the text as given, once every shape in it is ASCII digits
    joined by ``x`` (:func:`hwprof.spec.parse_spec` reads the rest: names, dtypes, positivity)."""
    for part in str(text).split(","):
        shape = part.split("=", 1)[-1].split(":", 1)[-1].strip()
        dims = shape.lower().replace("*", "x").split("x")
        if not all(re.fullmatch(r"[0-9]+", d.strip()) for d in dims):
            raise argparse.ArgumentTypeError(f"bad input spec {text!r}: {shape!r} is not a shape like 3x224x224 "
                                             "(digits 0-9 joined by x)")
        if max(int(d) for d in dims) > MAX_DIM or math.prod(int(d) for d in dims) > 2**48:
            raise argparse.ArgumentTypeError(f"bad input spec {text!r}: {shape!r} is larger than any input hwprof "
                                             f"takes (dimensions up to {MAX_DIM}, 2**48 elements)")
    return str(text)


def path_arg(text: str) -> str:
    """A ``type=`` for a file or folder option: the text as given, once it is a path the system can
    take (not empty, no NUL, every name at most :data:`NAME_MAX` bytes, the whole at most 4096)."""
    t = str(text)
    if not t.strip() or "\0" in t:
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r}")
    names = [len(os.fsencode(part)) for part in Path(t).parts]
    if max(names, default=0) > NAME_MAX or len(os.fsencode(t)) > 4096:
        raise argparse.ArgumentTypeError(f"{t[:40]!r}...: a name longer than {NAME_MAX} bytes is no file or folder's")
    return t


def dtype_arg(text: str) -> str:
    """A ``type=`` for ``--dtype``: the name as given, once :func:`hwprof.spec.parse_dtype` knows it."""
    from hwprof.spec import InputSpecError, parse_dtype

    try:
        parse_dtype(text)
    except InputSpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


# ----------------------------------------------------------------------------- options
def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=tuple(FORMAT_FILES), default="table", help="what to print (default: table)")
    p.add_argument("--out", metavar="DIR", help="also write the result, in every format, with a manifest.json, "
                   "into the folder DIR (complete or not at all; an earlier hwprof result there is replaced when "
                   "it holds only the files it wrote)")
    add_force_option(p)


def add_force_option(p: argparse.ArgumentParser) -> None:
    """``--force``: replace an earlier hwprof result in ``--out`` even when it holds other files."""
    p.add_argument("--force", action="store_true",
                   help="with --out: replace an earlier hwprof result there even when it holds files that result "
                        "did not write (they are deleted with it)")


def add_model_options(p: argparse.ArgumentParser, default_model: str | None = None) -> None:
    p.add_argument("model", nargs="?" if default_model is not None else None, default=default_model, help=MODEL_HELP)
    add_input_options(p)
    p.add_argument("--batch", type=whole_number(1, MAX_DIM), default=1, help="batch size (default 1)")


AMP_CHOICES = ("bf16", "fp16")


def amp_choice(text: str) -> str:
    """``--amp`` value: "bf16" or "fp16" (an ``argparse`` error otherwise)."""
    t = text.strip().lower()
    if t not in AMP_CHOICES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(AMP_CHOICES)}, got {text!r}")
    return t


def add_amp_option(p: argparse.ArgumentParser) -> None:
    """``--amp bf16|fp16``: the forward under ``torch.autocast``, the parameters in their own dtype."""
    p.add_argument("--amp", type=amp_choice, default=None, metavar="bf16|fp16",
                   help="autocast the forward to this dtype (parameters keep theirs; fp16 on CUDA trains with a "
                        "GradScaler); each op is recorded in the dtype it ran in")


def add_input_options(p: argparse.ArgumentParser) -> None:
    """``--input`` (repeatable, ``name=spec`` for a keyword input), and ``--config`` / ``--seq`` for hf: models."""
    p.add_argument("--input", metavar="SPEC", action="append", type=input_arg,
                   help="input shape without batch, e.g. 3x224x224 (default: the model's); repeat it or use "
                        "name=spec for keyword inputs: --input input_ids=long:128 --input decoder_input_ids=long:32")
    p.add_argument("--config", metavar="K=V,...", default=None,
                   help="hf: models: configuration overrides, e.g. num_hidden_layers=2,hidden_size=256")
    p.add_argument("--seq", type=whole_number(1, MAX_DIM), default=None, help="hf: models: sequence length of the default input "
                                                         f"(default {HF_DEFAULT_SEQ})")


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """``--generate``, ``--prompt``, ``--new-tokens`` (hf: causal language models)."""
    p.add_argument("--generate", action="store_true",
                   help="hf: causal LMs: generation phases, prefill of --prompt tokens then decode with a KV cache")
    p.add_argument("--prompt", type=whole_number(1, MAX_DIM), default=128, metavar="P",
                   help="--generate: prompt tokens (default 128)")
    p.add_argument("--new-tokens", type=whole_number(1, MAX_DIM), default=32, metavar="N",
                   help="--generate: generated tokens (default 32)")


def input_spec(given: list[str] | str | None, default: str) -> str:
    """The spec the command runs on: the ``--input`` values joined by commas, else the model's default."""
    if not given:
        return default
    return given if isinstance(given, str) else ",".join(given)


def build_model(args: argparse.Namespace, name: str | None = None, device: str | None = None) -> tuple[nn.Module, str]:
    """:func:`hwprof.zoo.build` of ``name`` (default ``args.model``) with the command's --config, --seq
    and --mode, and the spec to run it on (``--input`` or the model's default). A failing user
    constructor is reported in one line (:class:`~hwprof.errors.ModelBuildError`), not a traceback;
    so is an ``hf:`` model's sequence longer than its configuration's positions
    (:func:`hwprof.zoo.hf_positions_problem`), which would fail inside its embedding."""
    from hwprof import zoo
    from hwprof.errors import HwprofError, ModelBuildError

    name = name or args.model
    try:
        model, default = zoo.build(name, device=device, config=getattr(args, "config", None),
                                   seq=getattr(args, "seq", None), mode=getattr(args, "mode", "inference"))
    except (zoo.UnknownModelError, HwprofError):
        raise
    except Exception as e:
        raise ModelBuildError(name, e) from e
    from hwprof.cli.failures import remember

    remember(name, model)
    spec = input_spec(getattr(args, "input", None), default)
    config = getattr(model, "config", None) if name.startswith("hf:") else None
    problem = zoo.hf_positions_problem(config, spec) if config is not None else None
    if problem:
        raise HwprofError(f"{name}: {problem}")
    return model, spec


# ----------------------------------------------------------------------------- the --out folder
INPUT_OPTIONS: dict[str, str] = {"runs": "DIR", "on": "--on", "calibrate": "--calibrate",
                                 "derate_from": "--derate-from", "collective_ceilings": "--collective-ceilings",
                                 "ceilings_cache": "--ceilings-cache", "cache_dir": "--cache-dir", "model": "MODEL"}
"""argparse destinations that name files or folders a command reads (or caches into): ``--out``
must not be one of them nor hold one (:func:`input_paths`)."""

NAME_MAX = 255
"""Longest file name most file systems take (``os.pathconf(..., "PC_NAME_MAX")`` where it answers)."""


def input_paths(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The (option, path) pairs of ``args`` in :data:`INPUT_OPTIONS`: every value of the cache
    options, the others only when such a path exists (``--on H100`` names a device); of the
    models only ``hf:path/config.json``, as its path."""
    found = []
    for attr, flag in INPUT_OPTIONS.items():
        value = getattr(args, attr, None)
        for v in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
            if not isinstance(v, str) or not v:
                continue
            if attr == "model" and not v.startswith("hf:"):   # a zoo name may also be a folder's name
                continue
            path = v.removeprefix("hf:") if attr == "model" else v
            if attr.endswith("cache") or attr == "cache_dir" or os.path.lexists(os.path.expanduser(path)):
                found.append((flag, path))
    return tuple(found)


def check_out_dir(path: str | os.PathLike[str], force: bool | None = None,
                  inputs: Sequence[tuple[str, str]] | None = None) -> Path:
    """The absolute path of a usable output folder, or :class:`OutputPathError` (one line).

    Usable: the nearest existing ancestor is a folder in which a folder can be created (tried,
    then removed); the path itself is absent, an empty folder, or an earlier hwprof result that
    holds only what its manifest lists (anything with ``force``); it is not a symbolic link, its
    name leaves room for the temporary sibling, and it neither contains the current folder nor is
    or holds one of ``inputs`` ((option, path) pairs). ``force`` and ``inputs`` default to the
    current :class:`Invocation`'s. Takes milliseconds: called before any work."""
    inv = invocation()
    shown = os.fspath(path)
    try:
        target = Path(path).expanduser().absolute()
        _check_name(target, shown)
        if target.is_symlink():
            raise OutputPathError(f"--out {shown}: is a symbolic link; give the folder it points to")
        if target.exists():
            _check_existing(target, shown, inv.force if force is None else force)
        _check_inputs(target, shown, inv.inputs if inputs is None else inputs)
        parent = next((p for p in target.parents if p.exists()), None)
        if parent is None or not parent.is_dir():
            raise OutputPathError(f"--out {shown}: {parent} is a file, not a folder")
        os.rmdir(tempfile.mkdtemp(prefix=".hwprof-check-", dir=parent))
    except OutputPathError:
        raise
    except OSError as e:
        where = e.filename if isinstance(e.filename, str) else shown
        raise OutputPathError(f"--out {shown}: cannot create a folder in {Path(where).parent if where != shown else where}"
                              f" ({e.strerror or e})") from None
    return target


def _check_name(target: Path, shown: str) -> None:
    """Every part of ``target`` fits a file name, and its last part with a temporary sibling's
    suffix twice over (the folder and a result saved inside it while it is being built)."""
    room = NAME_MAX - 2 * (1 + TEMP_SUFFIX_CHARS)
    for part in target.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise OutputPathError(f"--out {shown[:40]}...: a name of {len(os.fsencode(part))} bytes; file names "
                                  f"take at most {NAME_MAX}")
    if len(os.fsencode(target.name)) > room:
        raise OutputPathError(f"--out {shown[:40]}...: the folder name is {len(os.fsencode(target.name))} bytes; "
                              f"at most {room} leave room for the temporary folder hwprof builds beside it")


def _check_existing(target: Path, shown: str, force: bool) -> None:
    if not target.is_dir():
        raise OutputPathError(f"--out {shown}: exists and is not a folder")
    why = replaceable(target, force)
    if isinstance(why, str):
        raise OutputPathError(f"--out {shown}: {why}")
    if Path.cwd().absolute().is_relative_to(target):
        raise OutputPathError(f"--out {shown}: would replace the current folder")


def _check_inputs(target: Path, shown: str, inputs: Sequence[tuple[str, str]]) -> None:
    out = os.path.realpath(target)
    for flag, value in inputs:
        p = os.path.realpath(os.path.expanduser(value))
        if p == out or p.startswith(out.rstrip(os.sep) + os.sep):
            what = "is" if p == out else "holds"
            raise OutputPathError(f"--out {shown}: {what} an input of this command ({flag} {value}); write the "
                                  "result to another folder")


def _manifest_files(folder: Path) -> set[str] | None:
    """The files ``folder/manifest.json`` lists (and itself), when it is the manifest of an
    ``hwprof`` command whose list holds only relative paths inside the folder; else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not str(manifest.get("command", "")).startswith("hwprof"):
        return None
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        return None
    paths = [PurePosixPath(f) for f in files]
    if any(p.is_absolute() or ".." in p.parts for p in paths):
        return None
    return {p.as_posix() for p in paths} | {MANIFEST}


def replaceable(folder: Path, force: bool) -> list[str] | str:
    """What replacing ``folder`` removes (relative paths of its files), or why it must not be
    replaced: it holds files and no manifest of an hwprof command, or (unless ``force``) more than
    the files its manifest lists (a file of the user's, a nested result, a folder in the way)."""
    files, dirs = folder_entries(folder)
    if not files and not dirs:
        return []
    listed = _manifest_files(folder)
    if listed is None:
        return (f"the folder holds files that are not an hwprof result (no {MANIFEST} of an hwprof command); "
                "choose a new folder or empty it")
    if force:
        return sorted(files)
    covered = {str(p) for f in listed & files for p in PurePosixPath(f).parents}
    extra_dirs = dirs - covered
    extras = sorted({_shown_extra(e, extra_dirs, folder) for e in (files - listed) | extra_dirs})
    if not extras:
        return sorted(files & listed)
    more = f" and {len(extras) - 3} more" if len(extras) > 3 else ""
    return (f"holds what the earlier hwprof result there did not write ({', '.join(extras[:3])}{more}); nothing "
            "was touched: choose another folder, move them out, or add --force to replace the folder with them")


def _shown_extra(rel: str, extra_dirs: set[str], folder: Path) -> str:
    """``rel`` as the error shows it: its highest extra ancestor folder (``mine/``, ``sub/ (an
    hwprof result)``), else itself."""
    top = next((str(p) for p in reversed(PurePosixPath(rel).parents) if str(p) in extra_dirs), None)
    if top is None and rel not in extra_dirs:
        return rel
    top = top or rel
    return f"{top}/ (an hwprof result)" if _manifest_files(folder / top) is not None else f"{top}/"


@contextlib.contextmanager
def out_folder(path: str | os.PathLike[str] | None) -> Iterator[Path | None]:
    """Yield a temporary folder to write the result into (None when ``path`` is None); on a clean
    exit add ``manifest.json`` and move it to ``path`` (see the module docstring), replacing only
    what :func:`replaceable` allows when the move happens. An OSError while writing becomes
    :class:`OutputPathError`; any exception (Ctrl-C too) leaves ``path`` as it was."""
    if path is None:
        yield None
        return
    from hwprof.files import atomic_dir

    target = check_out_dir(path)
    force = invocation().force

    def removable(folder: Path) -> list[str] | None:
        listed = replaceable(folder, force)
        return listed if isinstance(listed, list) else None
    try:
        with atomic_dir(target, removable) as tmp:
            yield tmp
            files = _write_manifest(tmp)
    except OutputPathError:
        raise
    except FileExistsError as e:
        raise OutputPathError(f"--out {os.fspath(path)}: {e.strerror}; the result was not saved") from e
    except OSError as e:
        raise OutputPathError(f"--out {os.fspath(path)}: could not write the result ({e})") from e
    print(f"hwprof: wrote {os.fspath(path)}/ ({', '.join(files)})", file=sys.stderr)


def _write_manifest(folder: Path) -> list[str]:
    """Write ``folder/manifest.json``: the command, versions, device, date and the files; keys a
    manifest already there (written by the command itself) has are kept. Returns the files."""
    from hwprof.files import MARKER, write_json_atomic
    from hwprof.report.manifest import versions

    files = sorted(rel for p in folder.rglob("*") if p.is_file() and (rel := p.relative_to(folder).as_posix()) != MARKER)
    inv = invocation()
    v = versions()
    ours: dict[str, Any] = {
        "command": command_line(), "argv": list(inv.argv),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **{k: v.get(k) for k in ("hwprof", "torch", "cuda", "python", "platform")}, "versions": v,
        "device": _device_facts(inv.device)}
    old = folder / MANIFEST
    theirs = json.loads(old.read_text()) if old.exists() else {}
    files = sorted({*files, MANIFEST})
    write_json_atomic(old, {**ours, **theirs, "files": files})
    return files


def _device_facts(device: str | None) -> dict[str, Any]:
    from hwprof.device import describe_device, resolve_device

    try:
        return describe_device(resolve_device(device or "auto"))
    except DeviceUnavailableError as e:   # e.g. `memory --device cuda` predicts for a GPU this machine lacks
        return {"requested": device, "note": str(e)}


def write_outputs(out: str | os.PathLike[str] | None, outputs: Mapping[str, str]) -> None:
    """Write ``outputs`` (format -> text) to the ``--out`` folder as ``<command>.<ext>`` (see
    :data:`FORMAT_FILES`) plus the manifest; nothing without ``out``."""
    if out is None:
        return
    from hwprof.files import write_atomic

    stem = invocation().command
    with out_folder(out) as d:
        assert d is not None
        for fmt, text in outputs.items():
            write_atomic(d / f"{stem}.{FORMAT_FILES[fmt]}", text if text.endswith("\n") else text + "\n")


def emit_all(args: argparse.Namespace, outputs: Mapping[str, str]) -> None:
    """Print the ``--format`` output of ``outputs`` (format -> text) and write all of them to ``--out``."""
    print(outputs[args.format])
    write_outputs(args.out, outputs)


def emit(text: str, out: str | None, df: pd.DataFrame | None = None, fmt: str | None = None) -> None:
    """Print ``text`` (the ``fmt`` output; default: the command's ``--format``); with ``out``, write
    it and, when ``df`` is given, ``df`` in the other structured formats to the ``--out`` folder
    (:func:`write_outputs`)."""
    print(text)
    if out:
        fmt = fmt or invocation().format or "table"
        outputs = {fmt: text}
        if df is not None:
            from hwprof.report.tables import render

            outputs.update({f: render(df, f) for f in ("csv", "json", "md") if f != fmt})
        write_outputs(out, outputs)


# ----------------------------------------------------------------------------- the terminal
class LogFormatter(logging.Formatter):
    """``hwprof: warning: message`` for hwprof's loggers, ``<logger>: warning: message`` for others."""

    def format(self, record: logging.LogRecord) -> str:
        who = "hwprof" if record.name == "hwprof" or record.name.startswith("hwprof.") else record.name
        text = f"{who}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(verbose: bool = False) -> None:
    """Log WARNING and above (INFO with ``verbose``) to stderr as ``hwprof: warning: ...``.
    Leaves logging alone when the root logger already has handlers (an application, pytest)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


def progress_enabled() -> bool:
    """Progress bars only when stderr is a terminal (not in a pipe, a log file or a CI job)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


KINETO_QUIET = "6"
"""torch.profiler's Kineto library (libkineto, linked into libtorch_cpu; its
``SyncActivityProfilerHandler``) prints ``USDT:... profiler_start`` / ``profiler_stop`` (and
``STAGE:...``) lines straight to the stderr file descriptor whenever a profiler session starts or
stops (hwprof's per-op and allocator-trace passes); its only switch is the ``KINETO_LOG_LEVEL``
environment variable, read when a session starts. Kineto's levels (torch 2.13): 0 verbose ... 5 USDT, the
highest; 6 silences all of them, Kineto's own errors included (a failed profiler session still
shows in hwprof's results: no per-op times, with a note)."""


def quiet_profiler_log() -> None:
    """Keep Kineto's lines out of the terminal (``KINETO_LOG_LEVEL=6``, see :data:`KINETO_QUIET`),
    unless the user set ``KINETO_LOG_LEVEL``."""
    os.environ.setdefault("KINETO_LOG_LEVEL", KINETO_QUIET)
