"""The test kernels of ``tests/emulator_kernels.cu``: built for the emulator or a GPU, and their NumPy answers."""

from pathlib import Path

import numpy as np

from invconv_cupy import kernel_source
from invconv_cupy.emulator import EmulatorDevice

SOURCE = Path(__file__).with_name("emulator_kernels.cu").read_text()
#: the family whose preamble and common.cuh the test kernels are appended to
FAMILY = "conv"


def with_test_kernels(text, kernels=SOURCE):
    """A family's source with the test kernels appended (named in compiler messages)."""
    return f'{text}\n#line 1 "emulator_kernels.cu"\n{kernels}'


def full_source(kernels=SOURCE):
    """What NVRTC and CuPy compile: the family's source for float64/int32 plus the test kernels."""
    return with_test_kernels(kernel_source.source(FAMILY, "float64", "int32"), kernels)


def emulator(kernels=SOURCE, **settings):
    """``name -> function`` on a fresh :class:`EmulatorDevice` that has the test kernels."""
    device = EmulatorDevice(transform=lambda family, text: with_test_kernels(text, kernels), **settings)
    return lambda name: device.function(FAMILY, name, "float64", "int32")


def cupy_functions():
    """``name -> function`` for the current GPU, launched like the emulator's (NumPy in and out)."""
    import cupy

    from invconv_cupy.cuda_device import COMPILE_OPTIONS

    module = cupy.RawModule(code=full_source(), options=COMPILE_OPTIONS)

    def function(name):
        kernel = module.get_function(name)

        def launch(grid, block, args, shared_mem=0):
            on_gpu = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
            kernel(grid, block, tuple(on_gpu), shared_mem=shared_mem)
            for host, device in zip(args, on_gpu):
                if isinstance(host, np.ndarray):
                    host[...] = device.get()

        return launch

    return function


def wavefront_answer(x, tile):
    """``emu_wavefront``'s output, tile by tile."""
    H, W = x.shape
    out = np.zeros_like(x)
    for i0 in range(0, H, tile):
        for j0 in range(0, W, tile):
            rows, cols = slice(i0, i0 + tile), slice(j0, j0 + tile)
            above = 0.5 * out[i0 - 1, cols] if i0 else 0.0
            left = 0.25 * out[rows, j0 - 1][:, None] if j0 else 0.0
            out[rows, cols] = x[rows, cols] + above + left
    return out


def run_wavefront(function, rng, H=13, W=11, tile=3, blocks=6, threads=8):
    """One ``emu_wavefront`` launch on fresh inputs: (result, NumPy answer)."""
    x = rng.standard_normal((H, W))
    out = np.full((H, W), np.nan)
    tiles = -(-H // tile) * -(-W // tile)
    ready, counter = np.zeros(tiles, np.int32), np.zeros(1, np.uint32)
    function("emu_wavefront")((blocks,), (threads,), (x, out, ready, counter, np.int32(H), np.int32(W), np.int32(tile)))
    return out, wavefront_answer(x, tile)
