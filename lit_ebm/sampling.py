"""Samples of the EBM p(x) = exp(-E(x)) / Z, and of its generator q (docs/mathematics.md,
"Sampling the EBM"). Four methods, each returning samples in the energy's input space:

- ``"generator"``: the generator's own draws x ~ q (at a ``temperature``, where it takes one);
- ``"sir"``: sampling-importance-resampling, one of ``candidates`` draws of q kept with
  probability proportional to exp(-E - log q);
- ``"mcmc"``: MALA in a flow's latent space (:func:`latent_target`), chains started at the
  generator's draws, the step size adapted during ``burn_in``, then frozen for ``steps``;
- ``"imh"``: independence Metropolis-Hastings with the generator as proposal (or, for a residual
  energy with ``base_mixture``, (q + q0) / 2), ``steps`` proposals per chain; any generator.

The chain mathematics is in :mod:`lit_ebm.mcmc`. Randomness comes from torch's global random
state, so ``torch.manual_seed`` makes every method deterministic."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lit_ebm.energy import base_of, learnable_part
from lit_ebm.errors import InvalidArgument, require, require_positive_int
from lit_ebm.generated_batch import draw_candidates, energy_at
from lit_ebm.generators.base import Generator, sampler_at
from lit_ebm.generators.flows import FlowGenerator, standard_normal_log_prob
from lit_ebm.mcmc import (
    LogDensityAndGradient,
    adapt_log_step_size,
    evaluate_state,
    imh_over_candidates,
    mala_step,
    sampling_importance_resampling,
)
from lit_ebm.precision import density_call

METHODS = ("generator", "sir", "mcmc", "imh")
DEFAULTS: dict[str, dict[str, Any]] = {
    "generator": {"temperature": 1.0},
    "sir": {"candidates": 16},
    "mcmc": {"steps": 100, "burn_in": 100, "step_size": 0.05, "target_accept": 0.574},
    "imh": {"steps": 16, "base_mixture": False},
}
"""Each method's options and their defaults. 0.574 is MALA's optimal acceptance rate in high
dimension (Roberts & Rosenthal 1998, "Optimal scaling of discrete approximations to Langevin
diffusions", J. R. Statist. Soc. B 60(1))."""


@dataclass
class EBMSamples:
    """Samples drawn by ``method`` with ``options`` (every option of the method, defaults
    filled in), and what the draw measured.

    ``x`` ``(N, *event_shape)``: samples in the energy's input space, on the CPU (turn them into
    images with :func:`lit_ebm.generators.to_levels`). ``acceptance_rate``: the fraction of
    proposals accepted (``mcmc``: after burn-in; ``imh``: all), None for the other methods or
    without any proposal. ``adapted_step_size``: ``mcmc``'s step size after burn-in, at which the
    ``steps`` transitions ran (the chain-weighted mean over batches, each batch adapting its
    own). ``seconds``: wall-clock time of the whole draw.
    """

    x: Tensor
    method: str
    options: dict[str, Any]
    acceptance_rate: float | None
    adapted_step_size: float | None
    seconds: float

    def record(self) -> dict[str, Any]:
        """The method, its options and the measured figures as plain values (no None)."""
        figures = {"acceptance_rate": self.acceptance_rate,
                   "adapted_step_size": self.adapted_step_size}
        return {"method": self.method, **self.options, "num_samples": len(self.x),
                **{k: v for k, v in figures.items() if v is not None}, "seconds": self.seconds}


@dataclass
class _Batch:
    """One batch of samples, with its proposals, acceptances and step size (mcmc)."""

    x: Tensor
    accepted: int = 0
    proposals: int = 0
    step_size: float | None = None


def _density(generator: Generator, method: Callable[..., Any], *args: Any) -> Any:
    return density_call(generator, generator.device.type, method, *args)


def latent_target(generator: Generator, energy: nn.Module) -> tuple[FlowGenerator,
                                                                     LogDensityAndGradient]:
    """The flow g whose latent the chains run in, and log pi with its gradient there.

    For x = g(z), z ~ N(0, I), q(g(z)) = N(z) / |det dg/dz|, and the EBM p = exp(-E) / Z pulls
    back to pi(z) = p(g(z)) |det dg/dz| = N(z) exp(-E(g(z)) - log q(g(z))) / Z, so
    log pi(z) = log N(z) - E(g(z)) - log q(g(z)) + const = log|det dg/dz| - E(g(z)) + const
    (Hoffman et al. 2019, "NeuTra-lizing bad geometry in Hamiltonian Monte Carlo using neural
    transport"). For a residual energy E = f - log q0 the chains run in the frozen base's
    latent, x = g0(z), where log q0 cancels: log pi(z) = log N(z) - f(g0(z)) + const, no
    log-determinant needed, a Gaussian tilted by f.
    """
    base = base_of(energy)
    flow = base if base is not None else generator
    if not isinstance(flow, FlowGenerator) or flow.discrete:
        raise InvalidArgument(
            "method", f"method 'mcmc' runs MALA in the latent space of a continuous flow, and "
            f"{type(flow).__name__} is not one: use method 'imh' or 'sir'")

    def log_density(z: Tensor) -> Tensor:
        x, log_det = _density(flow, flow.inverse, z)  # log|det dx/dz|
        if base is not None:  # log q0 cancels: a Gaussian tilted by f
            net = learnable_part(energy)
            return standard_normal_log_prob(z) - density_call(net, z.device.type, net, x)
        return log_det - energy_at(energy, x)

    def log_density_and_grad(z: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            value = log_density(z)
            (grad,) = torch.autograd.grad(value.sum(), z)
        return value.detach(), grad

    return flow, log_density_and_grad


@torch.no_grad()
def _mcmc_batch(generator: Generator, energy: nn.Module, n: int, steps: int, burn_in: int,
                step_size: float, target_accept: float) -> _Batch:
    """MALA chains from the generator's draws: ``burn_in`` transitions adapting the step size,
    then ``steps`` at the adapted one; the chains' last states mapped to x."""
    flow, target = latent_target(generator, energy)
    if flow is generator:
        z = torch.randn(n, flow.num_dims, device=flow.device,
                        dtype=next(flow.parameters()).dtype)
    else:  # the generator's draws, in the base flow's latent
        z = _density(flow, flow.forward, _density(generator, generator.sample, n)[0])[0]
    state = evaluate_state(z.detach(), target)
    log_h, accepted = math.log(step_size), 0
    for t in range(burn_in + steps):
        state, alpha, moved = mala_step(state, target, math.exp(log_h),
                                        torch.randn_like(state.z),
                                        torch.rand_like(state.log_density))
        if t < burn_in:
            log_h = adapt_log_step_size(log_h, float(alpha.mean()), target_accept, t)
        else:
            accepted += int(moved.sum())
    x = _density(flow, flow.inverse, state.z)[0]
    return _Batch(x, accepted, n * steps, math.exp(log_h))


@torch.no_grad()
def _imh_batch(generator: Generator, energy: nn.Module, n: int, steps: int,
               base_mixture: bool) -> _Batch:
    """``n`` independence Metropolis-Hastings chains started at a proposal draw, each offered
    ``steps`` more; the chains' last states."""
    drawn = draw_candidates(generator, energy, n, steps + 1, base_mixture)
    end, moves = imh_over_candidates(drawn.log_weights,
                                     torch.rand(n, steps, device=drawn.x.device))
    return _Batch(drawn.x[torch.arange(n, device=end.device), end], int(moves.sum()), n * steps)


@torch.no_grad()
def _sir_batch(generator: Generator, energy: nn.Module, n: int, candidates: int) -> _Batch:
    """``n`` samples, each one of ``candidates`` draws of q resampled by weight exp(-E - log q)."""
    drawn = draw_candidates(generator, energy, n, candidates)
    pick = sampling_importance_resampling(drawn.log_weights).to(drawn.x.device)
    return _Batch(drawn.x[torch.arange(n, device=drawn.x.device), pick])


@torch.no_grad()
def _generator_batch(generator: Generator, n: int, temperature: float = 1.0) -> _Batch:
    """``n`` draws of q at ``temperature`` (:func:`~lit_ebm.generators.base.sampler_at`)."""
    return _Batch(_density(generator, sampler_at(generator, temperature), n)[0])


def _check_count(name: str, value: Any, smallest: int) -> None:
    require(not isinstance(value, bool) and isinstance(value, int) and value >= smallest, name,
            f"{name} must be an integer >= {smallest}, got {value!r}")


def resolve_options(generator: Generator, energy: nn.Module | None, method: str,
                    options: dict[str, Any]) -> dict[str, Any]:
    """``method``'s options with its defaults filled in; :class:`InvalidArgument` naming the
    argument for an unknown method or option, a bad value, or a method the model cannot use."""
    require(method in METHODS, "method",
            f"unknown method {method!r}; valid methods are {', '.join(METHODS)}")
    require(method == "generator" or energy is not None, "method",
            f"method {method!r} samples an EBM, and this model has no energy (a maximum-"
            "likelihood model): use method 'generator'")
    defaults = DEFAULTS[method]
    for name in options:
        require(name in defaults, name, f"{name} is not an option of method {method!r}; its "
                f"options are: {', '.join(defaults) or 'none'}")
    resolved = {**defaults, **options}
    for name in ("steps", "burn_in"):
        if name in resolved:
            _check_count(name, resolved[name], 0)
    if "candidates" in resolved:
        _check_count("candidates", resolved["candidates"], 1)
    if method == "mcmc" and energy is not None:
        step_size, target = resolved["step_size"], resolved["target_accept"]
        require(isinstance(step_size, int | float) and math.isfinite(step_size) and
                step_size > 0, "step_size", f"step_size must be a number > 0, got {step_size!r}")
        require(isinstance(target, int | float) and 0 < target < 1, "target_accept",
                f"target_accept must be a number in (0, 1), got {target!r}")
        latent_target(generator, energy)  # refuses generators that are not flows
    if resolved.get("base_mixture"):
        residual = energy is not None and base_of(energy) is not None
        require(residual, "base_mixture", "base_mixture proposes from (q + q0) / 2 with q0 a "
                "residual energy's base, and this energy is not residual: leave base_mixture "
                "off")
    return resolved


def sample_ebm(generator: Generator, energy: nn.Module | None, num_samples: int,
               method: str = "generator", batch_size: int | None = None,
               progress: Callable[[int], None] | None = None, **options: Any) -> EBMSamples:
    """``num_samples`` samples of the EBM exp(-E) / Z (or of the generator q) by ``method``,
    in batches of ``batch_size`` (chains, for ``mcmc`` and ``imh``; default all at once);
    ``progress(n)`` is called after each batch of n samples. ``options`` are the method's
    (:data:`DEFAULTS`): ``sir`` candidates; ``mcmc`` steps, burn_in, step_size (the initial
    one), target_accept; ``imh`` steps, base_mixture. ``energy`` None (a maximum-likelihood
    model) allows ``generator`` only. Raises :class:`InvalidArgument` naming a bad argument.
    """
    start = time.perf_counter()
    resolved = resolve_options(generator, energy, method, options)
    require_positive_int("num_samples", num_samples, "num_samples=64")
    if batch_size is not None:
        require_positive_int("batch_size", batch_size, "batch_size=256")
    size = batch_size or num_samples
    parts = []
    for n in [min(size, num_samples - i) for i in range(0, num_samples, size)]:
        if method == "generator" or energy is None:
            batch = _generator_batch(generator, n, resolved.get("temperature", 1.0))
        elif method == "sir":
            batch = _sir_batch(generator, energy, n, **resolved)
        elif method == "mcmc":
            batch = _mcmc_batch(generator, energy, n, **resolved)
        else:
            batch = _imh_batch(generator, energy, n, **resolved)
        parts.append(_Batch(batch.x.detach().cpu(), batch.accepted, batch.proposals,
                            batch.step_size))
        if progress is not None:
            progress(n)
    return _combine(method, resolved, parts, time.perf_counter() - start)


def _combine(method: str, options: dict[str, Any], parts: list[_Batch],
             seconds: float) -> EBMSamples:
    """One :class:`EBMSamples` of the batches ``parts``."""
    proposals = sum(part.proposals for part in parts)
    acceptance = sum(part.accepted for part in parts) / proposals if proposals else None
    step_size = None
    if method == "mcmc":
        step_size = sum(len(p.x) * (p.step_size or 0.0) for p in parts) / sum(
            len(p.x) for p in parts)
    return EBMSamples(torch.cat([part.x for part in parts]), method, options, acceptance,
                      step_size, seconds)
