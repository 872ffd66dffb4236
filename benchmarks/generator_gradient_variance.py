"""Variance of the generator's gradient estimators at an adversarial checkpoint, old against new.

At a trained ``AdversarialEBM`` checkpoint this draws ``--batches`` independent generated
batches and, on each, takes the gradient over the generator's parameters of its loss under
two estimators of the same gradient (docs/mathematics.md):

- continuous generators (RealNVP): the pathwise L_G with log q on the sampling path
  (``pathwise``, the paper's default) against sticking the landing (``sticking_the_landing``,
  log q at fixed parameters; Roeder, Wu & Duvenaud 2017), both through
  ``AdversarialEBM.generator_loss``;
- discrete generators (PixelCNN): the score function with no baseline (``no_baseline``)
  against the leave-one-out baseline training uses (``leave_one_out``; Kool et al. 2019);
- both, for the ``forward_kl`` objective: self-normalised importance weights without a baseline
  (``forward_kl_no_baseline``) against the batch-mean baseline training uses (``forward_kl``;
  Korbak et al. 2022).

With ``--generated-batch-sizes N1 N2 ...`` it measures instead, for each size of the generated
batch (``model.generated_batch_size``), the variance of the L_G gradient training takes
(pathwise for continuous generators, the leave-one-out score function for discrete ones) and
the seconds one draw and its gradient take; the product of the two is the variance of the mean
of as many such gradients as one second buys, the figure that says which size spends a
second best (lower is better).

The two estimators of each pair have the same expectation, so their means agree up to noise;
the figure of merit is the variance over batches, summed over parameters (the trace of the
covariance), and its ratio within each pair. For continuous generators one more gradient is
reported alone, ``energy_net_path``: that of mean f(x) along the sampling path, f the energy's
learnable part (a residual energy's net, else the energy). It is the part of the
sticking-the-landing gradient that carries the energy's signal, so its variance is noise that
no estimator of the same gradient removes by dropping terms of mean zero.

Usage: ``python benchmarks/generator_gradient_variance.py --checkpoint ADV.ckpt
[--batches 50] [--batch-size 64 | --generated-batch-sizes 16 32 64]``. Prints the figures and
writes ``benchmarks/results/generator_gradient_variance_<generator>[_batch_sizes].json``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from results_file import report
from torch import Tensor

from lit_ebm import generator_objectives, objectives
from lit_ebm.modules import AdversarialEBM, load_module

PAIRS = (("pathwise", "sticking_the_landing"), ("no_baseline", "leave_one_out"),
         ("forward_kl_no_baseline", "forward_kl"), ("sticking_the_landing", "energy_net_path"))


def flat_gradient(loss: Tensor, params: list[torch.nn.Parameter]) -> Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, params, strict=True)]).double()


def summary(gradients: Tensor) -> dict[str, float]:
    """Trace of the covariance over batches, and the squared norm of the mean gradient."""
    return {"variance_trace": float(gradients.var(dim=0).sum()),
            "mean_gradient_squared_norm": float(gradients.mean(dim=0).square().sum())}


def continuous_estimators(module: AdversarialEBM, batch_size: int) -> dict[str, Tensor]:
    """The pathwise and sticking-the-landing losses of one generated batch."""
    fake = module.generate(batch_size, keep_graph=True)
    losses = {}
    for name, stl in (("pathwise", False), ("sticking_the_landing", True)):
        module.sticking_the_landing = stl
        losses[name] = module.generator_loss(fake, fake.x.detach())[0]
    losses["energy_net_path"] = module.learnable_energy(fake.x).mean()
    return losses | forward_kl_estimators(module, fake.x.detach())


def discrete_estimators(module: AdversarialEBM, batch_size: int) -> dict[str, Tensor]:
    """The score-function surrogates of one generated batch, without and with a baseline."""
    x, _ = module.generator.sample(batch_size)
    log_q = module.generator.log_prob(x)
    with torch.no_grad():
        energy = module.energy(x)
    cost = (energy + log_q).detach()
    return {"no_baseline": (cost * log_q).mean(),
            "leave_one_out": objectives.generator_loss_score_function(energy, log_q),
            **forward_kl_estimators(module, x)}


def forward_kl_estimators(module: AdversarialEBM, x: Tensor) -> dict[str, Tensor]:
    """The forward-KL losses of one generated batch x (detached), without and with the baseline,
    with log q and E computed as training computes them."""
    log_q = module.log_q(x)
    with torch.no_grad():
        energy = module.energy_of(x)
    weights = torch.softmax(-energy.double() - log_q.detach().double(), dim=0).to(log_q.dtype)
    return {"forward_kl_no_baseline": -(weights * log_q).sum(),
            "forward_kl": generator_objectives.generator_loss_forward_kl(energy, log_q)}


def training_gradient_by_size(module: AdversarialEBM, sizes: list[int], batches: int,
                              params: list[torch.nn.Parameter]) -> dict[str, dict[str, float]]:
    """Per generated batch size: the variance of the reverse-KL gradient training takes and
    the seconds one draw plus its gradient take, sizes interleaved so drift hits all alike."""
    gradients: dict[int, list[Tensor]] = {n: [] for n in sizes}
    seconds = dict.fromkeys(sizes, 0.0)
    for _ in range(batches):
        for n in sizes:
            start = time.perf_counter()
            fake = module.generate(n, keep_graph=True)
            loss, _ = module.generator_loss(fake, fake.x.detach())
            gradients[n].append(flat_gradient(loss, params))
            seconds[n] += time.perf_counter() - start
    results = {}
    for n in sizes:
        figures = summary(torch.stack(gradients[n]))
        per_batch = seconds[n] / batches
        results[f"generated_batch_size_{n}"] = {
            **figures, "seconds_per_batch": per_batch,
            "variance_times_seconds": figures["variance_trace"] * per_batch}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="an AdversarialEBM checkpoint")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64, help="as in training")
    parser.add_argument("--generated-batch-sizes", type=int, nargs="+", default=None,
                        help="measure the training gradient against these generated batch sizes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    module = load_module(args.checkpoint, map_location="cpu").eval()
    if not isinstance(module, AdversarialEBM):
        raise SystemExit(f"{args.checkpoint} holds no energy: pass an AdversarialEBM checkpoint")
    module.generator_objective = "reverse_kl"  # L_G's estimators, whatever objective it trained
    module.sticking_the_landing = False
    torch.manual_seed(args.seed)
    params = list(module.generator.parameters())
    name = f"generator_gradient_variance_{type(module.generator).__name__.lower()}"
    if args.generated_batch_sizes:
        start = time.perf_counter()
        by_size = training_gradient_by_size(module, args.generated_batch_sizes, args.batches,
                                            params)
        report(f"{name}_batch_sizes", {
            "checkpoint": str(Path(args.checkpoint)), "batches": args.batches,
            "torch_threads": torch.get_num_threads(),
            "seconds": time.perf_counter() - start, **by_size})
        return
    estimators: Callable[[AdversarialEBM, int], dict[str, Tensor]] = (
        discrete_estimators if module.generator.discrete else continuous_estimators)
    gradients: dict[str, list[Tensor]] = {}
    start = time.perf_counter()
    for _ in range(args.batches):
        for name, loss in estimators(module, args.batch_size).items():
            gradients.setdefault(name, []).append(flat_gradient(loss, params))
    results = {
        "checkpoint": str(Path(args.checkpoint)),
        "generator": type(module.generator).__name__,
        "batches": args.batches,
        "batch_size": args.batch_size,
        "num_parameters": sum(p.numel() for p in params),
        "seconds": time.perf_counter() - start,
        **{name: summary(torch.stack(grads)) for name, grads in gradients.items()},
    }
    for old, new in PAIRS:
        if old in results:
            results[f"variance_ratio_{old}_over_{new}"] = (
                results[old]["variance_trace"] / results[new]["variance_trace"])
    report(name, results)


if __name__ == "__main__":
    main()
