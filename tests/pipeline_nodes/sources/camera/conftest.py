"""The camera tests share the source test helpers (MJPEG server, harness) one folder up."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
