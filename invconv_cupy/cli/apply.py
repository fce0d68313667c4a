"""``invconv-deblur apply``: deblur files with a known PSF.

Everything is checked before anything is written: the PSF, the device, every
input (read once to validate), every output path (type, existing files,
collisions). Then each image is deblurred and written atomically.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .device import Compute, resolve_device
from .errors import CliError
from .images import check_writable, list_inputs, read_image, write_image
from .methods import choose_lambda, deblur_exact, deblur_tikhonov, pick_preconditioner
from .psf import CausalKernel, NotSafeForExact, exact_kernel, gaussian_psf, load_psf, motion_psf


@dataclass(frozen=True)
class Plan:
    """How every image is deblurred.

    Attributes
    ----------
    method : {"exact", "tikhonov"}
    psf : numpy.ndarray
    kernel : CausalKernel or None
        The causal kernel: exact's, or tikhonov's preconditioner (None where the PSF has none).
    precondition : {"auto", "causal", "none"}
        Tikhonov: "auto" preconditions an image when :func:`methods.pick_preconditioner` expects it to help.
    lam : float or None
        Tikhonov's weight; None: chosen per image from its data.
    maxiter, rtol
        Tikhonov's CG settings.
    note : str or None
        Why exact was not used, when the method was chosen automatically.
    """

    method: str
    psf: np.ndarray
    kernel: CausalKernel | None
    precondition: str
    lam: float | None
    maxiter: int
    rtol: float
    note: str | None = None


def psf_from_args(args) -> np.ndarray:
    """The PSF named by ``--psf``, ``--motion`` or ``--gaussian``."""
    if args.decay != 1.0 and args.motion is None:
        raise CliError("--decay applies only to --motion")
    if args.psf is not None:
        return load_psf(args.psf)
    if args.motion is not None:
        return motion_psf(*args.motion, decay=args.decay)
    return gaussian_psf(args.gaussian)


def plan_from_args(args, psf: np.ndarray) -> Plan:
    """Pick the method (exact where it is safe, unless told otherwise) and check its options."""
    if args.lam is not None and not (math.isfinite(args.lam) and args.lam >= 0):
        raise CliError(f"--lam must be a finite number >= 0, got {args.lam}")
    if args.maxiter < 1:
        raise CliError(f"--maxiter must be at least 1, got {args.maxiter}")
    if not (math.isfinite(args.rtol) and 0 < args.rtol < 1):
        raise CliError(f"--rtol must be in (0, 1), got {args.rtol}")
    wants_tikhonov = args.lam is not None or args.precondition != "auto"
    if args.method == "exact" and wants_tikhonov:
        raise CliError("--lam and --precondition apply only to --method tikhonov")
    method = args.method
    kernel, reason = None, None
    try:
        kernel = exact_kernel(psf, args.orientation)
    except NotSafeForExact as exc:
        if method == "exact":
            raise
        reason = exc.reason
    note = None
    if method is None:
        method = "tikhonov" if wants_tikhonov or kernel is None else "exact"
        if kernel is None:
            note = f"not using exact ({reason}); using tikhonov"
    if method == "tikhonov" and args.precondition == "causal" and kernel is None:
        raise CliError(f"--precondition causal needs a PSF that exact accepts, but {reason}")
    return Plan(method, psf, kernel, args.precondition, args.lam, args.maxiter, args.rtol, note)


def plan_outputs(files: list[Path], output: Path, many: bool, force: bool) -> list[Path]:
    """Output path of each input, checked against existing files and collisions.

    With ``many`` (several inputs, a folder input, or an output named with a
    trailing slash), ``output`` is a folder and each file keeps its name; else
    ``output`` is the file (or an existing folder to put it in).
    """
    if many:
        if output.exists() and not output.is_dir():
            raise CliError(f"output {output} must be a folder when there are several inputs or a folder input")
        outputs = [output / f.name for f in files]
    else:
        outputs = [output / files[0].name if output.is_dir() else output]
    seen = {}
    for src, dst in zip(files, outputs):
        if dst in seen:
            raise CliError(f"inputs {seen[dst]} and {src} would both be written to {dst}")
        seen[dst] = src
        if dst.is_dir():
            raise CliError(f"output {dst} is a folder")
        if dst.exists() and dst.resolve() in {f.resolve() for f in files}:
            raise CliError(f"output {dst} is also an input; choose another output")
        if dst.exists() and not force:
            raise CliError(f"output {dst} exists; use --force to overwrite it")
    return outputs


def deblur(data: np.ndarray, plan: Plan, compute: Compute) -> tuple[np.ndarray, str]:
    """Deblur one ``(C, H, W)`` image; return it and a short description of what was done."""
    if plan.method == "exact":
        return deblur_exact(data, plan.kernel, compute), f"exact ({plan.kernel.orientation})"
    lam = choose_lambda(data) if plan.lam is None else plan.lam
    if plan.precondition == "auto":
        preconditioner = pick_preconditioner(plan.psf, plan.kernel, data.shape[1:], lam)
    else:
        preconditioner = plan.kernel if plan.precondition == "causal" else None
    result = deblur_tikhonov(
        data, plan.psf, lam, compute, preconditioner=preconditioner, rtol=plan.rtol, maxiter=plan.maxiter
    )
    stopped = "" if result.converged else f", stopped at --maxiter before --rtol {plan.rtol:g}"
    pre = ", causal preconditioner" if preconditioner is not None else ""
    return result.image, f"tikhonov (lambda {result.lam:.3g}, {result.iterations} CG iterations{pre}{stopped})"


def run(args) -> None:
    """The ``apply`` command: validate everything, then deblur and write each input."""
    psf = psf_from_args(args)
    plan = plan_from_args(args, psf)
    compute = resolve_device(args.device)
    files, from_folder = list_inputs(args.inputs)
    many = from_folder or len(files) > 1
    to_folder = many or args.output.endswith(("/", os.sep))
    outputs = plan_outputs(files, Path(args.output), to_folder, args.force)
    for path, output in zip(files, outputs):
        image = read_image(path)
        check_writable(output, image.dtype, image.channels)
    if plan.note:
        print(f"invconv-deblur: note: {plan.note}", file=sys.stderr)
    report = tqdm.write if many else print
    for path, output in tqdm(list(zip(files, outputs)), desc="deblurring", unit="image", disable=not many):
        image = read_image(path)
        start = time.perf_counter()
        restored, how = deblur(image.data, plan, compute)
        seconds = time.perf_counter() - start
        write_image(output, restored, image.dtype)
        report(f"{path} -> {output}: {how}, {seconds:.2f} s")
