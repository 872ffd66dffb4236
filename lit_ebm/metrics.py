"""Metrics: manifold metrics of sample quality, and the estimators that evaluate an EBM through
its generator (docs/evaluation.md)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def knn_radii(features: Tensor, k: int) -> Tensor:
    """Distance from each row of ``features`` to its k-th nearest other row."""
    distances = torch.cdist(features, features)
    return distances.kthvalue(k + 1, dim=1).values  # the row itself is the nearest, at 0


def equal_counts(real: Tensor, fake: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``real`` and ``fake`` cut to the smaller one's size, the larger by a uniform subset drawn
    with ``seed``: a set's k-nearest-neighbour radii shrink as it grows, so manifold metrics of
    sets of unequal sizes are biased (more fakes than reals: recall low, coverage high)."""
    count = min(len(real), len(fake))
    generator = torch.Generator().manual_seed(seed)
    cut = [x if len(x) == count else x[torch.randperm(len(x), generator=generator)[:count]
                                       .to(x.device)] for x in (real, fake)]
    return cut[0], cut[1]


def precision_recall_density_coverage(real: Tensor, fake: Tensor, k: int = 5, seed: int = 0
                                      ) -> dict[str, float]:
    """Manifold metrics on features ``(n, d)`` and ``(m, d)``, with k-nearest-neighbour balls,
    on equal numbers of each (:func:`equal_counts`, the subset drawn with ``seed``).

    With r_i the distance from real i to its k-th nearest real neighbour (s_j likewise among
    fakes), and closed balls:

    - precision (Kynkaanniemi et al. 2019): fraction of fakes inside some real ball;
    - recall (same): fraction of reals inside some fake ball;
    - density (Naeem et al. 2020): (1 / (k m)) sum_j #{i : fake j inside real ball i};
    - coverage (same): fraction of real balls that hold at least one fake.
    """
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} real and fake feature "
                         f"vectors, got {len(real)} and {len(fake)}")
    real, fake = equal_counts(real.double(), fake.double(), seed)
    real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
    distances = torch.cdist(real, fake)  # (n, m)
    in_real_ball = distances <= real_radii.unsqueeze(1)
    return {
        "precision": float(in_real_ball.any(dim=0).double().mean()),
        "recall": float((distances <= fake_radii.unsqueeze(0)).any(dim=1).double().mean()),
        "density": float(in_real_ball.sum(dim=0).double().mean() / k),
        "coverage": float(in_real_ball.any(dim=1).double().mean()),
    }


PARETO_K_RELIABLE = 0.7  # above it an importance-sampling estimate cannot be trusted
PARETO_PRIOR_WEIGHT = 10.0  # observations' worth of the weak prior k ~ 0.5 (PSIS)


def generalized_pareto_fit(exceedances: Tensor) -> tuple[Tensor, Tensor]:
    """Shape k and scale sigma of the generalised Pareto distribution fitted to nonnegative
    ``exceedances`` by the empirical-Bayes estimator of Zhang & Stephens (2009), in float64.

    GPD(k, sigma) has survival (1 + k x / sigma)^(-1/k); with theta = -k / sigma the profile
    log-likelihood of theta is n (log(-theta / k(theta)) - k(theta) - 1), where
    k(theta) = mean log(1 - theta x). The estimate of theta is its posterior mean over the
    m = 30 + floor(sqrt n) grid points theta_j = 1 / x_(n) + (1 - sqrt(m / (j - 1/2))) / (3 x*)
    (x* the first quartile, x_(n) the maximum), i.e. the profile-likelihood weights
    softmax_j; then k = k(theta_hat) and sigma = -k / theta_hat (their section 4). Returns
    two float64 scalars on the input's device, with no synchronisation.
    """
    x = exceedances.detach().double().flatten().sort().values
    n = len(x)
    grid = 30 + math.isqrt(n)
    j = torch.arange(1, grid + 1, dtype=torch.float64, device=x.device)
    quartile = x[int(n / 4 + 0.5) - 1]
    theta = 1 / x[-1] + (1 - torch.sqrt(grid / (j - 0.5))) / (3 * quartile)
    k_theta = torch.log1p(-theta[:, None] * x).mean(dim=1)
    profile = n * (torch.log(-theta / k_theta) - k_theta - 1)
    theta_hat = (torch.softmax(profile, dim=0) * theta).sum()
    k = torch.log1p(-theta_hat * x).mean()
    return k, -k / theta_hat


