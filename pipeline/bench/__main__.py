"""``python -m pipeline.bench ARGS`` is ``pipeline bench ARGS``."""

import sys

from pipeline.bench.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
