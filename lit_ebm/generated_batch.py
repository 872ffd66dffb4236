"""Draws of the generator with the densities the energy needs: the generated batch x- ~ q that
one adversarial training batch draws for both of its steps, and the groups of proposal draws
that sampling-importance-resampling and independence Metropolis-Hastings pick from
(:mod:`lit_ebm.sampling`); and E(x) at the precision densities keep."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_ebm.energy import base_of
from lit_ebm.generators.base import Generator
from lit_ebm.metrics import log_mixture
from lit_ebm.precision import density_call


def energy_at(energy: nn.Module, x: Tensor, base_log_prob: Tensor | None = None) -> Tensor:
    """E(x), shape ``(B,)``, float32 or wider under any autocast setting; ``base_log_prob`` is a
    residual energy's log q0(x) where it is already computed."""
    extra = {} if base_log_prob is None else {"base_log_prob": base_log_prob}
    return density_call(energy, x.device.type, energy, x, **extra)


@dataclass
class GeneratedBatch:
    """One generated batch x- ~ q serving both steps of a training batch.

    ``log_q`` (and ``x``, for continuous generators) carry gradients to the generator when the
    batch was drawn for a generator step; ``log_q_base`` = log q0(x) is the frozen base density
    of a residual energy, computed once for both steps (None without one).
    """

    x: Tensor
    log_q: Tensor
    log_q_base: Tensor | None

    def energy(self, energy: Callable[..., Tensor], detach: bool = False) -> Tensor:
        """E(x-) by ``energy`` (:meth:`AdversarialEBM.energy_of`); ``detach`` cuts every path
        to the generator (the energy step)."""
        x = self.x.detach() if detach else self.x
        if self.log_q_base is None:
            return energy(x)
        base = self.log_q_base.detach() if detach else self.log_q_base
        return energy(x, base_log_prob=base)


def draw_generated_batch(generator: Generator, energy: nn.Module, num_samples: int,
                         keep_graph: bool, device_type: str) -> GeneratedBatch:
    """Draw x- ~ q with log q(x-) (and log q0(x-) for a residual ``energy``), densities in
    float32 or wider, with the graphs a generator step needs if ``keep_graph``. A discrete
    sample has no path to the parameters: its log q is recomputed by ``log_prob`` (with
    gradient for the score-function estimator), the function and precision the data are
    scored with. ``device_type`` is where autocast applies (:mod:`lit_ebm.precision`)."""
    with torch.set_grad_enabled(keep_graph):
        x, log_q = density_call(generator, device_type, generator.sample, num_samples)
        expected = (num_samples, *generator.event_shape)
        if tuple(x.shape) != expected or tuple(log_q.shape) != (num_samples,):
            raise ValueError(
                f"generator.sample({num_samples}) returned x of shape {tuple(x.shape)} and log_q "
                f"of shape {tuple(log_q.shape)}; expected {expected} and ({num_samples},): a "
                "generator must draw exactly the number of samples asked for (docs/models.md)")
        if generator.discrete:
            x = x.detach()
            log_q = density_call(generator, device_type, generator.log_prob, x)
        q0, base = base_of(energy), None
        if q0 is not None:
            base = density_call(q0, device_type, q0.log_prob, x)
    return GeneratedBatch(x, log_q, base)


@dataclass
class Candidates:
    """``n`` groups of ``M`` proposal draws: ``x`` ``(n, M, *event_shape)`` and their
    importance log-weights ``log_weights`` ``(n, M)`` = -E(x) - log q_prop(x); flat over the
    groups, each draw's ``energy`` E(x), ``log_q`` and, for a residual energy, ``log_q_base``."""

    x: Tensor
    log_weights: Tensor
    energy: Tensor
    log_q: Tensor
    log_q_base: Tensor | None


@torch.no_grad()
def draw_candidates(generator: Generator, energy: nn.Module, n: int, candidates: int,
                    base_mixture: bool = False) -> Candidates:
    """The proposal draws sampling-importance-resampling picks from and independence
    Metropolis-Hastings chains run through, one group per sample: q_prop = q, drawn as training
    draws its generated batch (:func:`lit_ebm.generated_batch.draw_generated_batch`), or with
    ``base_mixture`` the defensive mixture (q + q0) / 2 of the generator and a residual energy's
    base (:func:`lit_ebm.metrics.log_mixture`), each draw from q or q0 by a fair coin."""
    total, device = n * candidates, generator.device
    if not base_mixture:
        fake = draw_generated_batch(generator, energy, total, False, device.type)
        x, log_q, log_q0 = fake.x, fake.log_q, fake.log_q_base
        e = fake.energy(lambda x, **extra: energy_at(energy, x, **extra))
        log_proposal = log_q
    else:
        base = base_of(energy)
        assert base is not None  # resolve_options allows base_mixture only then
        from_base = torch.rand(total, device=device) < 0.5
        x = torch.empty(total, *generator.event_shape, device=device)
        for source, rows in ((generator, ~from_base), (base, from_base)):
            if rows.any():
                drawn = density_call(source, device.type, source.sample, int(rows.sum()))[0]
                x[rows] = drawn.to(x.dtype)
        log_q = density_call(generator, device.type, generator.log_prob, x)
        log_q0 = density_call(base, device.type, base.log_prob, x)
        e = energy_at(energy, x, base_log_prob=log_q0)
        log_proposal = log_mixture(log_q, log_q0, 0.5).to(e.dtype)
    return Candidates(x.reshape(n, candidates, *x.shape[1:]),
                      (-e - log_proposal).reshape(n, candidates), e, log_q, log_q0)
