"""Variance of the PixelCNN's score-function gradient of L_G, with and without a baseline.

The generator step of a discrete generator differentiates the surrogate
mean_i stopgrad(f_i - b_i) log q(x_i), with f_i = E(x_i) + log q(x_i) (docs/mathematics.md).
At a trained ``AdversarialEBM`` checkpoint, this draws ``--batches`` independent batches and,
on each, takes the gradient over the generator's parameters of the surrogate

- with no baseline (b_i = 0): plain REINFORCE;
- with the leave-one-out baseline (b_i = mean over j != i of f_j; Kool et al. 2019), as
  training does (``objectives.generator_loss_score_function``).

Both are unbiased estimates of the same gradient, so they should agree in mean; the figure of
merit is the variance over batches, summed over parameters (the trace of the covariance).

Usage: ``python benchmarks/pixelcnn_gradient_variance.py --checkpoint ADV.ckpt [--batches 50]
[--batch-size 64]``.
Prints the figures and writes ``benchmarks/results/pixelcnn_gradient_variance.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from results_file import report
from torch import Tensor

from lit_ebm import objectives
from lit_ebm.modules import AdversarialEBM, load_module


def flat_gradient(loss: Tensor, params: list[torch.nn.Parameter]) -> Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, params, strict=True)]).double()


def summary(gradients: Tensor) -> dict[str, float]:
    """Trace of the covariance over batches, and the squared norm of the mean gradient."""
    return {"variance_trace": float(gradients.var(dim=0).sum()),
            "mean_gradient_squared_norm": float(gradients.mean(dim=0).square().sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="an AdversarialEBM PixelCNN checkpoint")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64, help="as in training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    module = load_module(args.checkpoint, map_location="cpu").eval()
    if not isinstance(module, AdversarialEBM):
        raise SystemExit(f"{args.checkpoint} holds no energy: pass an AdversarialEBM checkpoint")
    if not module.generator.discrete:
        raise SystemExit(f"{args.checkpoint} holds a continuous generator: the score-function "
                         "estimator is for discrete ones (PixelCNN)")
    batch_size = args.batch_size
    torch.manual_seed(args.seed)
    params = list(module.generator.parameters())
    by_estimator: dict[str, list[Tensor]] = {"no_baseline": [], "leave_one_out": []}
    start = time.perf_counter()
    for _ in range(args.batches):
        x, _ = module.generator.sample(batch_size)
        log_q = module.generator.log_prob(x)
        with torch.no_grad():
            energy = module.energy(x)
        cost = (energy + log_q).detach()
        by_estimator["no_baseline"].append(flat_gradient((cost * log_q).mean(), params))
        by_estimator["leave_one_out"].append(flat_gradient(
            objectives.generator_loss_score_function(energy, log_q), params))
    results = {
        "checkpoint": str(Path(args.checkpoint)),
        "batches": args.batches,
        "batch_size": batch_size,
        "num_parameters": sum(p.numel() for p in params),
        "seconds": time.perf_counter() - start,
        **{name: summary(torch.stack(grads)) for name, grads in by_estimator.items()},
    }
    results["variance_ratio_no_baseline_over_leave_one_out"] = (
        results["no_baseline"]["variance_trace"] / results["leave_one_out"]["variance_trace"])
    report("pixelcnn_gradient_variance", results)


if __name__ == "__main__":
    main()
