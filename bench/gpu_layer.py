"""The device layer of the GPU check: everything that touches CUDA goes through here.

:func:`load` returns :class:`CudaLayer` (CuPy and torch on the current GPU), or,
when ``$INVCONV_GPU_FAKE`` is set, ``gpu_fake.FakeLayer``: NumPy stand-ins that
raise in chosen places, so the whole check runs on a CPU (the dry-run test).

A layer has ``fake``, ``info()``, ``tf32_defaults()``, ``limits()``, ``scaled(case)``,
``prepare(name, case, seed)`` (the case's data on the device), ``callable(measurement, ctx)``,
``to_host(output)``, ``tf32(allowed)`` (a context manager), ``time(fn, timer,
runs, budget_s)`` and ``healthy()``.

``python bench/gpu_layer.py`` prints the versions and the device, and exits 3
when there is no usable CUDA device (the check's ``device`` phase).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from gpu_cases import CUSPARSE_MAX_UNKNOWNS  # noqa: E402

FAKE_ENV = "INVCONV_GPU_FAKE"


class Skip(Exception):
    """A measurement that does not apply to this case (the message says why)."""


def load():
    """The fake layer when ``$INVCONV_GPU_FAKE`` is set, else the CUDA layer."""
    if FAKE_ENV in os.environ:
        import gpu_fake

        return gpu_fake.FakeLayer(os.environ[FAKE_ENV])
    return CudaLayer()


def make_inputs(case, seed):
    """Host inputs of ``case``: a well-conditioned TL weight (anchor diagonal +-U(1, 2), small other
    taps), the right-hand side ``y`` and an upstream gradient ``g``, all fresh random values."""
    rng = np.random.default_rng(seed)
    C, K = case.C, case.K
    w = rng.uniform(-1, 1, (C, C, K, K)) * (0.5 / (C * K * K))
    w[:, :, -1, -1] = np.tril(w[:, :, -1, -1], -1) + np.diag(rng.choice([-1.0, 1.0], C) * rng.uniform(1, 2, C))
    y = rng.standard_normal(case.shape)
    g = rng.standard_normal(case.shape)
    return w.astype(case.dtype), y.astype(case.dtype), g.astype(case.dtype)


def versions():
    """Python, NumPy, CuPy, torch and the git commit, without importing CuPy or torch."""
    out = {"python": platform.python_version(), "numpy": np.__version__}
    distributions = importlib.metadata.packages_distributions()
    for module in ("cupy", "torch"):
        names = distributions.get(module, [])
        out[module] = f"{importlib.metadata.version(names[0])} ({names[0]})" if names else None
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


class CudaCase:
    """One case's data on the GPU, and the callables the measurements time."""

    def __init__(self, case, seed):
        import cupy
        import torch

        import gpu_baselines
        import invconv_cupy
        from invconv_cupy.backends import cupy_backend, kernel_solve
        from invconv_cupy.orientation import parse_orientation

        self.case, self.cupy, self.torch = case, cupy, torch
        self.ic, self.baselines, self._kernel_solve = invconv_cupy, gpu_baselines, kernel_solve
        self._weight_grad = cupy_backend.weight_grad
        self.device, self.tl = cupy_backend.device, parse_orientation("TL")
        w, y, g = make_inputs(case, seed)
        self.w, self.y, self.g = cupy.asarray(w), cupy.asarray(y), cupy.asarray(g)
        self.w_t, self.y_t, self.g_t = (torch.from_dlpack(a) for a in (self.w, self.y, self.g))

    def solve_kernel(self, y, transpose=False, **kwargs):
        return self._kernel_solve.solve(self.device, y, self.w, self.tl, transpose, **kwargs)

    @functools.cached_property
    def _v1(self):
        import solve_v1

        return solve_v1, solve_v1.V1Device(self.device)

    def solve_v1(self, y):
        """The previous solve kernel (``bench/solve_v1.py``), the A/B baseline of ``solve_v2``."""
        module, device = self._v1
        return module.solve(device, y, self.w, self.tl)

    def weight_grad(self, g, x, scale=1.0):
        return self._weight_grad(g, x, (self.case.K, self.case.K), self.tl, scale=scale)

    @functools.cached_property
    def x(self):
        """Our solve's output; the NumPy path's when our solve fails (the baselines still get measured)."""
        try:
            return self.ic.solve(self.y, self.w, check=False)
        except Exception as exc:  # noqa: BLE001 -- reported, then the baselines go on
            print(f"  solve failed ({type(exc).__name__}: {exc}); x from the NumPy path", flush=True)
            return self.cupy.asarray(self.ic.solve(self.cupy.asnumpy(self.y), self.cupy.asnumpy(self.w)))

    @functools.cached_property
    def x_t(self):
        return self.torch.from_dlpack(self.x)

    @functools.cached_property
    def grad_y(self):
        return self.solve_kernel(self.g, transpose=True)

    @functools.cached_property
    def _baseline_functions(self):
        return self.baselines.load_cupy_functions(self.case.dtype)

    @functools.cached_property
    def per_diagonal(self):
        return self.baselines.PerStepSolver(self._baseline_functions, self.cupy, "per_diagonal",
                                            self.cupy.cuda.Device().synchronize)

    @functools.cached_property
    def per_step(self):
        return self.baselines.PerStepSolver(self._baseline_functions, self.cupy, "per_step")

    def cusparse(self):
        unknowns = self.case.C * self.case.H * self.case.W
        if unknowns > CUSPARSE_MAX_UNKNOWNS:
            raise Skip(f"{unknowns} unknowns per image: the CSR matrix is too large to build on the host")
        spsolve, self.cusparse_nnz = self.baselines.cusparse_solver(self.w, self.case.H, self.case.W)
        return lambda: spsolve(self.y)

    def host(self):
        """Host copies of the inputs and of the ``x`` the measurements used."""
        get = self.cupy.asnumpy
        return {"y": get(self.y), "w": get(self.w), "g": get(self.g), "x": get(self.x)}


