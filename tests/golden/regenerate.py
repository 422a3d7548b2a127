"""Rewrite every golden file from the current code (see cases.py); prints what changed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cases import CASES, FILES, run_cli  # noqa: E402


def main() -> int:
    FILES.mkdir(exist_ok=True)
    for name, argv in CASES.items():
        path = FILES / name
        new = run_cli(argv)
        old = path.read_text() if path.exists() else None
        if old != new:
            path.write_text(new)
            print(f"{'updated' if old is not None else 'created'} {path}")
    stale = sorted(p.name for p in FILES.iterdir() if p.name not in CASES)
    for name in stale:
        (FILES / name).unlink()
        print(f"removed {FILES / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
