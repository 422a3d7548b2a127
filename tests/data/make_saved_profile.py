"""Make the saved-profile fixture of ``tests/test_profile.py`` (run once, then commit the output):

    .venv/bin/python tests/data/make_saved_profile.py              # profile, save, golden CSV
    .venv/bin/python tests/data/make_saved_profile.py --golden-only  # golden CSV from the committed fixture

Profiles a tiny conv net (seed 0; conv, batch norm, ReLU, depthwise, pointwise, linear) on the CPU,
in train mode with SGD, batch 2, against fixed ceilings (no roof measured), saves it with
``Profile.save`` and keeps the four files ``hwprof.load_profile`` reads (``count.json``,
``measurement.json``, ``ceilings.json``, ``profile.json``) in ``tests/data/saved_profile/``. Then writes
``tests/data/saved_profile.layers.csv``: the layers CSV of ``load_profile`` of that folder, the
golden file the test compares against. Re-run with ``--golden-only`` after an intended change of
the join, and read the diff.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import hwprof
from hwprof.hardware.ceilings import Ceilings

HERE = Path(__file__).parent
FIXTURE = HERE / "saved_profile"
GOLDEN = HERE / "saved_profile.layers.csv"
KEPT = ("count.json", "measurement.json", "ceilings.json", "profile.json")
CEILINGS = Ceilings("cpu", "fixture cpu", "2.13.0+cpu", "2026-11-30", "measured", {"fp32": 2.0e11, "bf16": 8.0e11},
                    2.5e10, threads=2, host="fixture")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 1), nn.Flatten(),
                         nn.Linear(16 * 16 * 16, 10))


def make_fixture() -> None:
    p = hwprof.profile(tiny_model(), "3x16x16", device="cpu", batch=2, mode="train", optimizer="sgd", budget_s=0.05,
                       ceilings=CEILINGS, name="tiny")
    with tempfile.TemporaryDirectory() as tmp:
        p.save(Path(tmp) / "saved")
        if FIXTURE.exists():
            shutil.rmtree(FIXTURE)
        FIXTURE.mkdir(parents=True)
        for name in KEPT:
            shutil.copy(Path(tmp) / "saved" / name, FIXTURE / name)


def write_golden() -> None:
    GOLDEN.write_text(hwprof.load_profile(FIXTURE).layers.to_csv())


if __name__ == "__main__":
    if "--golden-only" not in sys.argv[1:]:
        make_fixture()
    write_golden()
    print(f"wrote {GOLDEN}")
