"""``invconv-deblur``: the argument parser and the entry point.

Exit codes: 0 success; 2 a user error (bad input, a refused request, a usage
error, a result that would be a wrong picture, not enough memory), with one
line on stderr, ``invconv-deblur: error: <what is wrong>``, and no output file;
130 after Ctrl-C (SIGINT) and 143 after SIGTERM, with ``invconv-deblur:
interrupted`` (or ``terminated``) and no temporary file left; 1 an unexpected
error (a bug: the traceback is printed).

The program (the console script, ``python -m invconv_cupy.cli``) starts in
:mod:`.program`, which installs the signal handlers before importing this module.
"""

from __future__ import annotations

import argparse
import sys

from .device import DEVICES
from .entry import OneLineParser, run_subcommand, wrap
from .extra import missing_cli_modules
from .program import PROG

_PSF_HELP = """\
PSF convention (as scikit-image's restoration functions):
  blurred = scipy.signal.convolve2d(sharp, psf, mode="same")
a true convolution, the PSF centred at (kh//2, kw//2) (odd height and width);
for what lies beyond the image, see apply's --boundary. A PSF whose nonzero
entries lie in one quadrant around its centre, with a nonzero centre, is a
causal convolution and can be inverted exactly; 'fit' writes kernels in this
convention.
"""


_ORIENTATIONS = ("auto", "TL", "TR", "BL", "BR")


