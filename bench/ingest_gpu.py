"""Ingest the results of ``bench/gpu_session.sh``: unpack, record, print the README's GPU tables.

    python bench/ingest_gpu.py gpu-results.tar.gz                  # -> results/<device>-<date>/
    python bench/ingest_gpu.py gpu-results.tar.gz --results DIR    # another results folder
    python bench/ingest_gpu.py --env env.json --device cuda        # (the GPU run's env stage)

The archive's ``gpu-results/`` folder is unpacked into ``results/<device>-<date>/`` (the device
tag from the device's name: "NVIDIA H200" -> ``h200``; a CPU run -> ``cpu-<family>``; a dry run
adds ``-dry-run``; the date is the run's start, UTC), complete or not at all, and a
``manifest.json`` is written beside it (device, driver, torch, CUDA, Python, the run's
command, date, commit, each stage's exit code and seconds, the archive's SHA-256). Then the
Markdown tables the README shows are printed, and kept as ``tables.md`` in that folder, every
number read from the unpacked files:

* the run: each stage's exit code and seconds (``gpu-log.txt``);
* ceilings against the datasheet and against the hand-written probes (``ceilings/``);
* an excerpt of the default profile (``profile/default``, rebuilt with ``hwprof.load_profile``);
* memory validation: every predictor against ``max_memory_allocated`` (``memory/``);
* the depthwise study at the reference shape, fp32 and bf16 (``depthwise/``);
* Nsight Compute's DRAM bytes beside hwprof's analytic bytes (``counters/``);
* the resnet50 training profile's summary (``resnet50/``).

A stage that did not run, or was killed, leaves its table out with a line saying so.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import platform
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from hwprof.files import atomic_dir, write_atomic, write_json_atomic  # noqa: E402
from hwprof.report.tables import human, mib, render  # noqa: E402

ROOT = "gpu-results"
"""The folder ``gpu_session.sh`` packs (the archive's only top-level entry)."""

SIMULATED_BOUND_PCT = 3.0
"""The simulated predictor should be within this many percent of ``max_memory_allocated``."""

# ----------------------------------------------------------------------------- the environment record
REQUIRED = ("torch", "numpy", "pandas", "tqdm")
"""hwprof imports these at load time; platformdirs, psutil and pynvml only when needed."""
MODULE_OF = {"nvidia-ml-py": "pynvml"}
"""Distribution -> module name, where they differ."""
PACKAGES = ("torchvision", "timm", "tqdm", "pandas", "numpy", "matplotlib", "pynvml", "pytest", "triton",
            "platformdirs", "psutil")


def _version(module: str) -> str | None:
    """The module's ``__version__`` ("?" when it has none), or None when it is not importable."""
    try:
        m = importlib.import_module(module)
    except ImportError:
        return None
    return str(getattr(m, "__version__", "?"))


def dependencies() -> dict[str, str | None]:
    """hwprof's dependencies (``pyproject.toml``) -> the version importable here, or None."""
    try:
        import tomllib
    except ImportError:   # Python 3.10
        return {}
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0] for d in deps]
    return {n: _version(MODULE_OF.get(n, n).replace("-", "_")) for n in names}


def environment(device: str) -> dict[str, Any]:
    """Versions, the device as hwprof describes it (NVML's facts on CUDA) and what is importable."""
    import torch

    from hwprof.device import describe_device, resolve_device

    env: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                           "platform": platform.platform(), "torch": torch.__version__, "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available()}
    dev = resolve_device(device)
    env["device"] = describe_device(dev)
    if dev.type == "cuda":
        from hwprof.measuring.probes import Nvml

        nv = Nvml(dev)
        env["nvml"] = nv.info() if nv.ok else {"unavailable": nv.reason}
        nv.close()
    env["packages"] = {m: _version(m) for m in PACKAGES}
    env["hwprof_dependencies"] = dependencies()
    env["missing_required"] = [n for n in REQUIRED if env["hwprof_dependencies"].get(n, "?") is None]
    return env


