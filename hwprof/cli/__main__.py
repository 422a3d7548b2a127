"""`python -m hwprof.cli ...` (same as the `hwprof` console script)."""

import sys

from hwprof.cli import main

sys.exit(main())
