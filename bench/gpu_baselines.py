"""The baselines of ``gpu_bench.py``, each a callable of fresh inputs that leaves its work queued.

- :class:`PerStepSolver`: the launch-per-step solves of ``baselines.cu``,
  ``"per_diagonal"`` (the paper's scheme, a device synchronization after every
  launch) and ``"per_step"`` (one launch per anti-diagonal, no synchronization);
- :func:`cusparse_solver`: ``cupyx.scipy.sparse.linalg.spsolve_triangular`` on the
  CSR matrix of ``sparse_system.py``, analysis and solve in every call (the
  weights change every training step);
- :func:`conv2d_forward`, :func:`conv2d_backward`: cuDNN through torch, same shapes.

``source(dtype)`` gives the kernel text with its ``ic_real`` typedef, so a CPU
test can compile it with NVRTC and run it under the emulator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_SOURCE = Path(__file__).with_name("baselines.cu")
_REAL = {"float32": "float", "float64": "double"}
ENTRIES = ("baseline_prepare", "baseline_step")


def source(dtype) -> str:
    """``baselines.cu`` for ``dtype`` (float32 or float64)."""
    return f"typedef {_REAL[np.dtype(dtype).name]} ic_real;\n" + _SOURCE.read_text(encoding="utf-8")


SCHEMES = ("per_diagonal", "per_step")


def diagonal_length(d, H, W):
    return min(H - 1, d) - max(0, d - W + 1) + 1


def step_launches(scheme, shape):
    """Step launches of a solve of images ``shape``: (H+W-1) * ceil(C/4) (per_diagonal) or H+W-1."""
    _, C, H, W = shape
    return (H + W - 1) * (-(-C // min(4, C)) if scheme == "per_diagonal" else 1)


class PerStepSolver:
    """A launch-per-step TL solve. ``functions`` maps the entry names to callables
    ``fn(grid, block, args)`` (``cupy.RawKernel`` or the emulator's); ``xp`` is
    the array module; ``synchronize`` is called after every step launch (the
    paper's ``cudaDeviceSynchronize()``) or is None."""

    def __init__(self, functions, xp, scheme, synchronize=None):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be 'per_diagonal' or 'per_step', got {scheme!r}")
        self.prepare = functions["baseline_prepare"]
        self.step = functions["baseline_step"]
        self.xp = xp
        self.scheme = scheme
        self.synchronize = synchronize

    def __call__(self, y, w):
        xp, i32 = self.xp, np.int32
        B, C, H, W = y.shape
        KH, KW = w.shape[2:]
        ainv = xp.empty((C * C,), y.dtype)
        prepared = xp.empty((KH * KW * C * C,), y.dtype)
        x = xp.empty_like(y)
        self.prepare((1,), (min(256, max(32, C)),), (w, ainv, prepared, i32(C), i32(KH), i32(KW)))
        dims = (i32(B), i32(C), i32(H), i32(W), i32(KH), i32(KW))
        groups = min(4, C)
        per_group = -(-C // groups)
        for d in range(H + W - 1):
            n = diagonal_length(d, H, W)
            if self.scheme == "per_step":
                threads = 128
                self.step((-(-n * B // threads), C), (threads,), (y, prepared, x, *dims, i32(d), i32(0), i32(1)))
                continue
            for c in range(per_group):  # paper: grid (pixels on the diagonal, 4 groups), one thread per image
                self.step((n, groups), (B,), (y, prepared, x, *dims, i32(d), i32(c), i32(per_group)))
                if self.synchronize is not None:
                    self.synchronize()
        return x


def load_cupy_functions(dtype):
    """The baseline kernels compiled by CuPy for the current device."""
    import cupy

    module = cupy.RawModule(code=source(dtype), options=("-std=c++17",))
    return {name: module.get_function(name) for name in ENTRIES}


def cusparse_solver(w, H, W):
    """A callable ``y -> x`` running ``spsolve_triangular`` (analysis + solve) on the TL system of ``w``."""
    import cupy
    import cupyx.scipy.sparse as csp
    from cupyx.scipy.sparse.linalg import spsolve_triangular

    from sparse_system import triangular_matrix

    w_host = cupy.asnumpy(w)
    matrix = csp.csr_matrix(triangular_matrix(w_host, H, W).astype(w_host.dtype))

    def solve(y):
        B, C = y.shape[:2]
        rhs = cupy.ascontiguousarray(y.transpose(2, 3, 1, 0).reshape(-1, B))  # the matrix's unknown order
        x = spsolve_triangular(matrix, rhs, lower=True)
        return x.reshape(H, W, C, B).transpose(3, 2, 0, 1)

    return solve, int(matrix.nnz)


def conv2d_forward(x, w):
    """``torch.nn.functional.conv2d`` of the same shape (output H x W)."""
    import torch.nn.functional as F

    return F.conv2d(x, w, padding="same")


def conv2d_backward(grad_out, x, w):
    """conv2d's backward: grad_input and grad_weight (what ``solve_vjp`` returns for the solve)."""
    import torch

    KH, KW = w.shape[2:]
    return torch.ops.aten.convolution_backward(
        grad_out, x, w, None, [1, 1], [KH // 2, KW // 2], [1, 1], False, [0, 0], 1, [True, True, False]
    )
