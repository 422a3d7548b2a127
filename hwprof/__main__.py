"""`python -m hwprof ...` (same as the `hwprof` console script)."""

import sys

from hwprof.cli import main

sys.exit(main())
