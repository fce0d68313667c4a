"""What the GPU benchmark measures: the cases, the measurements of each case, and the ratios.

Adding a case is one entry in :data:`CASES`. Adding a measurement is one
:class:`Measurement` in :data:`MEASUREMENTS`: a label, ``build(ctx)`` returning
the callable to time (it queues the work on the GPU and returns its output),
and ``expect``, the float64 NumPy reference its output must match before its
time is reported. ``ctx`` is the case's data on the device
(:class:`gpu_layer.CudaCase`: ``y``, ``w``, ``g``, ``x`` and torch views of
them, the kernel device, ...). A ratio of two measurements, computed for every
case, is one entry in :data:`CASE_RATIOS`: ``solve_v2_vs_v1`` is the A/B of the
solve kernel against its previous version (``bench/solve_v1.py``), both called
at the kernel layer, per call and (``*_gpu_time``) replayed as CUDA graphs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Case:
    B: int
    C: int
    H: int
    W: int
    K: int
    dtype: str = "float32"

    @property
    def shape(self):
        return (self.B, self.C, self.H, self.W)

    @property
    def large(self) -> bool:
        """More than 2**20 pixels per image: the tiled solve."""
        return self.H * self.W > 1 << 20


CASES = {
    "headline_100x12x32x32": Case(100, 12, 32, 32, 3),
    "c48_100x48x16x16": Case(100, 48, 16, 16, 3),
    "large_1x3x2048x2048": Case(1, 3, 2048, 2048, 3),
}
HEADLINE = "headline_100x12x32x32"

#: ratio name -> (our measurement, baseline measurement, goal: ratio at most), on the headline case
RATIOS = {
    "solve_vs_conv2d": ("solve", "conv2d", 2.0),
    "solve_vs_per_diagonal": ("solve", "per_diagonal", 0.02),
    "solve_vs_per_step": ("solve", "per_step", 0.25),
    "solve_vs_cusparse": ("solve", "cusparse", 0.1),
    "solve_vjp_vs_conv2d_backward": ("solve_vjp", "conv2d_backward", 3.0),
}
#: the same ratios on GPU time alone: both sides replayed as CUDA graphs (no host work per call)
GRAPH_RATIOS = {
    "solve_vs_conv2d": ("solve_graph", "conv2d_graph", 2.0),
    "solve_vjp_vs_conv2d_backward": ("solve_vjp_graph", "conv2d_backward_graph", 3.0),
}
#: ratios computed for every case: name -> (numerator measurement, denominator measurement)
CASE_RATIOS = {name: (ours, theirs) for name, (ours, theirs, _) in RATIOS.items()}
CASE_RATIOS["solve_v2_vs_v1"] = ("solve_v2", "solve_v1")
CASE_RATIOS["solve_v2_vs_v1_gpu_time"] = ("solve_v2_graph", "solve_v1_graph")

#: cuSPARSE is skipped above this many unknowns (the CSR matrix is built on the host with SciPy)
CUSPARSE_MAX_UNKNOWNS = 2_000_000
#: relative error (max |out - ref| / max(1, max |ref|)) allowed against the float64 reference.
#: float32: rounding lands near 1e-6 on these well-conditioned systems; TF32 (10-bit mantissa) near 1e-3 fails.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


def _always(case):
    return True


@dataclass(frozen=True)
class Measurement:
    """One timed callable of a case.

    ``expect`` names the reference (see ``gpu_measure.REFERENCES``): ``"x"`` (the solve),
    ``"vjp"`` (grad_y, grad_weight of solve_vjp), ``"grad_y"``, ``"grad_w"``, ``"conv2d"``,
    ``"conv2d_backward"``. ``timer`` says whose stream the CUDA events record on
    (``"cupy"`` or ``"torch"``); ``graph`` replays the callable captured as a CUDA graph;
    ``precision`` is ``"strict"`` (TF32 off in the check and the timing) or
    ``"torch-defaults"`` (TF32 off in the check, torch's defaults in the timing);
    ``images`` limits the reference to the first images.
    """

    label: str
    build: Callable[[Any], Callable[[], Any]]
    expect: str
    runs: int = 100
    timer: str = "cupy"
    graph: bool = False
    precision: str = "strict"
    images: int | None = None
    applies: Callable[[Case], bool] = field(default=_always, compare=False)


def _headline(case):
    return case == CASES[HEADLINE]


MEASUREMENTS = [
    Measurement("solve", lambda c: lambda: c.ic.solve(c.y, c.w, check=False), "x"),
    Measurement("solve_checked", lambda c: lambda: c.ic.solve(c.y, c.w), "x"),
    Measurement("solve_graph", lambda c: lambda: c.ic.solve(c.y, c.w, check=False), "x", graph=True),
    Measurement("solve_vjp", lambda c: lambda: c.ic.solve_vjp(c.g, c.x, c.w, check=False), "vjp"),
    # solve_vjp's two parts: the transposed solve (solve.cu) and the weight gradient (conv.cu's reduction)
    Measurement("solve_vjp_transposed_solve", lambda c: lambda: c.solve_kernel(c.g, transpose=True), "grad_y"),
    Measurement("solve_vjp_weight_grad", lambda c: lambda: c.weight_grad(c.grad_y, c.x, scale=-1.0), "grad_w"),
    Measurement("conv2d", lambda c: lambda: c.baselines.conv2d_forward(c.x_t, c.w_t), "conv2d", timer="torch",
                precision="torch-defaults"),
    Measurement("conv2d_backward", lambda c: lambda: c.baselines.conv2d_backward(c.g_t, c.x_t, c.w_t),
                "conv2d_backward", timer="torch", precision="torch-defaults"),
    Measurement("conv2d_strict", lambda c: lambda: c.baselines.conv2d_forward(c.x_t, c.w_t), "conv2d",
                timer="torch"),
    Measurement("conv2d_backward_strict", lambda c: lambda: c.baselines.conv2d_backward(c.g_t, c.x_t, c.w_t),
                "conv2d_backward", timer="torch"),
    Measurement("conv2d_graph", lambda c: lambda: c.baselines.conv2d_forward(c.x_t, c.w_t), "conv2d",
                timer="torch", graph=True),
    Measurement("conv2d_backward_graph", lambda c: lambda: c.baselines.conv2d_backward(c.g_t, c.x_t, c.w_t),
                "conv2d_backward", timer="torch", graph=True),
    Measurement("solve_vjp_graph", lambda c: lambda: c.ic.solve_vjp(c.g, c.x, c.w, check=False), "vjp",
                graph=True),
    Measurement("per_diagonal", lambda c: lambda: c.per_diagonal(c.y, c.w), "x", runs=20),
    Measurement("per_step", lambda c: lambda: c.per_step(c.y, c.w), "x", runs=50),
    Measurement("per_step_graph", lambda c: lambda: c.per_step(c.y, c.w), "x", runs=50, graph=True),
    Measurement("cusparse", lambda c: c.cusparse(), "x", runs=20),
    # the A/B of the solve kernel: v2 (kernels/solve.cu) and v1 (bench/solve_v1.cu), both at the kernel layer
    Measurement("solve_v2", lambda c: lambda: c.solve_kernel(c.y), "x"),
    Measurement("solve_v1", lambda c: lambda: c.solve_v1(c.y), "x"),
    Measurement("solve_v2_graph", lambda c: lambda: c.solve_kernel(c.y), "x", graph=True),
    Measurement("solve_v1_graph", lambda c: lambda: c.solve_v1(c.y), "x", graph=True),
    Measurement("solve_one_image", lambda c: lambda: c.solve_kernel(c.y[:1]), "x", images=1, applies=_headline),
    *(Measurement(f"solve_g{G}", lambda c, G=G: lambda: c.solve_kernel(c.y, outputs_per_thread=G), "x",
                  applies=lambda case: not case.large) for G in (1, 2, 4)),
    *(Measurement(f"solve_tile{T}", lambda c, T=T: lambda: c.solve_kernel(c.y, max_tile=T), "x",
                  applies=lambda case: case.large) for T in (32, 64, 128)),
]