# ----------------------------------------------------------------------------- unpacking
def device_tag(name: str, device_type: str = "cuda") -> str:
    """A short folder tag for a device name: the GPU model ("NVIDIA H200" -> "h200", "NVIDIA
    GeForce RTX 4090" -> "rtx4090"), or for a CPU "cpu-" and its family ("cpu-xeon")."""
    upper = name.upper()
    if device_type == "cuda":
        m = re.search(r"\b(GH200|[HBA]\d{2,3}|L40S?|L4|A10G?|V100|T4|RTX\s*\d{4}(?:\s*TI)?)\b", upper)
        if m:
            return re.sub(r"\s+", "", m.group(1)).lower()
        return _slug(re.sub(r"NVIDIA|GEFORCE|TESLA", "", upper)) or "gpu"
    m = re.search(r"\b(XEON|EPYC|RYZEN|CORE|NEOVERSE|GRAVITON|APPLE\s*M\d)\b", upper)
    return "cpu-" + (_slug(m.group(1)) if m else (_slug(upper)[:24] or "unknown"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def read_session(folder: Path) -> dict[str, str]:
    """``session.txt`` (key=value lines) of an unpacked run."""
    out: dict[str, str] = {}
    path = folder / "session.txt"
    for line in path.read_text().splitlines() if path.exists() else []:
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def read_log(folder: Path) -> pd.DataFrame:
    """``gpu-log.txt``: one row per command and per stage (stage, command, exit_code, seconds)."""
    path = folder / "gpu-log.txt"
    if not path.exists():
        return pd.DataFrame(columns=["stage", "command", "exit_code", "seconds"])
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def folder_name(folder: Path) -> str:
    """``<device tag>-<date>`` (``-dry-run`` appended for a dry run) of an unpacked run."""
    session = read_session(folder)
    env = _read_json(folder / "env" / "env.json") or {}
    dev = env.get("device") or {}
    tag = device_tag(str(dev.get("name") or "unknown"), str(dev.get("type") or "cuda"))
    date = session.get("started_utc", "")[:10] or "undated"
    return f"{tag}-{date}" + ("-dry-run" if session.get("dry_run") == "1" else "")


def manifest(folder: Path, archive: Path) -> dict[str, Any]:
    """What was run where: device, driver, torch, CUDA, Python, command, date, commit, the stages."""
    session = read_session(folder)
    env = _read_json(folder / "env" / "env.json") or {}
    dev = env.get("device") or {}
    log = read_log(folder)
    stages = log[log["command"].str.startswith("stage ")]
    return {
        "device": dev.get("name"), "device_type": dev.get("type"), "capability": dev.get("capability"),
        "total_memory_bytes": dev.get("total_memory_bytes"),
        "driver": (env.get("nvml") or {}).get("driver"), "torch": env.get("torch"), "cuda": env.get("cuda"),
        "cudnn": env.get("cudnn"), "python": env.get("python"), "command": session.get("command"),
        "date_utc": session.get("started_utc"), "finished_utc": session.get("finished_utc"),
        "git_commit": session.get("git_commit"), "dry_run": session.get("dry_run") == "1",
        "budget_s": session.get("budget_s"),
        "stages": [{"stage": r.stage, "exit_code": r.exit_code, "seconds": r.seconds} for r in stages.itertuples()],
        "archive": archive.name, "archive_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "ingested_with": "python bench/ingest_gpu.py " + archive.name,
    }


def unpack(archive: Path, results: Path, force: bool = False) -> Path:
    """Unpack ``archive`` into ``results/<device>-<date>/`` (complete or absent) with its manifest."""
    with tempfile.TemporaryDirectory(prefix="ingest-gpu-") as tmp:
        with tarfile.open(archive) as tar:
            names = tar.getnames()
            if not names or any(n != ROOT and not n.startswith(ROOT + "/") for n in names):
                raise SystemExit(f"{archive}: not a gpu_session.sh archive (expected one folder {ROOT}/)")
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / ROOT
        target = results / folder_name(src)
        if target.exists() and not force:
            raise SystemExit(f"{target} exists; --force replaces it")
        with atomic_dir(target) as d:
            for item in src.iterdir():
                shutil.move(str(item), str(d / item.name))
            write_json_atomic(d / "manifest.json", manifest(d, archive))
    return target


# ----------------------------------------------------------------------------- tables
def _md(df: pd.DataFrame) -> str:
    return render(df, "md", index=False).rstrip("\n")


def _pct(v: Any, digits: int = 1, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{float(v):+.{digits}f}%" if signed else f"{float(v):.{digits}f}%"


def session_table(folder: Path) -> str:
    log = read_log(folder)
    if log.empty:
        return "No gpu-log.txt in this archive."
    return _md(log.rename(columns={"exit_code": "exit code", "seconds": "s"}))


def environment_line(folder: Path) -> str:
    env = _read_json(folder / "env" / "env.json") or {}
    dev, nvml = env.get("device") or {}, env.get("nvml") or {}
    parts = [f"device {dev.get('name', '?')}", f"driver {nvml.get('driver', '-')}", f"torch {env.get('torch', '?')}",
             f"CUDA {env.get('cuda') or '-'}", f"cuDNN {env.get('cudnn') or '-'}", f"Python {env.get('python', '?')}"]
    missing = [n for n, v in (env.get("hwprof_dependencies") or {}).items() if v is None]
    return ", ".join(parts) + (f"; not installed: {', '.join(missing)}" if missing else "")


def ceilings_table(folder: Path) -> str:
    """Every roof: measured, datasheet, measured/datasheet, spread of its rounds; and the probes."""
    k = _read_json(folder / "ceilings" / "hwprof" / "ceilings.json")
    if k is None:
        return "No ceilings in this run."
    sheet = k.get("datasheet") or {}
    rows = [(f"{m} matmul", v, sheet.get(m), k["ratio_to_datasheet"].get(m), k["spread"].get(m), "FLOP/s")
            for m, v in k["flop_per_s"].items()]
    rows.append(("copy (read + write)", k.get("bytes_per_s"), sheet.get("bytes_per_s"),
                 k["ratio_to_datasheet"].get("bytes_per_s"), k["spread"].get("bytes_per_s"), "B/s"))
    df = pd.DataFrame([{"ceiling": name, "measured": human(v, u), "datasheet": human(s, u),
                        "measured / datasheet": _pct(100 * r if r else None, 0),
                        "spread of rounds": _pct(100 * sp if sp is not None else None) + (
                            " flagged" if name.split(" ")[0] in k.get("flagged", ()) else "")}
                       for name, v, s, r, sp, u in rows])
    text = f"{k['device_name']} ({k['source']}, {k['date']}, best of {len({t['round'] for t in k['trials']})} rounds)\n\n"
    return text + _md(df) + "\n\n" + probe_table(folder)


def probe_table(folder: Path) -> str:
    probe = _read_json(folder / "ceilings" / "probe.json")
    if probe is None:
        return "No hand-written probe in this run."
    df = pd.DataFrame([{"roof": r["roof"], "probe size": r["size"], "hand-written probe": human(r["hand_rate_per_s"]),
                        "hwprof": human(r["hwprof_rate_per_s"]),
                        "hwprof / probe": _pct(100 * r["ratio"] if r["ratio"] else None),
                        f">= {100 * probe['threshold']:.0f}%": "yes" if r["reaches"] else "NO"}
                       for r in probe["probes"]])
    return _md(df)


def _profile_excerpt(folder: Path, top: int) -> str:
    from hwprof.profile_folder import load_profile
    from hwprof.report.profile_report import summary_lines, terminal_table

    p = load_profile(folder)
    head = f"{p.config['model']}: {p.config['mode']}, {p.config['dtype']}, batch {p.config['batch']}"
    return "\n".join([head, "", render(terminal_table(p, top=top), "md").rstrip("\n"), "",
                      *(f"- {ln}" for ln in summary_lines(p) if not ln.startswith("note:"))])


def profile_section(folder: Path, top: int = 8) -> str:
    """The default profile: both models' top layers and summaries, and the twin comparison."""
    d = folder / "profile" / "default"
    if not (d / "mobilenet_v1" / "profile.json").exists():
        return "No default profile in this run."
    parts = [_profile_excerpt(d / name, top) for name in ("mobilenet_v1", "mobilenet_v1_dense")
             if (d / name / "profile.json").exists()]
    comparison = d / "comparison.md"
    if comparison.exists():
        parts.append("\n".join(ln for ln in comparison.read_text().splitlines() if ln.startswith("- ")))
    return "\n\n".join(parts)


def memory_table(folder: Path) -> str:
    """One row per (model, mode, batch): measured peaks, each predictor's error; the 3% check."""
    files = sorted((folder / "memory").glob("memory-validation-*.csv"))
    if not files:
        return "No memory validation in this run."
    df = pd.read_csv(files[0])
    ok = df[df["predictor"].notna() & (df["predictor"] != "")]
    wide = ok.pivot_table(index=["model", "mode", "batch"], columns="predictor", values="error_pct", aggfunc="first",
                          sort=False)
    first = ok.drop_duplicates(["model", "mode", "batch"]).set_index(["model", "mode", "batch"])
    sim = first.index.map(lambda k: wide.loc[k].get("simulated", math.nan) if k in wide.index else math.nan)
    rows = pd.DataFrame({
        "model": [k[0] for k in first.index], "mode": [k[1] for k in first.index], "batch": [k[2] for k in first.index],
        "measured MiB": first["compared_bytes"].map(mib).to_list(),
        "reserved MiB": first["measured_reserved_bytes"].map(mib).to_list(),
        "simulated": [_pct(v, signed=True) for v in sim],
        "simulated reserved": [_pct(v, signed=True) for v in _per_predictor(ok, "simulated", "reserved_error_pct", first)],
        "formula": [_pct(wide.loc[k].get("formula"), signed=True) if k in wide.index else "-" for k in first.index],
        "seed": [_pct(wide.loc[k].get("seed"), signed=True) if k in wide.index else "-" for k in first.index],
        "peak in": first["peak_op"].fillna("").to_list(),
    })
    within = [abs(v) <= SIMULATED_BOUND_PCT for v in sim if v == v]
    failed = df[df["predictor"].isna() | (df["predictor"] == "")]
    lines = [f"{files[0].name}: {first.index.get_level_values(0).nunique()} models, {len(first)} points; simulated "
             f"within {SIMULATED_BOUND_PCT:g}% of the measured peak on {sum(within)} of {len(within)}"]
    lines += [f"- {r.model} batch {r.batch} {r.mode}: {r.notes}" for r in failed.itertuples()]
    return "\n".join(lines) + "\n\n" + _md(rows)


def _per_predictor(ok: pd.DataFrame, predictor: str, column: str, first: pd.DataFrame) -> list[float]:
    sel = ok[ok["predictor"] == predictor].set_index(["model", "mode", "batch"])[column]
    return [float(sel.get(k, math.nan)) if k in sel.index else math.nan for k in first.index]


def depthwise_table(folder: Path) -> str:
    """Per dtype: each operator at the headline shape, forward, NCHW and channels_last side by side."""
    from hwprof.studies.depthwise import fmt_pct, fmt_rate, fmt_time, headline_shape

    parts = []
    for d in sorted((folder / "depthwise").glob("*/depthwise.csv"), key=lambda p: (p.parent.name != "fp32", p)):
        df = pd.read_csv(d)
        shape = headline_shape(df)
        if shape is None:
            parts.append(f"{d.parent.name}: no dense/depthwise pair ran")
            continue
        c, s, n = shape
        at = df[(df["status"] == "ok") & (df["channels"] == c) & (df["spatial"] == s) & (df["batch"] == n)
                & (df["pass"] == "fwd")]
        cl = at[at["format"] == "channels_last"].set_index("op")
        nchw = at[at["format"] == "NCHW"].set_index("op")
        ops = list(dict.fromkeys([*nchw.index, *cl.index]))
        base = nchw if len(nchw) else cl
        t = pd.DataFrame([{
            "operator": base.loc[o, "op_label"] if o in base.index else o,
            "FLOPs": human(base.loc[o, "flops"]) if o in base.index else "-",
            "bytes": human(base.loc[o, "bytes"], "B") if o in base.index else "-",
            "FLOP/byte": f"{base.loc[o, 'intensity']:.3g}" if o in base.index else "-",
            "time NCHW": fmt_time(nchw.loc[o, "time_s"]) if o in nchw.index else "-",
            "time channels_last": fmt_time(cl.loc[o, "time_s"]) if o in cl.index else "-",
            "achieved (channels_last)": (f"{fmt_rate(cl.loc[o, 'achieved_flop_per_s'])} "
                                         f"({fmt_pct(cl.loc[o, 'pct_of_compute_roof'])} of {cl.loc[o, 'roof_key']})"
                                         if o in cl.index else "-")} for o in ops])
        parts.append(f"{d.parent.name}: C={c}, {s}x{s}, batch {n}, forward\n\n{_md(t)}{_models_line(d.parent)}")
    return "\n\n".join(parts) or "No depthwise study in this run."


def _models_line(d: Path) -> str:
    path = d / "models.csv"
    if not path.exists():
        return ""
    m = pd.read_csv(path).set_index("model")
    if "mobilenet_v1" not in m.index:
        return ""
    r = m.loc["mobilenet_v1"]
    line = (f"\n\nMobileNetV1 (batch {r['batch']}, {r['input']}): depthwise layers hold "
            f"{_pct(100 * r['depthwise_flop_share'])} of the FLOPs and take {_pct(100 * r['depthwise_time_share'])} "
            "of the layer time")
    if "mobilenet_v1_dense" in m.index:
        dense = m.loc["mobilenet_v1_dense"]
        line += (f"; the dense twin has {dense['flops'] / r['flops']:.1f}x the FLOPs for "
                 f"{dense['time_s'] / r['time_s']:.1f}x the time")
    return line + "."


def counters_table(folder: Path) -> str:
    """ncu's DRAM bytes (read + written) per point beside hwprof's analytic bytes."""
    parts = []
    for path in sorted((folder / "counters").glob("*/counters.csv")):
        df = pd.read_csv(path)
        ok = df["status"] == "ok"
        t = pd.DataFrame({
            "point": df["name"], "analytic bytes": df["bytes"].map(lambda v: human(v, "B")),
            "ncu DRAM bytes": df.get("dram_bytes", pd.Series(math.nan, index=df.index)).map(lambda v: human(v, "B")),
            "DRAM / analytic": [_ratio(r.get("dram_bytes"), r.get("bytes")) for _, r in df.iterrows()],
            "L2 bytes": df.get("l2_bytes", pd.Series(math.nan, index=df.index)).map(lambda v: human(v, "B")),
            "kernel time": df.get("kernel_time_s", pd.Series(math.nan, index=df.index)).map(
                lambda v: "-" if v != v else f"{v * 1e6:.1f} us"),
            "DRAM % of peak": df.get("dram_pct_of_peak", pd.Series(math.nan, index=df.index)).map(_pct),
            "status": [s if s == "ok" else f"{s}: {e}" for s, e in zip(df["status"], df.get("error", ""), strict=False)],
        })
        parts.append(f"{path.parent.name} ({int(ok.sum())} of {len(df)} points measured)\n\n{_md(t)}")
    return "\n\n".join(parts) or _counters_note(folder)


def _counters_note(folder: Path) -> str:
    notes = []
    for m in sorted((folder / "counters").glob("*/manifest.json")):
        notes += [n for n in (_read_json(m) or {}).get("notes", []) if "counters" in n]
    return "No Nsight Compute counters in this run" + (f" ({'; '.join(dict.fromkeys(notes))})." if notes else ".")


def _ratio(a: Any, b: Any) -> str:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return "-"
    return "-" if not (b > 0 and a == a) else f"{a / b:.2f}"


def resnet_section(folder: Path) -> str:
    d = folder / "resnet50"
    if not (d / "profile.json").exists():
        return "No resnet50 profile in this run."
    return _profile_excerpt(d, top=5)


def llm_table(folder: Path) -> str:
    """Generation phases of the llama-style model (llm/generate/phases.csv) and its KV-cache memory check."""
    phases = folder / "llm" / "generate" / "phases.csv"
    if not phases.exists():
        return "No LLM generation in this GPU run."
    df = pd.read_csv(phases)
    shown = pd.DataFrame({
        "phase": df["phase"], "batch": df["batch"], "tokens/s": df["tokens_per_s"].map(lambda v: f"{v:,.1f}"),
        "FLOP/byte": df["intensity"].map(lambda v: f"{v:.3g}"), "MFU": (100 * df["mfu"]).map(_pct),
        "MBU": (100 * df["mbu"]).map(_pct), "bound": df["bound"]})
    out = [_md(shown)]
    mem = _read_json(folder / "llm" / "memory" / "memory.json") if (folder / "llm" / "memory").exists() else None
    if isinstance(mem, dict):          # memory --generate --format json: predictors beside the components
        mem = mem.get("predictors")
    rows = [r for r in mem if isinstance(r, dict)] if isinstance(mem, list) else []
    measured = next((r for r in rows if r.get("predictor") == "measured"), None)
    if measured is not None:
        out += ["", f"Generation memory, measured peak {measured['peak_bytes'] / 2**20:,.1f} MiB; predicted: " + "; ".join(
            f"{r['predictor']} {_pct(r.get('error_pct'), 2, signed=True)}" for r in rows if r is not measured)]
    return "\n".join(out)


def steps_table(folder: Path) -> str:
    """The step path's checks (steps/steps.json of bench/gpu_steps.py): one row per check."""
    data = _read_json(folder / "steps" / "steps.json") if (folder / "steps" / "steps.json").exists() else None
    if not isinstance(data, dict) or not data.get("checks"):
        return "No step checks in this GPU run."
    rows = []
    for c in data["checks"]:
        ratio = c.get("step_time_over_plain")
        rows.append({"check": c.get("check"), "pass": "pass" if c.get("pass") else "FAIL",
                     "dtypes": ", ".join(c.get("conv_dtypes") or []) or "-",
                     "restored": {True: "yes", False: "NO"}.get(c.get("restored", c.get("identical_losses")), "-"),
                     "step_time / plain loop": "-" if ratio is None else f"{ratio:.2f}",
                     "FlopCounterMode mismatches": len(c.get("flop_mismatches") or [])})
    return _md(pd.DataFrame(rows))


SECTIONS: tuple[tuple[str, Callable[[Path], str]], ...] = (
    ("Session", session_table),
    ("Ceilings vs datasheet and hand-written probes", ceilings_table),
    ("Default profile (MobileNetV1 vs its dense twin)", profile_section),
    ("Memory validation against max_memory_allocated", memory_table),
    ("Depthwise study at the reference shape", depthwise_table),
    ("Nsight Compute DRAM bytes vs analytic bytes", counters_table),
    ("ResNet-50 training profile (bf16, channels_last)", resnet_section),
    ("LLM generation: prefill and decode on the roofline (llama-style, ~100M parameters, bf16)", llm_table),
    ("The user's step: profile_step under fp16 (GradScaler) and bf16 autocast, capture", steps_table),
)


def tables(folder: Path) -> str:
    """The Markdown of every section, read from an unpacked run folder."""
    out = [f"# GPU results: {folder.name}", "", environment_line(folder)]
    for title, fn in SECTIONS:
        out += ["", f"## {title}", "", fn(folder)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("archive", nargs="?", help="gpu-results.tar.gz of bench/gpu_session.sh")
    p.add_argument("--results", default=str(REPO / "results"), help="where to unpack (default results/)")
    p.add_argument("--force", action="store_true", help="replace an earlier folder of the same name")
    p.add_argument("--env", metavar="JSON", help="write this machine's environment record instead")
    p.add_argument("--device", default="auto", help="with --env: the device to describe")
    args = p.parse_args(argv)
    if args.env:
        env = environment(args.device)
        write_json_atomic(Path(args.env), env)
        return 1 if env["missing_required"] else 0
    if not args.archive:
        p.error("an archive (or --env) is required")
    target = unpack(Path(args.archive), Path(args.results), args.force)
    text = tables(target)
    write_atomic(target / "tables.md", text)
    sys.stdout.write(text)
    sys.stderr.write(f"unpacked into {target}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
