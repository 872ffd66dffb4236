"""What an adversarial run logs to show whether the discriminator and the generator learn:
pure functions from a training batch's quantities to named, detached statistics."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_ebm import objectives
from lit_ebm.metrics import log_partition_proposal


def discriminator_stats(energy_real: Tensor, energy_fake: Tensor, log_q_real: Tensor,
                        log_q_fake: Tensor, log_z: Tensor) -> dict[str, Tensor]:
    """log Z estimates, mean energies, the generator's entropy, the discriminator's accuracy on
    both batches (``d_acc_real``, ``d_acc_fake``) and ``ess_q``: the effective sample size
    (sum w)^2 / sum w^2 of the weights w = exp(-E - log q) over the generated batch, those of
    ``log_z_q`` and of the ``forward_kl`` generator objective (near 1: one sample decides)."""
    proposal = log_partition_proposal(energy_fake, log_q_fake)
    logits_real = objectives.discriminator_logits(energy_real, log_z, log_q_real)
    logits_fake = objectives.discriminator_logits(energy_fake, log_z, log_q_fake)
    return {
        "log_z_is": objectives.log_partition_is(torch.cat([energy_real, energy_fake]),
                                                torch.cat([log_q_real, log_q_fake]), log_z),
        "log_z_q": proposal["log_z"].float(),
        "ess_q": proposal["ess"].float(),
        "energy_real": energy_real.mean(),
        "energy_fake": energy_fake.mean(),
        "entropy": -log_q_fake.mean(),
        **objectives.discriminator_stats(logits_real, logits_fake),
    }


def out_of_range_fraction(x: Tensor) -> Tensor:
    """The fraction of values of continuous images ``x`` outside [0, 1), where dequantised data
    never are (a cue no 8-bit image has)."""
    return ((x < 0) | (x >= 1)).float().mean()


def generator_stats(x_fake: Tensor, log_q_fake: Tensor, log_q_base: Tensor | None,
                    continuous_images: bool) -> dict[str, Tensor]:
    """Signs that the generator moves: ``kl_q_q_init`` = mean(log q - log q_init) over the
    generated batch (an estimate of KL(q || q_init), with a residual energy's frozen base as
    q_init) and, for continuous images, ``out_of_range``: the fraction of generated values
    outside [0, 1), where dequantised data never are."""
    stats: dict[str, Tensor] = {}
    if log_q_base is not None:
        stats["kl_q_q_init"] = (log_q_fake - log_q_base).mean()
    if continuous_images:
        stats["out_of_range"] = out_of_range_fraction(x_fake)
    return stats


def input_gradient_norms(gradients: Tensor) -> Tensor:
    """Mean over examples of ||grad_x f(x)||, from per-example input gradients."""
    return gradients.flatten(1).norm(dim=1).mean()