def build_parser() -> argparse.ArgumentParser:
    """The ``invconv-deblur`` parser with its ``demo``, ``apply`` and ``fit`` subcommands."""
    parser = OneLineParser(
        prog=PROG,
        description=wrap("Deblur images with the exact inverse of a causal convolution (invconv_cupy), "
        "or with Tikhonov-regularized least squares; learn causal blur kernels."),
        epilog=_PSF_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,apply,fit}")

    demo = commands.add_parser(
        "demo",
        help="blur scikit-image's camera picture, deblur it with every method, print a table, write a PNG",
        description=wrap("Blur scikit-image's built-in camera picture with a causal motion kernel, add a little "
        "noise, deblur it with the exact inverse, tikhonov, and scikit-image's (unsupervised) Wiener and "
        "Richardson-Lucy; print PSNR, SSIM and seconds per method; write comparison.png, blurred.png and "
        "psf.npy (so 'apply blurred.png --psf psf.npy' repeats it)."),
    )
    demo.add_argument("--out", default="invconv-deblur-demo", metavar="DIR",
                      help="folder for the demo's files (default: ./invconv-deblur-demo)")
    demo.add_argument("--downsample", type=int, default=2, metavar="N",
                      help="average N x N blocks of the 512x512 picture first (default 2: 256x256; 1: full size)")
    _add_common(demo)

    apply = commands.add_parser(
        "apply",
        help="deblur images with a known PSF",
        description=wrap("Deblur images (PNG, JPEG, TIFF 8/16-bit grey or RGB, with or without alpha, palette "
        "images, float TIFF, .npy float arrays (H, W) or (H, W, C)) with a known PSF. Colour channels are deblurred "
        "together as one batch; alpha is passed through unchanged. The output keeps the input's dtype (integer "
        "images clipped to their range; .npy stays float)."),
        epilog=_PSF_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="image files or folders (their supported files; others are skipped with one line each)")
    apply.add_argument("--strict", action="store_true",
                       help="refuse a folder that holds files other than supported images, instead of skipping them")
    source = apply.add_mutually_exclusive_group(required=True)
    source.add_argument("--psf", metavar="PSF",
                        help="PSF file: .npy, .csv/.txt (numbers, kept as they are) or an image (scaled to sum 1)")
    source.add_argument("--motion", nargs=2, type=float, metavar=("LENGTH", "ANGLE"),
                        help="one-sided motion blur: a line of LENGTH pixels from the centre at ANGLE degrees "
                        "(counter-clockwise from +x)")
    source.add_argument("--gaussian", type=float, metavar="SIGMA",
                        help="isotropic Gaussian blur (not causal: tikhonov)")
    apply.add_argument("--decay", type=float, default=1.0, metavar="R",
                       help="with --motion: tap weights fall as R**distance "
                       "(default 1: uniform, whose inverse is unstable)")
    apply.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                       help="output file; a folder for several inputs or a folder input (files keep their names)")
    apply.add_argument("--method", choices=("exact", "tikhonov"),
                       help="exact: the causal solve (a quadrant-supported PSF whose inverse is stable on the image); "
                       "tikhonov: min ||k*x - y||^2 + lam ||grad x||^2 by conjugate gradients. Default: both where "
                       "exact is possible, keeping the one with the smaller error predicted from the estimated noise "
                       "(one line says which and why); tikhonov otherwise")
    apply.add_argument("--boundary", choices=("unknown", "zero"),
                       help="unknown: the picture goes on beyond the frame, as in a photograph (default for image "
                       "files); zero: it is zero there, as in a blur computed with zero padding (default for .npy)")
    apply.add_argument("--lam", type=float, metavar="L",
                       help="tikhonov's weight (default: chosen from the estimated noise level)")
    apply.add_argument("--orientation", choices=_ORIENTATIONS, default="auto",
                       help="the causal orientation for exact: auto (from the PSF's quadrant), TL, TR, BL, BR")
    apply.add_argument("--precondition", choices=("fourier", "causal", "none"), default="fourier",
                       help="tikhonov: CG's preconditioner. fourier (default): the periodic approximation of the "
                       "normal equations, inverted by FFTs; causal: the causal solve and its transpose (needs a causal "
                       "PSF and --boundary zero; fewer iterations at low noise, many more at high noise); none")
    apply.add_argument("--maxiter", type=int, default=300, metavar="N",
                       help="tikhonov: CG iteration limit (default 300)")
    apply.add_argument("--rtol", type=float, default=1e-5, metavar="T",
                       help="tikhonov: CG tolerance on the normal equations' residual, relative to their "
                       "right-hand side (default 1e-5)")
    _add_common(apply)

    fit = commands.add_parser(
        "fit",
        help="learn a causal kernel whose exact inverse maps BLURRED onto SHARP",
        description=wrap("Learn a causal blur kernel by L-BFGS-B (scipy.optimize) on "
        "0.5*mean((solve(blurred, w) - sharp)**2) plus a stability penalty (see --noise), with gradients from "
        "invconv_cupy.solve_vjp; images over 256x256 pixels are fitted on random windows. A progress line "
        "(iteration, loss) shows on a terminal. The kernel is written as a PSF in the convention below "
        "((2K-1) x (2K-1), nonzero in one quadrant); the last line says whether its exact inverse is stable and "
        "which 'apply' command deblurs with it."),
        epilog=_PSF_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("--sharp", required=True, metavar="S", help="the sharp image")
    fit.add_argument("--blurred", required=True, metavar="B", help="the blurred image, same shape")
    fit.add_argument("--size", required=True, type=int, metavar="K",
                     help="causal kernel size K (K x K taps, centre included); at most 32 and a quarter of the "
                     "image's smaller side")
    fit.add_argument("-o", "--output", required=True, metavar="KERNEL", help="output .npy file")
    fit.add_argument("--orientation", choices=_ORIENTATIONS, default="auto",
                     help="the kernel's quadrant; auto (default) fits all four and keeps the best (4x the time)")
    fit.add_argument("--maxiter", type=int, default=500, metavar="N", help="L-BFGS-B iteration limit (default 500)")
    fit.add_argument("--noise", type=float, metavar="SIGMA",
                     help="stability penalty: fit as if the blurred image carried white noise of this level more, "
                     "which an inverse that does not decay amplifies without bound (default: the rounding noise of "
                     "an integer blurred image's type, 1/(255*sqrt(12)) for 8 bits; 0 for float images; 0: no "
                     "penalty)")
    fit.add_argument("--seed", type=int, default=0, metavar="N",
                     help="random windows of a large image (more than 256x256 pixels) are drawn with this seed")
    _add_common(fit)
    return parser


def _add_common(parser):
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA (CuPy) when a GPU is available, else CPU (NumPy)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show every warning from the libraries used (default: at most a one-line summary)")


def main(argv=None) -> int:
    """Run ``invconv-deblur`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Warnings from the libraries used are collected: a successful run ends with a
    one-line summary of them, a failed one shows only its error; ``-v`` prints
    them all. In-process, Ctrl-C raises ``KeyboardInterrupt`` inside: partial
    outputs are removed on the way out and ``main`` returns 130. The program
    itself (:func:`.program.run_program`) ends at once on SIGINT and SIGTERM.

    Returns
    -------
    int
        0 on success, 2 for a user error (one line on stderr), 130 on Ctrl-C.
    """
    missing = missing_cli_modules()
    if missing:
        print(
            f"{PROG}: error: the command line needs the 'cli' extra ({', '.join(missing)} missing): "
            "pip install 'invconv-cupy[cli]' (from a clone: pip install -e '.[cli]')",
            file=sys.stderr,
        )
        return 2
    return run_subcommand(PROG, argv, build_parser, __package__)
