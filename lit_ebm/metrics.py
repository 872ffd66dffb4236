"""Metrics that synchronise themselves across processes (torchmetrics)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric


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
