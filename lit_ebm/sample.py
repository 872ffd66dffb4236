"""Sample a checkpoint: ``python -m lit_ebm.sample --ckpt CKPT --method M --out DIR``.

A command line over :func:`lit_ebm.sampling.sample_ebm` for image checkpoints (2-D toy
checkpoints are refused). Writes ``DIR/samples.png`` (a grid of the first 100) and
``DIR/samples.npz`` and prints one summary line. Exit codes: 0 done, 2 bad input (one line on
stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.utils import save_image

from lit_ebm.compilation import compile_networks
from lit_ebm.errors import (
    EXIT_USAGE,
    ConfigError,
    InvalidArgument,
    NonFiniteSamplesError,
    first_line,
)
from lit_ebm.evaluation.loading import load_checkpoint
from lit_ebm.evaluation.report import prepare_out
from lit_ebm.evaluation.settings import default_device, torch_device
from lit_ebm.generators import to_levels
from lit_ebm.modules import AdversarialEBM
from lit_ebm.progress import Progress
from lit_ebm.sampling import DEFAULTS, METHODS, sample_ebm

PROG = "python -m lit_ebm.sample"
GRID_IMAGES = 100
MCMC, IMH = DEFAULTS["mcmc"], DEFAULTS["imh"]
OPTION_FLAGS = {  # passed on only when given, so that each method's defaults apply
    "temperature": (float, "T", "generator: sample q at temperature T (flows: latent "
                                "N(0, T^2 I); PixelCNN: logits / T; default 1)"),
    "candidates": (int, "M", f"sir: draws of q per sample (default "
                             f"{DEFAULTS['sir']['candidates']})"),
    "steps": (int, "K", f"mcmc: transitions after burn-in (default {MCMC['steps']}); imh: "
                        f"proposals per chain (default {IMH['steps']})"),
    "burn_in": (int, "B", f"mcmc: transitions adapting the step size first (default "
                          f"{MCMC['burn_in']})"),
    "step_size": (float, "H", f"mcmc: the initial step size (default {MCMC['step_size']})"),
    "target_accept": (float, "A", f"mcmc: the acceptance rate the step size is adapted toward "
                                  f"(default {MCMC['target_accept']})")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw samples of an image checkpoint's EBM (or of its generator) and write "
                    "them as DIR/samples.png and DIR/samples.npz: 'images', uint8 levels of "
                    "shape (N, H, W, C), beside the method, its options, the acceptance rate, "
                    "the adapted step size, the seed and the seconds taken.",
        epilog=f"Example:\n  {PROG} --ckpt runs/adv/version_0/checkpoints/last.ckpt --method "
               "mcmc --num-samples 64 --out samples/adv\nExit codes: 0 done, 2 bad input.")
    parser.add_argument("--ckpt", required=True, metavar="CKPT", help="an image checkpoint")
    parser.add_argument("--method", required=True, metavar="{" + ",".join(METHODS) + "}",
                        help="generator: q's own draws (the only one for maximum-likelihood "
                             "checkpoints); sir: resampled from --candidates draws of q; mcmc: "
                             "MALA in a flow's latent space (RealNVP); imh: independence "
                             "Metropolis-Hastings with q as proposal (any generator)")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--num-samples", type=int, default=64, metavar="N", help="default 64")
    parser.add_argument("--seed", type=int, default=0, metavar="S")
    for name, (kind, metavar, text) in OPTION_FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, metavar=metavar, help=text)
    parser.add_argument("--base-mixture", action="store_true",
                        help="imh with a residual energy: propose from (q + q0) / 2")
    parser.add_argument("--batch-size", type=int, default=256, metavar="B",
                        help="samples (chains) per batch (default 256)")
    parser.add_argument("--data", default=None, metavar="NAME",
                        help="the data set, for checkpoints that do not record it")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the networks (a first call of minutes on a CPU; "
                             "eager, said in one line, where it cannot work)")
    return parser


def draw(args: argparse.Namespace) -> dict[str, Any]:
    """Sample as ``args`` say and write the two files; the record stored beside the images."""
    device = args.device or default_device()
    if (expected := torch_device(device)) is not None:
        raise ConfigError(f"invalid value {device!r} for '--device': expected {expected}")
    checkpoint = load_checkpoint(args.ckpt, args.data, device)
    module = checkpoint.module
    if args.compile:
        compile_networks(module.networks(), torch.device(device).type)
    options = {name: getattr(args, name) for name in OPTION_FLAGS
               if getattr(args, name) is not None}
    if args.base_mixture:
        options["base_mixture"] = True
    energy = module.energy if isinstance(module, AdversarialEBM) else None
    out = Path(args.out)
    prepare_out(out)
    torch.manual_seed(args.seed)
    with Progress(args.num_samples, args.method) as bar:
        samples = sample_ebm(module.generator, energy, args.num_samples, args.method,
                             batch_size=args.batch_size, progress=bar.update, **options)
    try:
        levels = to_levels(samples.x, module.generator.discrete)
    except NonFiniteSamplesError as err:
        raise ConfigError(f"--ckpt '{args.ckpt}': {err}") from None
    save_image(levels[:GRID_IMAGES].float() / 255, out / "samples.png", nrow=10)
    record = {**samples.record(), "seed": args.seed, "ckpt": str(args.ckpt)}
    np.savez_compressed(out / "samples.npz", images=levels.permute(0, 2, 3, 1).numpy(),
                        **record)
    return record


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        record = draw(args)
    except (ConfigError, InvalidArgument) as err:
        message = first_line(err)
        if isinstance(err, InvalidArgument) and hasattr(args, err.argument):
            message = (f"invalid value {getattr(args, err.argument)!r} for "
                       f"'--{err.argument.replace('_', '-')}': {message}")
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    figures = [f"{record['num_samples']} samples by {record['method']}"]
    if "acceptance_rate" in record:
        figures.append(f"acceptance {record['acceptance_rate']:.3f}")
    if "adapted_step_size" in record:
        figures.append(f"step size {record['adapted_step_size']:.4g}")
    seconds = record["seconds"] / record["num_samples"]
    print(f"{', '.join(figures)}; {seconds:.3g} s per sample; written to {args.out}/samples.npz, "
          "samples.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
