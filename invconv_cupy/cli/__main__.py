"""``python -m invconv_cupy.cli``: the same as the ``invconv-deblur`` console script."""

import sys

from .program import run_program

sys.exit(run_program())
