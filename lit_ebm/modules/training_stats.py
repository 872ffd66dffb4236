"""What an adversarial run logs to show whether the discriminator and the generator learn:
pure functions from a training batch's quantities to named, detached statistics."""

from __future__ import annotations

from torch import Tensor

from lit_ebm import objectives
from lit_ebm.metrics import log_partition_proposal


def discriminator_stats(energy_real: Tensor, energy_fake: Tensor, log_q_real: Tensor,
                        log_q_fake: Tensor, log_z: Tensor) -> dict[str, Tensor]:
    """Mean energies, the generator's entropy, ``log_z_q`` (log Z by importance sampling from
    q alone, :func:`lit_ebm.metrics.log_partition_proposal`) and ``ess_q``: the effective sample
    size (sum w)^2 / sum w^2 of its weights w = exp(-E - log q) over the generated batch, also
    those of the ``forward_kl`` generator objective (near 1: one sample decides); and the
    discriminator's accuracy: ``d_acc_real``, the fraction of data with logit l > 0 (called
    data), ``d_acc_fake``, the fraction of generated samples with l < 0."""
    proposal = log_partition_proposal(energy_fake, log_q_fake)
    logits_real = objectives.discriminator_logits(energy_real, log_z, log_q_real)
    logits_fake = objectives.discriminator_logits(energy_fake, log_z, log_q_fake)
    return {
        "log_z_q": proposal["log_z"].float(),
        "ess_q": proposal["ess"].float(),
        "energy_real": energy_real.mean(),
        "energy_fake": energy_fake.mean(),
        "entropy": -log_q_fake.mean(),
        "d_acc_real": (logits_real > 0).float().mean(),
        "d_acc_fake": (logits_fake < 0).float().mean(),
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
