"""Generator objectives beyond the paper, as pure functions (docs/mathematics.md).

Same conventions as :mod:`lit_ebm.objectives`: ``energy`` is E(x) (low = likely), the EBM is
p = exp(-E) / Z, ``log_q`` is the generator's exact log-density, and every per-sample quantity is
a 1-D tensor; a data batch x+ and a generated batch x- may differ in size. Values are in nats
per example; a caller that reports losses per dimension divides them by D itself.

- reverse KL, KL(q || p) - log Z: the paper's L_G, :func:`generator_loss_reparameterised`
  (continuous generators) or :func:`generator_loss_score_function` (discrete ones). The default.
- hybrid (Flow-GAN): reverse KL + lambda * NLL of the data, :func:`generator_loss_hybrid`.
- forward KL, KL(p || q), by self-normalised importance weights with a baseline:
  :func:`generator_loss_forward_kl`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_ebm.objectives import (
    _check_1d,
    check_paired_batches,
    generator_loss_reparameterised,
    generator_loss_score_function,
)


def nll_penalty(log_q_real: Tensor) -> Tensor:
    """Negative log-likelihood of the data under the generator, -mean over x+ of log q(x+).

    The maximum-likelihood term of the hybrid objective (:func:`generator_loss_hybrid`). Its
    gradient in log q(x+) is -1/N per example.
    """
    _check_1d(log_q_real=log_q_real)
    return -log_q_real.mean()


def generator_loss_hybrid(
    energy_fake: Tensor,
    log_q_fake: Tensor,
    log_q_real: Tensor,
    nll_weight: float,
    *,
    score_function: bool = False,
) -> Tensor:
    """Hybrid adversarial and maximum-likelihood generator loss (Flow-GAN; Grover, Dhar & Ermon
    2018, arXiv:1705.08868):

        L_hybrid = L_G + lambda * (-mean over x+ of log q(x+)),    lambda = ``nll_weight`` >= 0,

    i.e. reverse KL + lambda * :func:`nll_penalty`. L_G is :func:`generator_loss_reparameterised`
    (reparameterised x-, the default) or, with ``score_function=True``, the RLOO surrogate of
    :func:`generator_loss_score_function` (discrete x-; the returned value is then a surrogate).
    ``log_q_real`` must carry the gradient to the generator. With ``nll_weight = 0`` the value and
    gradients equal those of the reverse-KL loss exactly. Both terms are in nats per example;
    Flow-GAN's per-dimension form is this divided by D, which the caller does.
    """
    check_paired_batches(energy_fake=energy_fake, log_q_fake=log_q_fake)
    _check_1d(log_q_real=log_q_real)
    if not (math.isfinite(nll_weight) and nll_weight >= 0):
        raise ValueError(f"nll_weight must be a finite number >= 0, got {nll_weight}")
    reverse_kl = generator_loss_score_function if score_function else generator_loss_reparameterised
    return reverse_kl(energy_fake, log_q_fake) + nll_weight * nll_penalty(log_q_real)


def generator_loss_forward_kl(energy_fake: Tensor, log_q_fake: Tensor) -> Tensor:
    """Forward KL(p || q) toward the EBM, by self-normalised importance weighting of x- ~ q
    (MaliGAN, Che et al. 2017; BGAN, Hjelm et al. 2018; DPG, Parshakova et al. 2019), with the
    batch-mean baseline of DPG (Korbak et al. 2022, arXiv:2206.00761):

        loss = -sum_i (w_i - 1/N) log q(x_i),   w_i = softmax_i(-E(x_i) - log q(x_i)), w constant.

    Derivation: grad_phi KL(p || q_phi) = -E_p[grad log q_phi], since E_p[log p] has no phi;
    E_p[h] = E_q[(p/q) h] / E_q[p/q], in which Z cancels, so p/q may be exp(-E - log q);
    over x_i ~ q this gives -sum_i w_i grad log q(x_i). The baseline subtracts
    (1/N) sum_i grad log q(x_i), whose expectation under q is exactly zero (the score's mean), so
    the expected gradient is unchanged, while the scores' noise cancels the more, the nearer the
    weights are to 1/N: where p = q on the batch (all w_i = 1/N, e.g. a residual energy with
    f = 0 at q = q0) the gradient is exactly zero, as it should be.

    The estimate is consistent but biased for small N (a ratio of means). The weights are computed
    without gradient, in float64, so no score-function term arises, for discrete generators too:
    ``log_q_fake`` must be log q recomputed with gradient at DETACHED samples (a density
    evaluation, teacher-forced for autoregressive models). The value is a surrogate (it
    estimates H(p, q) - H(q)), for differentiation only. With a residual energy E = f - log q0
    the log-weight is -f + log q0 - log q.
    """
    n = check_paired_batches(energy_fake=energy_fake, log_q_fake=log_q_fake)
    log_weights = -energy_fake.detach().double() - log_q_fake.detach().double()
    weights = torch.softmax(log_weights, dim=0) - 1.0 / n
    return -(weights.to(log_q_fake.dtype) * log_q_fake).sum()