class CudaLayer:
    """The current CUDA device through CuPy and torch."""

    fake = False

    def __init__(self):
        import cupy

        if not cupy.cuda.is_available():
            raise RuntimeError("no CUDA device (cupy.cuda.is_available() is False)")
        self.cupy = cupy

    def info(self):
        cupy = self.cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return {"name": name.decode() if isinstance(name, bytes) else str(name),
                "sm_count": int(props["multiProcessorCount"]),
                "compute_capability": f"{props['major']}.{props['minor']}",
                "shared_memory_per_block_optin": int(props.get("sharedMemPerBlockOptin", 0)),
                "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
                "cuda_driver": cupy.cuda.runtime.driverGetVersion()}

    def limits(self):
        from invconv_cupy.backends import cupy_backend, kernel_solve

        device = cupy_backend.device
        return {"shared_limit": device.max_shared_memory_per_block_optin,
                "max_threads": min(kernel_solve.MAX_THREADS, device.max_threads_per_block)}

    def scaled(self, case):
        return case

    def prepare(self, name, case, seed):
        import torch

        torch.backends.cudnn.benchmark = True
        return CudaCase(case, seed)

    def callable(self, measurement, ctx):
        fn = measurement.build(ctx)
        if measurement.graph:
            fn = _torch_graph(fn) if measurement.timer == "torch" else _cupy_graph(fn)
        return fn

    def to_host(self, output):
        if isinstance(output, (tuple, list)):
            return tuple(self.to_host(o) for o in output if o is not None)
        if hasattr(output, "detach"):
            return output.detach().cpu().numpy()
        return self.cupy.asnumpy(output)

    def tf32_defaults(self):
        import torch

        return {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32}

    @contextlib.contextmanager
    def tf32(self, allowed):
        """TF32 in cuDNN and cuBLAS off (``allowed=False``) or left at torch's defaults (``None``)."""
        import torch

        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        if allowed is not None:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = bool(allowed)
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    def time(self, fn, timer, runs, budget_s):
        from gpu_timing import cupy_events, median_ms, torch_events

        return median_ms(fn, stream_events=torch_events if timer == "torch" else cupy_events, runs=runs,
                         budget_s=budget_s)

    def healthy(self):
        """False once the context is unusable (a sticky error such as an illegal address)."""
        try:
            self.cupy.cuda.runtime.deviceSynchronize()
            self.cupy.zeros(1).sum().get()
            return True
        except Exception:  # noqa: BLE001 -- any failure here means the device is lost
            return False


def _cupy_graph(fn):
    """``fn`` captured once into a CUDA graph; the callable replays it on the current stream and
    returns the captured output (the graph writes into it on every replay). The capture fails
    loudly if ``fn`` synchronizes with the host."""
    import cupy

    state = {}

    def replay():
        if "graph" not in state:
            stream = cupy.cuda.Stream(non_blocking=True)
            with stream:
                fn()  # compile, fill the memory pool for this stream, raise the shared-memory limit
                stream.synchronize()
                stream.begin_capture()
                state["output"] = fn()
                state["graph"] = stream.end_capture()
        state["graph"].launch()
        return state["output"]

    return replay


def _torch_graph(fn):
    """``fn`` captured into a ``torch.cuda.CUDAGraph`` (after a warm-up on a side stream, as torch
    requires); the callable replays it and returns the captured output."""
    import torch

    state = {}

    def replay():
        if "graph" not in state:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                state["output"] = fn()
            state["graph"] = graph
        state["graph"].replay()
        return state["output"]

    return replay


def probe() -> int:
    """Print versions and the device; 0 when a CUDA device (or the fake) is usable, else 3."""
    print(json.dumps({"versions": versions()}, indent=1), flush=True)
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm",
                        "--format=csv"], timeout=30, check=False)
    try:
        layer = load()
        print(json.dumps({"device": layer.info(), "fake": layer.fake}, indent=1), flush=True)
    except Exception as exc:  # noqa: BLE001 -- the reason is the phase's output
        print(f"no usable CUDA device: {type(exc).__name__}: {exc}", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(probe())
