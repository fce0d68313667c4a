"""Whether the ``cli`` extra (scikit-image, Pillow, tqdm) is installed."""

from __future__ import annotations

import importlib.util

#: The modules the command line imports, and the distributions that bring them (tifffile comes with scikit-image).
CLI_MODULES = {"skimage": "scikit-image", "PIL": "Pillow", "tqdm": "tqdm", "tifffile": "tifffile"}


def missing_cli_modules() -> list[str]:
    """The distributions of the ``cli`` extra whose modules cannot be found."""
    missing = []
    for module, distribution in CLI_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or blocked module counts as missing
            found = False
        if not found:
            missing.append(distribution)
    return missing
