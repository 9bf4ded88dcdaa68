"""``python -m pipeline_nodes.inference.models fetch|list``: the ``pipeline models`` command,
standalone."""

import sys

from pipeline_nodes.inference.models.cli import main

sys.exit(main())
