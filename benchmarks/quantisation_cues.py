"""Cues below 8-bit quantisation: how much of an adversarial RealNVP's discriminator rests on
values no saved image shows.

For each ``AdversarialEBM`` checkpoint of a continuous generator this draws ``--num-samples``
generated digits x ~ q and reports

- ``out_of_range``: the fraction of generated values outside [0, 1), where dequantised data
  x = (k + u) / 256 never are (a RealNVP's logit transform reaches (-0.056, 1.056));
- ``level_0``: the fraction of generated values at level 0, k = floor(256 x) <= 0, beside the
  validation digits' fraction (a sign that the generator learns the black background);
- the discriminator's accuracy, D(x) = sigmoid(-E(x) - log Z - log q(x)) with the learned
  log Z, on the validation digits (D > 1/2), on the generated digits (D < 1/2), and on the same
  generated digits re-quantised to 8 bits and dequantised again, x' = (k + u') / 256 with
  k = clamp(floor(256 x), 0, 255) and fresh u': a drop from the second to the third is the part
  of the discriminator's accuracy that rests on what quantisation removes.

Usage: ``python benchmarks/quantisation_cues.py --checkpoint ADV.ckpt [ADV2.ckpt ...]
[--num-samples 500] [--seed 0]``. Prints the figures and writes
``benchmarks/results/quantisation_cues.json`` (one entry per checkpoint).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from results_file import report
from torch import Tensor

from lit_ebm import objectives
from lit_ebm.evaluation.loading import load_checkpoint
from lit_ebm.evaluation.reference import data_module, split_images
from lit_ebm.generators.base import to_levels
from lit_ebm.modules import AdversarialEBM
from lit_ebm.modules.training_stats import out_of_range_fraction


def fake_accuracy(module: AdversarialEBM, x: Tensor) -> float:
    """The share of ``x`` the discriminator calls generated (D(x) < 1/2)."""
    logits = objectives.discriminator_logits(module.energy_of(x), module.log_z,
                                             module.log_q(x))
    return float((logits < 0).float().mean())


@torch.no_grad()
def cues(module: AdversarialEBM, real: Tensor, num_samples: int) -> dict[str, Any]:
    """The figures of the module docstring for one checkpoint."""
    x, _ = module.generator.sample(num_samples)
    levels = to_levels(x, discrete=False).float()
    requantised = (levels + torch.rand_like(levels)) / 256
    return {
        "out_of_range": float(out_of_range_fraction(x)),
        "level_0": float((levels == 0).float().mean()),
        "data_level_0": float((to_levels(real, discrete=False) == 0).float().mean()),
        "d_acc_real": 1.0 - fake_accuracy(module, real),
        "d_acc_fake": fake_accuracy(module, x),
        "d_acc_fake_requantised": fake_accuracy(module, requantised),
        "learned_log_z": float(module.log_z),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="+", required=True,
                        help="AdversarialEBM checkpoints of a continuous generator")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results: dict[str, Any] = {"num_samples": args.num_samples, "seed": args.seed,
                               "checkpoints": {}}
    for path in args.checkpoint:
        checkpoint = load_checkpoint(path)
        module = checkpoint.module
        if not isinstance(module, AdversarialEBM) or module.generator.discrete:
            raise SystemExit(f"{path}: pass an AdversarialEBM checkpoint of a continuous "
                             "generator (a RealNVP)")
        datamodule = data_module(checkpoint.data, None, dequantise=True)
        real = torch.stack(list(split_images(datamodule, "val")))
        torch.manual_seed(args.seed)
        results["checkpoints"][path] = cues(module, real, args.num_samples)
    report("quantisation_cues", results)


if __name__ == "__main__":
    main()
