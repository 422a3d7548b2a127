"""tests/distributed on sys.path: the torchrun helper and the models the launched ranks build by name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
