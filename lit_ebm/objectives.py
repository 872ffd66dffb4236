"""The mathematics of Finn, Christiano, Abbeel & Levine (2016), arXiv:1611.03852, as pure functions.

Notation and sign conventions (docs/mathematics.md):

- ``energy`` is E(x), low = likely; the energy-based model is p_theta(x) = exp(-E(x)) / Z.
- ``log_z`` is a learned scalar estimate of log Z (a float or a one-element tensor).
- ``log_q`` is the generator's exact log-density log q(x), in the space the energy sees.
- Data x+ ~ p and generated x- ~ q come in two batches, of sizes N+ and N-. Their union S,
  each batch weighted one half (an entry of S weighs 1 / (2 N+) or 1 / (2 N-)), is a weighted
  sample of the mixture mu = p/2 + q/2; with N+ = N- the weights are all 1 / |S|. Functions of
  the union take it concatenated, data first, with ``num_real`` = N+ (default: half of it).
  Every per-sample quantity is a 1-D tensor.
- The discriminator logit is "data is high": l(x) = -E(x) - log_z - log q(x), D = sigmoid(l).

The paper's three facts, exact on any finite pair of batches under that weighting:

1. The log_z minimising :func:`discriminator_loss` is a fixed point of :func:`log_partition_is`.
2. At that log_z, the gradient of :func:`discriminator_loss` w.r.t. the energy's parameters equals
   that of :func:`guided_cost_loss`, with no constant factor.
3. mean over x- of -l(x-) = log_z + :func:`generator_loss_reparameterised`.

Generator objectives beyond the paper (hybrid, forward KL): :mod:`lit_ebm.generator_objectives`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LogZ = Tensor | float

_PAIRING_ADVICE = (
    "Each per-sample quantity must be a 1-D tensor with one entry per sample of its batch; a "
    "union holds the data batch first, then the generated batch, and num_real says where the "
    "data batch ends."
)


def _describe(named_tensors: dict[str, Tensor]) -> str:
    return ", ".join(f"{name} {tuple(t.shape)}" for name, t in named_tensors.items())


def _check_1d(**named_tensors: Tensor) -> None:
    """Raise ValueError unless every tensor is a non-empty 1-D batch of per-sample values."""
    bad = {name: t for name, t in named_tensors.items() if t.ndim != 1 or t.shape[0] == 0}
    if bad:
        raise ValueError(
            f"expected non-empty 1-D tensors (one value per sample), got {_describe(bad)}. "
            "Reduce per-sample outputs to shape (batch,), e.g. energy(x).squeeze(-1)."
        )


def _check_log_z(log_z: LogZ) -> None:
    if isinstance(log_z, Tensor) and log_z.numel() != 1:
        raise ValueError(f"log_z must be a scalar, got a tensor of shape {tuple(log_z.shape)}")


def _logmeanexp(x: Tensor) -> Tensor:
    return torch.logsumexp(x, dim=0) - math.log(x.shape[0])


def union_log_weights(size: int, num_real: int | None = None) -> Tensor:
    """Log-weights (float64) of a union of a data batch of ``num_real`` entries (default half)
    and a generated batch of the rest, each batch weighted one half: -log(2 N+), -log(2 N-)."""
    num_real = size // 2 if num_real is None and size % 2 == 0 else num_real
    if num_real is None or not 0 < num_real < size:
        raise ValueError(
            f"a union of {size} entries needs num_real, the data batch's size, between 1 and "
            f"{size - 1} (default half, for an even union); got {num_real}. {_PAIRING_ADVICE}")
    counts = torch.tensor([num_real, size - num_real], dtype=torch.float64)
    return (-(2 * counts).log()).repeat_interleave(counts.long())


def _weighted_logsumexp(x: Tensor, num_real: int | None) -> Tensor:
    """log sum_S w exp(x) with the union weights of :func:`union_log_weights`."""
    return torch.logsumexp(x + union_log_weights(x.shape[0], num_real).to(x), dim=0)


def check_paired_batches(**named_tensors: Tensor) -> int:
    """Check that all tensors are non-empty 1-D batches of one common size; return that size.

    Raises ValueError naming each quantity and its shape otherwise. Pass the per-sample
    quantities of one batch, e.g. ``check_paired_batches(energy_fake=e_f, log_q_fake=lq_f)``.
    """
    _check_1d(**named_tensors)
    if len({t.shape[0] for t in named_tensors.values()}) > 1:
        raise ValueError(f"batch size mismatch: {_describe(named_tensors)}. {_PAIRING_ADVICE}")
    return next(iter(named_tensors.values())).shape[0]


def discriminator_logits(energy: Tensor, log_z: LogZ, log_q: Tensor) -> Tensor:
    """Discriminator logit l(x) = -E(x) - log_z - log q(x), "data is high" (paper section 3).

    D(x) = sigmoid(l(x)) = p_theta(x) / (p_theta(x) + q(x)) with p_theta = exp(-E) / exp(log_z).
    Gradients flow into every argument; :func:`discriminator_loss` detaches ``log_q`` itself.
    """
    check_paired_batches(energy=energy, log_q=log_q)
    _check_log_z(log_z)
    return -energy - log_z - log_q


def discriminator_loss(
    energy_real: Tensor,
    energy_fake: Tensor,
    log_z: LogZ,
    log_q_real: Tensor,
    log_q_fake: Tensor,
) -> Tensor:
    """Energy/discriminator loss L_D = mean softplus(-l(x+)) + mean softplus(l(x-)) (section 3).

    This is the GAN loss -E_p[log D] - E_q[log(1 - D)], minimised over the energy's parameters and
    ``log_z``. The generator density is a constant here: the caller should compute ``log_q_*``
    without gradient, and they are detached inside anyway.

    The batches may differ in size. Over their weighted union S: dL_D/dlog_z = 1 - 2 sum_S w D,
    which vanishes exactly when log_z = log_partition_is(...) (fact 1); at that point
    grad_theta L_D = mean_+ grad E - 2 sum_S w D grad E = grad_theta L_cost (fact 2).
    """
    check_paired_batches(energy_real=energy_real, log_q_real=log_q_real)
    check_paired_batches(energy_fake=energy_fake, log_q_fake=log_q_fake)
    logits_real = discriminator_logits(energy_real, log_z, log_q_real.detach())
    logits_fake = discriminator_logits(energy_fake, log_z, log_q_fake.detach())
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def generator_loss_reparameterised(energy_fake: Tensor, log_q_fake: Tensor) -> Tensor:
    """Generator loss L_G = mean over x- of [E(x-) + log q(x-)], for reparameterised samples.

    This is also the sampler loss of paper eq. 2: E_q[E + log q] = KL(q || p_theta) - log Z, so
    no separate sampler loss exists. It equals mean(-l(x-)) - log_z (fact 3): the GAN generator
    loss E_q[log((1 - D) / D)] up to the constant log_z. Gradients flow through E(x-) (the energy
    frozen by the caller) and through log q(x-) computed on the sampling path.
    """
    check_paired_batches(energy_fake=energy_fake, log_q_fake=log_q_fake)
    return (energy_fake + log_q_fake).mean()


def generator_loss_score_function(energy_fake: Tensor, log_q_fake: Tensor) -> Tensor:
    """Score-function (REINFORCE) surrogate for L_G, for discrete samples (paper section 4).

    Returns mean_i stopgrad(f_i - b_i) * log q(x_i) with f_i = E(x_i) + log q(x_i) and the
    leave-one-out baseline b_i = mean over j != i of f_j. Since b_i is independent of x_i, the
    gradient is an unbiased estimate of grad E_q[E + log q] (the score's mean is zero). Read as
    reinforcement learning: q is a policy, -E the reward and -log q the entropy bonus.

    The returned value is a surrogate, not L_G: log ``generator_loss_reparameterised`` (detached)
    for monitoring. Needs at least two samples for the baseline.
    """
    n = check_paired_batches(energy_fake=energy_fake, log_q_fake=log_q_fake)
    if n < 2:
        raise ValueError(
            f"the leave-one-out baseline needs a batch of at least 2 samples, got {n}; "
            "draw more generator samples per step"
        )
    cost = (energy_fake + log_q_fake).detach()
    baseline = (cost.sum() - cost) / (n - 1)
    return ((cost - baseline) * log_q_fake).mean()


def log_mu(energy: Tensor, log_z: LogZ, log_q: Tensor) -> Tensor:
    """Log-density of the mixture mu = p_theta/2 + q/2 (paper eq. 4 with p~ = p_theta).

    log mu(x) = logaddexp(-E(x) - log_z, log q(x)) - log 2.
    """
    check_paired_batches(energy=energy, log_q=log_q)
    _check_log_z(log_z)
    return torch.logaddexp(-energy - log_z, log_q) - math.log(2.0)


def log_partition_is(energy: Tensor, log_q: Tensor, log_z: LogZ,
                     num_real: int | None = None) -> Tensor:
    """The paper's importance-sampling estimate of log Z (eq. 4), proposal mu = p_theta/2 + q/2.

    log_z_is = log sum_S w exp(-E(x) - log mu(x)) over the weighted union S (data first,
    ``num_real`` entries), ``log_z`` the current value that defines p_theta inside mu; float64
    inside, returned in the dtype of ``energy``. It estimates Z only where the data batch is a
    sample of p_theta. Its fixed point log_z_is = log_z is the minimiser of
    :func:`discriminator_loss` over log_z, the L_D-optimal offset (fact 1;
    :func:`ld_optimal_log_z` finds it); iterating the map converges to it (slope in (0, 1)).
    """
    check_paired_batches(energy=energy, log_q=log_q)
    energy64 = energy.double()
    log_z64 = log_z.double() if isinstance(log_z, Tensor) else log_z
    log_weights = -energy64 - log_mu(energy64, log_z64, log_q.double())
    return _weighted_logsumexp(log_weights, num_real).to(energy.dtype)


def log_partition_q(energy: Tensor, log_q: Tensor) -> Tensor:
    """Importance-sampling estimate of log Z with the generator q alone as the proposal.

    For x_j ~ q: log Z ~= log mean_j exp(-E(x_j) - log q(x_j)), in float64. Consistent, and
    biased low for small samples by Jensen's inequality (paper eq. 4 with proposal q instead of
    mu; :func:`lit_ebm.metrics.log_partition_proposal` adds its standard error).
    """
    return _logmeanexp(-energy.double() - log_q.double())


def _log_z_derivatives(s: Tensor, c: float, w: Tensor) -> tuple[float, float, float]:
    """Derivative and curvature of L_D in log Z = c at the scores ``s`` = -E - log q of a union
    with weights ``w``, and the size of the derivative's terms: 1 - 2 sum w D = k + 2 (a - b)
    with k = sum_{s <= c} w - sum_{s > c} w, a = sum_{s > c} w sigmoid(c - s) and
    b = sum_{s <= c} w sigmoid(s - c), which keeps its precision when every D rounds to 0 or 1."""
    above = s > c
    small = torch.sigmoid(torch.where(above, c - s, s - c))  # min(D, 1 - D), never cancelled
    k = float(w[~above].sum() - w[above].sum())
    a, b = float((w * small)[above].sum()), float((w * small)[~above].sum())
    curvature = 2.0 * float((w * small * (1.0 - small)).sum())
    return k + 2.0 * (a - b), curvature, abs(k) + 2.0 * (a + b)


def log_z_derivative(energy: Tensor, log_q: Tensor, log_z: LogZ,
                     num_real: int | None = None) -> tuple[float, float]:
    """dL_D/dlog Z = 1 - 2 sum_S w D over a weighted union at ``log_z``, in float64 without
    cancellation, and the size of its terms (the scale against which it is small)."""
    check_paired_batches(energy=energy, log_q=log_q)
    scores = -energy.detach().double() - log_q.detach().double()
    weights = union_log_weights(len(scores), num_real).exp().to(scores.device)
    return _log_z_derivatives(scores, float(log_z), weights)[::2]  # (derivative, size)


def ld_optimal_log_z(energy: Tensor, log_q: Tensor, num_real: int | None = None,
                     rtol: float = 1e-10, max_iter: int = 200) -> Tensor:
    """The L_D-optimal offset: the log Z minimising L_D on a weighted union, which is the fixed
    point log_z = log_z_is (fact 1); an estimate of log Z only where the data are from p_theta.

    With s = -E - log q and D = sigmoid(s - c), L_D is convex in c = log Z: its derivative is
    1 - 2 sum_S w D and its second derivative 2 sum_S w D (1 - D). The root is found by Newton's
    method, safeguarded by bisection on a bracket where the derivative changes sign (-1 far
    below every s, +1 far above): Newton's step is taken while it lands in the bracket and at
    least halves, else the bracket is halved (far from the root Newton's steps are at most one
    nat). In float64, until the derivative is below ``rtol`` times the size of its terms
    (:func:`log_z_derivative`), also when every D rounds to 0 or 1, where iterating
    log_z <- log_z_is crawls at rate mean D. Returns the last step after ``max_iter``, in the
    dtype of ``energy``.
    """
    check_paired_batches(energy=energy, log_q=log_q)
    with torch.no_grad():
        s = -energy.double() - log_q.double()
        w = union_log_weights(len(s), num_real).exp().to(s.device)
        low, high = float(s.min()) - 40.0, float(s.max()) + 40.0  # sigmoid(40) = 1 - 4e-18
        c = min(max(float(log_partition_q(energy, log_q)), low), high)
        previous_step = high - low
        for _ in range(max_iter):
            gradient, curvature, size = _log_z_derivatives(s, c, w)
            if abs(gradient) <= rtol * size:
                break
            low, high = (low, c) if gradient > 0 else (c, high)
            step = gradient / curvature if curvature > 0 else math.inf
            if low < c - step < high and abs(step) <= 0.5 * previous_step:
                c, previous_step = c - step, abs(step)
            else:
                c, previous_step = 0.5 * (low + high), 0.5 * (high - low)
    return torch.tensor(c, dtype=energy.dtype, device=energy.device)


def guided_cost_loss(
    energy_real: Tensor, energy_all: Tensor, log_q_all: Tensor, log_z: LogZ
) -> Tensor:
    """Guided-cost-learning loss (paper eq. 5), the sample-based max-ent IRL objective.

    L_cost = mean E(x+) + log sum_S w exp(-E(x) - stopgrad(log mu(x))), where ``energy_all`` and
    ``log_q_all`` cover the weighted union S of the data batch (first) and a generated batch.
    ``log_z`` and ``log_q_all`` enter only through the stopped-gradient importance weights.

    Fact 2 holds exactly, with no constant factor: p~ / mu = 2 Z D, so at log_z = log_z_is the
    normalised weight of x is 2 w D(x) and grad_theta L_cost = mean_+ grad E -
    2 sum_S w D grad E = grad_theta L_D. (Both losses average over batches, as the paper's
    expectations do; a weighted mean and a sum differ by a constant only.)
    """
    check_paired_batches(energy_all=energy_all, log_q_all=log_q_all)
    _check_1d(energy_real=energy_real)
    log_weights = -energy_all - log_mu(energy_all, log_z, log_q_all).detach()
    return energy_real.mean() + _weighted_logsumexp(log_weights, energy_real.shape[0])


def energy_magnitude_penalty(energy_real: Tensor, energy_fake: Tensor) -> Tensor:
    """Mean of E(x)^2 over both batches together; the caller multiplies it by alpha.

    A stability regulariser, not part of the paper: it keeps energies near zero, which the
    losses above leave free up to the shift E -> E + c, log_z -> log_z - c.
    """
    _check_1d(energy_real=energy_real, energy_fake=energy_fake)
    return torch.cat([energy_real, energy_fake]).square().mean()


def r1_penalty(grad_real: Tensor) -> Tensor:
    """R1 gradient penalty (Mescheder, Geiger & Nowozin 2018): 1/2 mean ||grad_x f(x+)||^2 over
    the data batch, from per-example input gradients ``(B, ...)``; the caller multiplies it by
    gamma. It keeps the energy flat where the data are, so the discriminator cannot win by
    sharp cues there."""
    return 0.5 * grad_real.flatten(1).square().sum(dim=1).mean()
