"""Evaluate checkpoints: ``python -m lit_ebm.evaluate --ckpt A.ckpt [B.ckpt ...] --out DIR``.

A command line over :mod:`lit_ebm.evaluation` (docs/evaluation.md): sample quality on fixed
features, bits/dim, and for EBMs their own bits/dim and resampled samples, beside a
real-versus-real row, against the validation split (``--split val``, the default) or the
test set (``--split test``: nothing else in lit_ebm reads it). Writes ``DIR/results.json``,
``DIR/results.md`` and ``DIR/samples.png`` and prints the table. Exit codes: 0 done, 2 bad
input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys

from lit_ebm.errors import EXIT_USAGE, ConfigError, first_line
from lit_ebm.evaluation import KID_SUBSET_SIZE, EvaluationSettings, evaluate, markdown_table
from lit_ebm.evaluation.settings import LOG_Z_PROPOSALS, SPLITS

PROG = "python -m lit_ebm.evaluate"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Sample quality (FID, KID, precision, recall, density, coverage on offline "
                    "features), bits/dim, and for EBMs their own bits/dim and resampled samples, "
                    "of lit_ebm checkpoints, beside a real-versus-real row.",
        epilog=f"Example:\n  {PROG} --ckpt runs/quickstart/version_0/checkpoints/last.ckpt "
               "--out eval/quickstart\nExit codes: 0 done, 2 bad input.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", nargs="+", required=True, metavar="CKPT",
                        help="checkpoints of one image data set")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for results.json, results.md and samples.png")
    parser.add_argument("--num-samples", type=int, default=1000, metavar="N",
                        help="images per row (default 1000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S")
    parser.add_argument("--kid-subset-size", type=int, default=None, metavar="K",
                        help=f"default {KID_SUBSET_SIZE}, or the validation split's size if "
                             "smaller")
    parser.add_argument("--batch-size", type=int, default=256, metavar="B",
                        help="images per forward pass (default 256)")
    parser.add_argument("--data", default=None, metavar="NAME",
                        help="the data set, for checkpoints that do not record it")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="data.root to read the data from (default: as in training)")
    parser.add_argument("--split", choices=SPLITS, default="val",
                        help="what every figure is measured against: val (default), the "
                             "validation split carved from the training files, on which the run "
                             "chose its checkpoint; or test, the official test set, for final "
                             "figures (mnist, fashion_mnist, cifar10)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[], metavar="T",
                        help="a row per temperature T besides 1 for every checkpoint's "
                             "generator (flows: latent scaled by T; PixelCNN: logits / T), e.g. "
                             "--temperatures 0.8 0.9")
    parser.add_argument("--inception-weights", default=None, metavar="FILE",
                        help="cifar10: a local weights-inception-2015-12-05-6726825d.pth")
    parser.add_argument("--device", default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the networks (a first call of minutes on a CPU; "
                             "eager, said in one line, where it cannot work)")
    add_ebm_arguments(parser.add_argument_group(
        "EBM checkpoints", "the EBM's own rows, beside its generator's"))
    return parser


def add_ebm_arguments(group: argparse._ArgumentGroup) -> None:
    """The flags that only an EBM's checkpoint reads: its samplers and its log Z."""
    group.add_argument("--candidates", type=int, default=16, metavar="M",
                       help="generator samples per resampled EBM sample (default 16)")
    group.add_argument("--log-z-proposal", choices=LOG_Z_PROPOSALS, default="mixture",
                       help="the proposal of the EBM's importance-sampling log Z for a residual "
                            "energy E = f - log q0: mixture (default), half the draws from the "
                            "generator q and half from q0; base, q0 alone; q, the generator "
                            "alone. Other energies always use q")
    group.add_argument("--log-z-annealing", type=int, default=0, metavar="K",
                       help="an EBM over a flow: its log Z by annealed importance sampling "
                            "(Neal 2001) from the flow's density to the EBM over K "
                            "temperatures, one MALA step each, one chain per sample, instead "
                            "of importance sampling (default 0: importance sampling)")
    group.add_argument("--mcmc-steps", type=int, default=0, metavar="K",
                       help="an EBM over a flow: a row of samples by MALA in the flow's latent "
                            "space, K steps per chain after the burn-in (default 0: no MALA "
                            "row; each step costs a decode, an energy and a backward pass per "
                            "sample, e.g. 100 after 100 took 0.43 s per sample on a 2-core CPU)")
    group.add_argument("--mcmc-burn-in", type=int, default=100, metavar="B",
                       help="MALA steps that adapt the step size before those K (default 100)")


def parse_args(argv: list[str] | None) -> EvaluationSettings:
    """The settings the command line asks for (argparse exits 2 on malformed flags)."""
    words = list(sys.argv[1:] if argv is None else argv)
    values = vars(build_parser().parse_args(words))
    return EvaluationSettings(checkpoints=values.pop("ckpt"), **values,
                              command=" ".join([PROG, *words]))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    settings = parse_args(argv)
    try:
        results = evaluate(settings)
    except ConfigError as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    print(markdown_table(results), end="")
    print(f"{len(results.rows)} rows in {results.seconds:.1f} s; written to "
          f"{settings.out}/results.json, results.md, samples.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
