"""``invconv-flow``: the argument parser and the entry point.

Every user error (bad input, refused request, usage error), a diverged training
run and too little memory end with exit code 2 and one line on stderr,
``invconv-flow: error: <what is wrong>``, and no new output file; Ctrl-C and
SIGTERM with 130 and 143 (:mod:`.program`); 1 is an unexpected error (a bug).
"""

from __future__ import annotations

import argparse

import torch

from invconv_cupy.cli.entry import OneLineParser, run_subcommand, wrap

from .bench import BENCH_DEPTH
from .data import BUILTIN
from .device import DEVICES
from .model import MODELS
from .program import PROG
from .train import DEFAULTS


def _add_architecture(parser, depth: int) -> None:
    """-L, -K, --hidden, --kernel-size; their defaults (shown in the help) are filled in by the command."""
    parser.add_argument("-L", "--scales", type=int, metavar="L",
                        help=f"levels of the multi-scale flow (default {DEFAULTS['scales']})")
    parser.add_argument("-K", "--depth", type=int, metavar="K", help=f"flow steps per level (default {depth})")
    parser.add_argument("--hidden", type=int, metavar="N",
                        help=f"hidden channels of each coupling network (default {DEFAULTS['hidden']})")
    parser.add_argument("--kernel-size", type=int, metavar="N",
                        help=f"inverse convolutions' kernel size (default {DEFAULTS['kernel_size']})")


