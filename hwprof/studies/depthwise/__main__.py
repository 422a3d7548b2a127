"""``python -m hwprof.studies.depthwise --point JSON --device cuda``: the single-point runner
that Nsight Compute profiles (:func:`hwprof.studies.depthwise.counters.ncu_command`)."""

import sys

from hwprof.studies.depthwise.counters import _main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
