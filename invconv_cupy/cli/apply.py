"""``invconv-deblur apply``: deblur files with a known PSF.

Everything is checked before anything is written: the PSF, the device, every
input (read once to validate: readable, not smaller than the PSF, stable for
``--method exact``), every output path (type, existing files, collisions).
Then each image is deblurred and written atomically.
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

from .choice import choose
from .device import Compute, resolve_device
from .errors import CliError
from .images import ARRAY_SUFFIXES, SUFFIXES, check_writable, list_inputs, read_image, write_image
from .methods import choose_lambda, deblur_exact, deblur_tikhonov
from .noise import estimate_noise
from .psf import CausalKernel, NotSafeForExact, crop_to_support, exact_kernel, gaussian_psf, load_psf, motion_psf
from .stability import InverseResponse, check_stable, response_for


@dataclass(frozen=True)
class Plan:
    """How every image is deblurred.

    Attributes
    ----------
    method : {"exact", "tikhonov"} or None
        None: chosen per image by the data (:mod:`choice`).
    psf : numpy.ndarray
    kernel : CausalKernel or None
        The PSF as a causal kernel (None where it is not one; ``not_causal`` says why).
    not_causal : str or None
    boundary : {"unknown", "zero"} or None
        None: ``"zero"`` for ``.npy`` inputs, ``"unknown"`` for image files.
    precondition : {"fourier", "causal", "none"}
    lam : float or None
        Tikhonov's weight; None: chosen per image from its data.
    maxiter, rtol
        Tikhonov's CG settings.
    """

    method: str | None
    psf: np.ndarray
    kernel: CausalKernel | None
    not_causal: str | None
    boundary: str | None
    precondition: str
    lam: float | None
    maxiter: int
    rtol: float

    def boundary_of(self, path: Path) -> str:
        """The boundary model for the input ``path``."""
        if self.boundary is not None:
            return self.boundary
        return "zero" if path.suffix.lower() in ARRAY_SUFFIXES else "unknown"


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
    """Check the method's options and find the PSF's causal kernel."""
    if args.lam is not None and not (math.isfinite(args.lam) and args.lam >= 0):
        raise CliError(f"--lam must be a finite number >= 0, got {args.lam}")
    if args.maxiter < 1:
        raise CliError(f"--maxiter must be at least 1, got {args.maxiter}")
    if not (math.isfinite(args.rtol) and 0 < args.rtol < 1):
        raise CliError(f"--rtol must be in (0, 1), got {args.rtol}")
    tikhonov_options = args.lam is not None or args.precondition != "fourier"
    if args.method == "exact" and tikhonov_options:
        raise CliError("--lam and --precondition apply only to --method tikhonov")
    kernel, not_causal = None, None
    try:
        kernel = exact_kernel(psf, args.orientation)
    except NotSafeForExact as exc:
        if args.method == "exact":
            raise
        not_causal = exc.reason
    if args.precondition == "causal" and kernel is None:
        raise CliError(f"--precondition causal needs a causal PSF, but {not_causal}")
    method = "tikhonov" if args.method is None and tikhonov_options else args.method
    return Plan(method, psf, kernel, not_causal, args.boundary, args.precondition, args.lam, args.maxiter, args.rtol)


def plan_outputs(files: list[Path], output: Path, many: bool, force: bool) -> list[Path]:
    """Output path of each input, checked against existing files and collisions.

    With ``many`` (several inputs, a folder input, or an output named with a
    trailing slash), ``output`` is a folder and each file keeps its name; else
    ``output`` is the file (or an existing folder to put it in).
    """
    if many:
        if output.exists() and not output.is_dir():
            raise CliError(f"output {output} must be a folder when there are several inputs or a folder input")
        if not output.exists() and output.suffix.lower() in SUFFIXES:
            raise CliError(
                f"-o {output} names a file, but there are {len(files)} inputs; name a folder (e.g. {output.stem}/)"
            )
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


def check_fits(psf: np.ndarray, path: Path, shape: tuple[int, int]) -> None:
    """Refuse an image smaller than the PSF (nothing of the picture would be left to recover)."""
    kh, kw = crop_to_support(psf).shape
    if kh > shape[0] or kw > shape[1]:
        raise CliError(f"the PSF ({kh} x {kw}) is larger than {path} ({shape[0]} x {shape[1]})")


def _tikhonov(data: np.ndarray, plan: Plan, boundary: str, sigma: float, compute: Compute):
    lam = choose_lambda(data, sigma) if plan.lam is None else plan.lam
    result = deblur_tikhonov(
        data, plan.psf, lam, compute, boundary=boundary, precondition=plan.precondition, kernel=plan.kernel,
        rtol=plan.rtol, maxiter=plan.maxiter,
    )
    stopped = "" if result.converged else f", stopped at --maxiter before --rtol {plan.rtol:g}"
    pre = "" if plan.precondition == "fourier" else f", {plan.precondition} preconditioner"
    how = f"tikhonov (lambda {result.lam:.3g}, {result.iterations} CG iterations{pre}{stopped}, {boundary} boundary)"
    return result, how


def _exact(data: np.ndarray, plan: Plan, boundary: str, response: InverseResponse, compute: Compute):
    # The mirror reaches as far as the inverse's response matters (all of the computed extent if it never settles).
    extension = (response.settled_distance() or response.extent) if boundary == "unknown" else 0
    image = deblur_exact(data, plan.kernel, compute, extension)
    return image, f"exact ({plan.kernel.orientation}, {boundary} boundary)"


def deblur(data: np.ndarray, plan: Plan, boundary: str, response: InverseResponse | None, compute: Compute):
    """Deblur one ``(C, H, W)`` image; return it and one line saying what was done (and, by default, why).

    ``response`` is the exact inverse's impulse response (None where the PSF is not causal).
    """
    if plan.method == "exact":
        return _exact(data, plan, boundary, response, compute)
    sigma = estimate_noise(data, plan.psf)
    result, how = _tikhonov(data, plan, boundary, sigma, compute)
    if plan.method == "tikhonov":
        return result.image, how
    if plan.kernel is None:
        return result.image, f"{how}; default method: tikhonov, exact impossible ({plan.not_causal})"
    try:
        check_stable(response, data.shape[1:])
    except NotSafeForExact as exc:
        return result.image, f"{how}; default method: tikhonov, exact refused ({exc.reason})"
    exact, exact_how = _exact(data, plan, boundary, response, compute)
    choice = choose(exact, result.image, plan.psf, result.lam, sigma, response, boundary)
    if choice.method == "exact":
        return exact, f"{exact_how}; default method: {choice.reason()}"
    return result.image, f"{how}; default method: {choice.reason()}"


def run(args) -> None:
    """The ``apply`` command: validate everything, then deblur and write each input."""
    psf = psf_from_args(args)
    plan = plan_from_args(args, psf)
    compute = resolve_device(args.device)
    files, from_folder, skipped = list_inputs(args.inputs)
    if skipped and args.strict:
        raise CliError(f"{skipped[0]} is not a supported image ({', '.join(SUFFIXES)}); --strict refuses it")
    if plan.precondition == "causal":
        for path in files:
            if plan.boundary_of(path) != "zero":
                raise CliError(f"--precondition causal needs the zero boundary, but {path} has {plan.boundary_of(path)}"
                               " (the default for image files); add --boundary zero")
    many = from_folder or len(files) > 1
    to_folder = many or args.output.endswith(("/", os.sep))
    outputs = plan_outputs(files, Path(args.output), to_folder, args.force)
    shapes = []
    for path, output in zip(files, outputs):
        image = read_image(path)
        check_writable(output, image.dtype, image.channels, alpha=image.alpha is not None)
        check_fits(psf, path, image.data.shape[1:])
        shapes.append(image.data.shape[1:])
    response = response_for(plan.kernel, max(shapes, key=max)) if plan.kernel is not None else None
    if plan.method == "exact":
        for path, shape in zip(files, shapes):
            try:
                check_stable(response, shape)
            except NotSafeForExact as exc:
                raise CliError(f"{path}: {exc}") from None
    for path in skipped:
        print(f"invconv-deblur: skipping {path}: not a supported image ({', '.join(SUFFIXES)})", file=sys.stderr)
    report = tqdm.write if many else print
    for path, output in tqdm(list(zip(files, outputs)), desc="deblurring", unit="image", disable=not many):
        image = read_image(path)
        start = time.perf_counter()
        restored, how = deblur(image.data, plan, plan.boundary_of(path), response, compute)
        seconds = time.perf_counter() - start
        write_image(output, restored, image.dtype, alpha=image.alpha)
        report(f"{path} -> {output}: {how}, {seconds:.2f} s")
