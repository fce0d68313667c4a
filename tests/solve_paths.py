"""Forcing each path of the kernel solve: the shared-memory limit and tile cap that make
``kernel_solve.plan`` pick it (used by the emulator tests and the GPU tests)."""

from invconv_cupy.backends import kernel_solve

#: path name -> (tiled, matrices in global memory)
PATHS = {"single": (False, False), "single_global": (False, True), "tiled": (True, False),
         "tiled_global": (True, True)}
#: tiled paths use tiles of at most this many pixels a side
SMALL_TILE = 2


def limits_for(path, shape, kernel_size, itemsize, *, max_threads, outputs_per_thread=None, small_tile=SMALL_TILE,
               start=256 * 1024):
    """``(shared_limit, options, plan)`` with ``shared_limit <= start`` that make ``plan`` pick ``path``
    for ``shape`` with ``options`` (``max_tile``, and ``matrices_in_global`` on the global paths), or None
    when no limit does (an image of one pixel has no tiled path)."""
    tiled, in_global = PATHS[path]
    options = {"max_tile": small_tile if tiled else None, "matrices_in_global": True if in_global else None,
               "outputs_per_thread": outputs_per_thread}
    limit = start
    while True:  # every plan reachable by lowering the limit, most preferred first
        try:
            how = kernel_solve.plan(shape, kernel_size, itemsize, shared_limit=limit, max_threads=max_threads,
                                    **options)
        except ValueError:
            return None
        if (how.tiles_h * how.tiles_w > 1) == tiled and how.matrices_in_global == in_global:
            return limit, options, how
        limit = how.shared_bytes - 1
