"""``python -m invconv_cupy.flowcli``: the same as the ``invconv-flow`` console script."""

import sys

from .main import main

sys.exit(main())
