"""The generated batch x- ~ q that one adversarial training batch draws for both of its steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_ebm.energy import ResidualEnergy
from lit_ebm.generators.base import Generator
from lit_ebm.precision import density_call


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
        base = None
        if isinstance(energy, ResidualEnergy):
            base = density_call(energy.base, device_type, energy.base.log_prob, x)
    return GeneratedBatch(x, log_q, base)