def build_parser() -> argparse.ArgumentParser:
    """The ``invconv-flow`` parser with its ``train``, ``evaluate``, ``sample`` and ``bench`` subcommands."""
    parser = OneLineParser(
        prog=PROG,
        description=wrap("Inverse-Flow: normalizing flows whose data-to-latent pass runs inverse convolutions, so "
                          "that sampling needs only convolutions. Train them, score them in bits per dimension, "
                          "sample them, time them against Glow and against sampling by solve."),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,sample,bench}")
    data_help = (f"{', '.join(BUILTIN)}, a .npy/.npz uint8 array (N, H, W[, C]) (a .npz: one array, or x_train "
                 "and x_test), or a folder of equally sized grey or RGB images")

    train = commands.add_parser(
        "train", help="train a flow by maximum likelihood, with validation and checkpoints",
        description=wrap("Train a flow on dequantized images with Adam; a progress bar shows the running training "
                          "bits per dimension and the last validation score. The checkpoint (model, training "
                          "configuration, optimizer and random state) is written at every validation and at the end; "
                          "--resume continues a run exactly."),
    )
    train.add_argument("--data", metavar="DATA", help=data_help)
    train.add_argument("-o", "--output", metavar="CHECKPOINT", help="checkpoint file to write (e.g. run.pt)")
    train.add_argument("--resume", metavar="CHECKPOINT",
                       help="continue this checkpoint's run up to --steps (written back to it unless -o)")
    train.add_argument("--model", choices=MODELS, help=f"the flow (default {DEFAULTS['model']})")
    _add_architecture(train, DEFAULTS["depth"])
    train.add_argument("--steps", type=int, metavar="N", help=f"total optimizer steps (default {DEFAULTS['steps']})")
    train.add_argument("--batch", type=int, metavar="N", help=f"images per step (default {DEFAULTS['batch']})")
    train.add_argument("--lr", type=float, metavar="LR", help=f"Adam's learning rate (default {DEFAULTS['lr']})")
    train.add_argument("--val-every", type=int, metavar="N",
                       help=f"validate and write the checkpoint every N steps (default {DEFAULTS['val_every']})")
    train.add_argument("--val-fraction", type=float, metavar="F",
                       help=f"share of your own data set aside for validation (default {DEFAULTS['val_fraction']}; "
                       "built-in sets have their own split)")
    train.add_argument("--levels", type=int, metavar="N",
                       help="values per dimension of your own data (default 256: 0..255)")
    train.add_argument("--seed", type=int, metavar="S",
                       help=f"seeds the initialization, batches and noise (default {DEFAULTS['seed']})")
    _add_device(train)
    train.add_argument("--force", action="store_true", help="overwrite an existing output file")

    evaluate = commands.add_parser(
        "evaluate", help="test bits per dimension: mean and confidence interval over several dequantization draws",
        description=wrap("Score a checkpoint on held-out images: bits per dimension for the data's number of "
                          "levels, averaged over several uniform dequantization draws, with a Student-t confidence "
                          "interval over the images."),
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT")
    evaluate.add_argument("--data", metavar="DATA",
                          help="held-out data (default: the checkpoint's data's test split); " + data_help)
    evaluate.add_argument("--draws", type=int, default=4, metavar="N", help="dequantization draws (default 4)")
    evaluate.add_argument("--batch", type=int, default=500, metavar="N", help="images per batch (default 500)")
    evaluate.add_argument("--confidence", type=float, default=0.95, metavar="P",
                          help="confidence level of the interval (default 0.95)")
    evaluate.add_argument("--seed", type=int, default=0, metavar="S", help="seeds the dequantization noise (default 0)")
    evaluate.add_argument("--json", action="store_true", help="print the result as one JSON object")
    _add_device(evaluate)

    sample = commands.add_parser(
        "sample", help="draw images into a PNG grid",
        description=wrap("Draw images from a checkpoint's flow and write them as a PNG grid with gaps between "
                          "them; the temperature scales the priors' standard deviations."),
    )
    sample.add_argument("checkpoint", metavar="CHECKPOINT")
    sample.add_argument("-o", "--output", required=True, metavar="PNG", help="the grid, a .png file")
    sample.add_argument("--count", type=int, default=64, metavar="N", help="images to draw (default 64)")
    sample.add_argument("--temperature", type=float, default=0.7, metavar="T", help="prior temperature (default 0.7)")
    sample.add_argument("--columns", type=int, metavar="N", help="images per row (default: a square grid)")
    sample.add_argument("--gap", type=int, default=2, metavar="PX", help="white pixels between images (default 2)")
    sample.add_argument("--zoom", type=int, default=1, metavar="N", help="enlarge each pixel N times (default 1)")
    sample.add_argument("--seed", type=int, default=0, metavar="S", help="seeds the draw (default 0)")
    _add_device(sample)
    sample.add_argument("--force", action="store_true", help="overwrite an existing output file")

    bench = commands.add_parser(
        "bench", help="time sampling and a training step: inverse_flow vs glow vs solve_sampling_flow",
        description=wrap("Time sampling (a batch of images from the priors through every flow) and one training "
                          "step (log-likelihood, backward, Adam) of inverse_flow, glow and solve_sampling_flow, built "
                          "alike, at each image size; median of --repeats after a warm-up, with the ratios "
                          "inverse_flow/glow and inverse_flow/solve_sampling_flow. Defaults: the paper's L=2, K=16, "
                          "batch 100; sizes 16..256 on a GPU, 16 and 32 on the CPU."),
    )
    bench.add_argument("--sizes", type=int, nargs="+", metavar="S", help="square image sizes")
    bench.add_argument("--batch", type=int, default=100, metavar="N", help="images per batch (default 100)")
    bench.add_argument("--channels", type=int, default=3, metavar="C", help="image channels (default 3)")
    _add_architecture(bench, BENCH_DEPTH)
    bench.add_argument("--repeats", type=int, default=5, metavar="N", help="timed runs per measurement (default 5)")
    bench.add_argument("--seed", type=int, default=0, metavar="S", help="seeds the models and data (default 0)")
    bench.add_argument("--profile", action="store_true",
                       help="also show where one sampling pass spends its time, by kind of layer")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    _add_device(bench)
    bench.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    return parser


def _add_device(parser) -> None:
    """--device and -v, which every command takes."""
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when torch and CuPy can use a GPU, else CPU")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print each warning of the libraries used (default: one summary line)")


def main(argv=None) -> int:
    """Run ``invconv-flow`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    As ``invconv-deblur`` (:func:`invconv_cupy.cli.entry.run_subcommand`): warnings
    from the libraries used end a successful run as one summary line (``-v``:
    each); a failed one shows only its error.

    Returns
    -------
    int
        0 on success, 2 for a user error, a diverged training run or too little
        memory (one line on stderr), 130 on Ctrl-C.
    """
    return run_subcommand(PROG, argv, build_parser, __package__,
                          memory_errors=(MemoryError, torch.cuda.OutOfMemoryError), memory_hint="try a smaller --batch")
