"""The harness can fail: deliberately broken copies of the conv kernels must be caught.

Each case edits the real ``kernels/conv.cu`` text (the emulator's ``transform``
hook), runs the primitive on the CPU, and shows wrong results, NaN (outputs
start as NaN, shared memory as 0xFF bytes) or, for an out-of-bounds read, an
AddressSanitizer report.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import make_weight
from invconv_cupy import kernel_source
from invconv_cupy.backends import kernel_conv
from invconv_cupy.emulator import EmulatorDevice, asan_runtime
from invconv_cupy.orientation import parse_orientation
from oracle import Dense

# name -> (exact text in kernels/conv.cu, its broken replacement, what to run)
BREAKS = {
    "missing barrier": ("__syncthreads();                          // the item is staged", "", "weight_grad"),
    "missing barrier before restaging": (
        "__syncthreads();                          // every thread is done with the previous item", "",
        "weight_grad_tiles"),
    "missing barrier in the tree": (
        "if (threadIdx.y < half) sums[t] += sums[t + half * blockDim.x];\n        __syncthreads();",
        "if (threadIdx.y < half) sums[t] += sums[t + half * blockDim.x];", "weight_grad_lanes"),
    "halo off by one": ("fj0 - (KW - 1), halo_w", "fj0 - (KW - 2), halo_w", "weight_grad_tiles"),
    "parameter group off by one": ("const int o_lo = slot0 / row_slots;", "const int o_lo = (slot0 + 1) / row_slots;",
                                   "weight_grad_tiles"),
    "off-by-one tap loop": ("for (int a = 0; a < KH; ++a)", "for (int a = 0; a < KH - 1; ++a)", "conv"),
    "missing barrier in the tiled conv": ("__syncthreads();                              // weights and tile staged", "",
                                          "conv_tiles"),
    "transposed halo off by one": ("hj0 = transpose ? fj0 : fj0 - (KW - 1)", "hj0 = transpose ? fj0 + 1 : fj0 - (KW - 1)",
                                   "conv_transpose_tiles"),
    "unmasked anchor in the tiled conv": ("(a == pt && e == pl && c > o)", "(a == pt && e == pl && c > o + 1)",
                                          "conv_tiles"),
    "off-by-one unwritten output": ("idx < n; idx += ic_grid_stride()", "idx < n - 1; idx += ic_grid_stride()", "conv"),
    "out-of-bounds read": ("if (si < 0 || si >= H) continue;", "if (si < 0 || si > H) continue;", "conv"),
}


def _breaker(name):
    old, new, _ = BREAKS[name]

    def transform(family, text):
        assert text.count(old) >= 1, f"{name}: {old!r} is no longer in conv.cu; update the test"
        return text.replace(old, new, 1)

    return transform


def run_conv_case(device, what, rng):
    """One primitive on fresh inputs: (result, dense oracle's answer)."""
    w = make_weight(rng, 2, 3, 2, "BR")
    x, g = rng.standard_normal((2, 2, 2, 9, 8))
    orient = parse_orientation("BR")
    dense = Dense(w, 9, 8, "BR")
    if what == "conv":   # the untiled kernel (used when the weights do not fit in shared memory)
        return kernel_conv.conv(device, x, w, orient, tiled=False), dense.conv(x)
    if what == "conv_tiles":
        return kernel_conv.conv(device, x, w, orient, tile=(2, 3)), dense.conv(x)
    if what == "conv_transpose_tiles":
        return kernel_conv.conv(device, g, w, orient, transpose=True, tile=(4, 1)), dense.conv_vjp(g, x)[0]
    if what == "weight_grad_tiles":   # several tiles per block, tiles inside the halo, parameter groups
        got = kernel_conv.weight_grad(device, g, x, (3, 2), orient, tile=(2, 1), max_threads=5, target_blocks=6)
        return got, dense.conv_vjp(g, x)[1]
    if what == "weight_grad_lanes":   # 1x1 tiles: 144 stage-1 blocks, 8 lanes of 32 parameters in stage 2
        return kernel_conv.weight_grad(device, g, x, (3, 2), orient, tile=(1, 1)), dense.conv_vjp(g, x)[1]
    return kernel_conv.weight_grad(device, g, x, (3, 2), orient), dense.conv_vjp(g, x)[1]


def test_every_break_edits_the_real_source():
    text = kernel_source.read("conv.cu")
    for name, (old, _, _) in BREAKS.items():
        assert old in text, name


@pytest.mark.parametrize("name", list(BREAKS))
def test_broken_kernel_gives_wrong_results(rng, name):
    device = EmulatorDevice(transform=_breaker(name))
    what = BREAKS[name][2]
    # a race may hide in one run (each block's thread schedule is random), so try a few
    wrong = 0
    for _ in range(3):
        got, want = run_conv_case(device, what, rng)
        wrong += not np.allclose(got, want, rtol=0, atol=1e-9)
    assert wrong > 0, f"the emulator did not notice the {name}"
    got, want = run_conv_case(EmulatorDevice(), what, rng)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)     # the unbroken kernel is right


_ASAN_PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from invconv_cupy.backends import kernel_conv
    from invconv_cupy.emulator import EmulatorDevice
    from invconv_cupy.orientation import parse_orientation
    old, new = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((2, 2, 3, 3))
    kernel_conv.conv(EmulatorDevice(), x, w, parse_orientation("BR"), tiled=False)
    print("clean kernel ok", flush=True)
    broken = EmulatorDevice(transform=lambda family, text: text.replace(old, new, 1))
    kernel_conv.conv(broken, x, w, parse_orientation("BR"), tiled=False)
    print("broken kernel ran to the end", flush=True)
""")


@pytest.mark.slow
def test_address_sanitizer_catches_the_out_of_bounds_read():
    """Built with AddressSanitizer, the out-of-bounds kernel stops at the read: the clean kernel passes."""
    runtime = asan_runtime()
    if not os.path.isabs(runtime) or not os.path.exists(runtime):
        pytest.skip("the compiler has no AddressSanitizer runtime")
    old, new, _ = BREAKS["out-of-bounds read"]
    env = dict(os.environ, LD_PRELOAD=runtime, ASAN_OPTIONS="detect_leaks=0", INVCONV_EMULATE_SANITIZE="address")
    out = subprocess.run([sys.executable, "-c", _ASAN_PROBE, old, new], env=env, capture_output=True, text=True)
    assert "clean kernel ok" in out.stdout, out.stderr[-3000:]
    assert out.returncode != 0 and "broken kernel ran to the end" not in out.stdout
    assert "AddressSanitizer: heap-buffer-overflow" in out.stderr and "in conv_apply" in out.stderr, out.stderr[-3000:]
