"""``python -m nodes.inference.models fetch|list``: the ``pipeline models`` command, standalone."""

import sys

from nodes.inference.models.cli import main

sys.exit(main())
