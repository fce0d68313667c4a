"""``python -m invconv_cupy.cli``: the same as the ``invconv-deblur`` console script."""

import sys

from .main import main

sys.exit(main())