def pareto_k_hat(log_weights: Tensor) -> Tensor:
    """The Pareto-smoothed importance sampling diagnostic k-hat of importance weights given by
    their logs (Vehtari, Simpson, Gelman, Yao & Gabry 2024).

    The M = ceil(min(n / 5, 3 sqrt n)) largest weights minus the largest weight below them are
    fitted by a generalised Pareto distribution (:func:`generalized_pareto_fit`); its shape k
    says how many moments the weights have (1 / k), and k-hat > 0.7 means the estimate and its
    standard error cannot be trusted, whatever the effective sample size says. As in PSIS, k is
    shrunk toward 0.5 by a weak prior worth 10 observations: (M k + 10 * 0.5) / (M + 10).
    Weights are scaled by exp(-max log weight), so k-hat is invariant to a constant shift of the
    log weights and nothing overflows. NaN when M < 5 (too few draws, n < 21); -inf when the
    tail's weights are all equal (bounded weights: no tail at all). A float64 scalar on the
    weights' device, computed without synchronising it (training logs it every step).
    """
    log_w = log_weights.detach().double().flatten()
    tail = math.ceil(min(0.2 * len(log_w), 3 * math.sqrt(len(log_w))))
    if tail < 5:
        return torch.tensor(math.nan, dtype=torch.float64, device=log_w.device)
    top = log_w.topk(tail + 1).values  # descending; the last one is the threshold
    exceedances = torch.exp(top[:-1] - top[0]) - torch.exp(top[-1] - top[0])
    k, _ = generalized_pareto_fit(exceedances)
    k = (tail * k + PARETO_PRIOR_WEIGHT * 0.5) / (tail + PARETO_PRIOR_WEIGHT)
    return torch.where(exceedances[0] > 0, k, -math.inf)


def log_partition_proposal(energy: Tensor, log_q: Tensor) -> dict[str, Tensor]:
    """:func:`lit_ebm.objectives.log_partition_q`, log Z ~= log mean_j w_j with weights
    w_j = exp(-E(x_j) - log q(x_j)) for x_j ~ q (any proposal q: the generator, the base of a
    residual energy, or the mixture of :func:`log_mixture`), with the error bars of
    :func:`log_partition_weights`. Computed in float64 in log space.
    """
    if energy.shape != log_q.shape or energy.ndim != 1 or len(energy) < 2:
        raise ValueError(f"expected two 1-D tensors of at least 2 samples, got energy "
                         f"{tuple(energy.shape)} and log_q {tuple(log_q.shape)}")
    return log_partition_weights(-energy.detach().double() - log_q.detach().double())


def log_partition_weights(log_weights: Tensor) -> dict[str, Tensor]:
    """log Z ~= log mean_j w_j from N independent importance weights with E[w] = Z, given by
    their logs (those of :func:`log_partition_proposal`, or annealed importance sampling's), with
    its error bars: the standard error by the delta method, sd(w) / (sqrt(N) mean(w)); ``ess``,
    the effective sample size (sum w)^2 / sum w^2; ``pareto_k``, :func:`pareto_k_hat`, which says
    whether either can be trusted (above ``PARETO_K_RELIABLE`` they cannot). In float64.
    """
    log_w = log_weights.detach().double()
    if log_w.ndim != 1 or len(log_w) < 2:
        raise ValueError(f"expected a 1-D tensor of at least 2 log-weights, got "
                         f"{tuple(log_w.shape)}")
    n = len(log_w)
    log_z = torch.logsumexp(log_w, dim=0) - math.log(n)
    relative = torch.exp(log_w - log_z)  # w_j / mean(w)
    return {"log_z": log_z, "stderr": relative.std() / math.sqrt(n),
            "ess": n / relative.square().mean(), "pareto_k": pareto_k_hat(log_w)}


def log_mixture(log_q: Tensor, log_q_base: Tensor, weight_q: float) -> Tensor:
    """log of the defensive mixture weight_q q + (1 - weight_q) q0 (Hesterberg 1995), in
    float64, from log q and log q0 at the same points.

    Drawing n_q points from q and n_0 from q0 and weighting every one by
    exp(-E) / (n_q / n q + n_0 / n q0) is the balance heuristic of multiple importance sampling
    (Veach & Guibas 1995): unbiased for Z, and with weight_q = n_q / n each weight is at most
    n / n_0 times what q0 alone would give it, and n / n_q times what q would.
    """
    if not 0 < weight_q < 1:
        raise ValueError(f"the mixture weight of q must be in (0, 1), got {weight_q}")
    return torch.logaddexp(math.log(weight_q) + log_q.double(),
                           math.log1p(-weight_q) + log_q_base.double())
