"""Metrics: pooled log-means that synchronise across processes, manifold metrics of sample
quality, and the estimators that evaluate an EBM through its generator (docs/evaluation.md)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_ebm.objectives import log_partition_q


def _logsumexp_over_ranks(stacked: Tensor) -> Tensor:
    return torch.logsumexp(stacked, dim=0)


class LogMeanExp(Metric):
    """log of the mean of exp(values) over everything seen, on all ranks, in float64.

    Pools an importance-sampling estimate such as ``log_z_is`` over a whole validation epoch
    instead of averaging per-batch log-estimates (which Jensen's inequality biases low).
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.log_sum: Tensor
        self.count: Tensor
        self.add_state("log_sum", default=torch.tensor(-math.inf, dtype=torch.float64),
                       dist_reduce_fx=_logsumexp_over_ranks)
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, values: Tensor) -> None:
        values = values.detach().to(torch.float64).flatten()
        self.log_sum = torch.logaddexp(self.log_sum, torch.logsumexp(values, dim=0))
        self.count = self.count + values.numel()

    def compute(self) -> Tensor:
        return self.log_sum - torch.log(self.count)


def knn_radii(features: Tensor, k: int) -> Tensor:
    """Distance from each row of ``features`` to its k-th nearest other row."""
    distances = torch.cdist(features, features)
    return distances.kthvalue(k + 1, dim=1).values  # the row itself is the nearest, at 0


def precision_recall_density_coverage(real: Tensor, fake: Tensor, k: int = 5
                                      ) -> dict[str, float]:
    """Manifold metrics on features ``(n, d)`` and ``(m, d)``, with k-nearest-neighbour balls.

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
    real, fake = real.double(), fake.double()
    real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
    distances = torch.cdist(real, fake)  # (n, m)
    in_real_ball = distances <= real_radii.unsqueeze(1)
    return {
        "precision": float(in_real_ball.any(dim=0).double().mean()),
        "recall": float((distances <= fake_radii.unsqueeze(0)).any(dim=1).double().mean()),
        "density": float(in_real_ball.sum(dim=0).double().mean() / k),
        "coverage": float(in_real_ball.any(dim=1).double().mean()),
    }


def log_partition_proposal(energy: Tensor, log_q: Tensor) -> dict[str, Tensor]:
    """:func:`lit_ebm.objectives.log_partition_q`, log Z ~= log mean_j w_j with weights
    w_j = exp(-E(x_j) - log q(x_j)) for x_j ~ q, with its error bars. Its standard error by
    the delta method is sd(w) / (sqrt(N) mean(w)); ``ess`` is the effective sample size
    (sum w)^2 / sum w^2. Computed in float64 in log space.
    """
    if energy.shape != log_q.shape or energy.ndim != 1 or len(energy) < 2:
        raise ValueError(f"expected two 1-D tensors of at least 2 samples, got energy "
                         f"{tuple(energy.shape)} and log_q {tuple(log_q.shape)}")
    log_w = -energy.detach().double() - log_q.detach().double()
    n = len(log_w)
    log_z = log_partition_q(energy.detach(), log_q.detach())
    relative = torch.exp(log_w - log_z)  # w_j / mean(w)
    return {"log_z": log_z, "stderr": relative.std() / math.sqrt(n),
            "ess": n / relative.square().mean()}


def sampling_importance_resampling(log_weights: Tensor,
                                   generator: torch.Generator | None = None) -> Tensor:
    """Pick one candidate per row of ``log_weights`` ``(N, M)`` with probability proportional to
    exp(log_weights); returns the picked column of each row, ``(N,)``.

    With log_weights = -E(x) - log q(x) for M candidates x ~ q, the picks approach samples of
    p = exp(-E) / Z as M grows; at M = 1 they are the generator's samples.
    """
    if log_weights.ndim != 2:
        raise ValueError(f"expected log-weights of shape (N, M), got {tuple(log_weights.shape)}")
    probabilities = torch.softmax(log_weights.detach().double(), dim=1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
