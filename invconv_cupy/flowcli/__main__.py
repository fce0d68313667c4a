"""``python -m invconv_cupy.flowcli``: the same as the ``invconv-flow`` console script."""

import sys

from .program import run_program

sys.exit(run_program())
