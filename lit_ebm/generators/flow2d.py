"""A small RealNVP flow on R^2: an exact-density, reparameterised generator for toy data."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_ebm.config import require
from lit_ebm.generators.base import Generator

LOG_SCALE_BOUND = 2.0
"""Each coupling's log-scale is ``LOG_SCALE_BOUND * tanh(raw / LOG_SCALE_BOUND)``."""


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over the last dimension."""
    return -0.5 * (z.pow(2).sum(dim=-1) + z.shape[-1] * math.log(2.0 * math.pi))


class AffineCoupling2d(nn.Module):
    """Transforms coordinate ``1 - conditioned`` by a scale and shift computed from ``conditioned``.

    ``x_t = z_t * exp(s(z_c)) + t(z_c)`` with ``s`` bounded by :data:`LOG_SCALE_BOUND`. The
    conditioner's last layer is zero-initialised, so a new coupling is the identity.
    """

    def __init__(self, conditioned: int, hidden_features: int) -> None:
        super().__init__()
        self.conditioned = conditioned
        self.transformed = 1 - conditioned
        self.conditioner = nn.Sequential(
            nn.Linear(1, hidden_features),
            nn.SiLU(),
            nn.Linear(hidden_features, hidden_features),
            nn.SiLU(),
            nn.Linear(hidden_features, 2),
        )
        nn.init.zeros_(self.conditioner[-1].weight)
        nn.init.zeros_(self.conditioner[-1].bias)

    def _scale_shift(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raw_log_scale, shift = self.conditioner(x[:, self.conditioned, None]).unbind(dim=1)
        log_scale = LOG_SCALE_BOUND * torch.tanh(raw_log_scale / LOG_SCALE_BOUND)
        return log_scale, shift

    def _with_transformed(self, x: Tensor, transformed: Tensor) -> Tensor:
        """``x`` with its transformed coordinate replaced (out of place)."""
        columns = [x[:, self.conditioned], transformed]
        return torch.stack(columns if self.conditioned == 0 else columns[::-1], dim=1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, log|det dx/dz|)``."""
        log_scale, shift = self._scale_shift(z)
        x_t = z[:, self.transformed] * log_scale.exp() + shift
        return self._with_transformed(z, x_t), log_scale

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, log|det dz/dx|)``."""
        log_scale, shift = self._scale_shift(x)
        z_t = (x[:, self.transformed] - shift) * (-log_scale).exp()
        return self._with_transformed(x, z_t), -log_scale


class RealNVP2d(Generator):
    """RealNVP on R^2: a standard normal base and ``num_couplings`` affine couplings.

    Couplings alternate which coordinate conditions the other; each conditioner is an MLP with
    two hidden SiLU layers of ``hidden_features`` units. ``forward`` maps base to data,
    ``inverse`` data to base; both also return the log-determinant of their Jacobian.
    """

    discrete = False

    def __init__(self, num_couplings: int = 6, hidden_features: int = 64) -> None:
        super().__init__(event_shape=(2,))
        require(num_couplings >= 1, "num_couplings",
                f"num_couplings must be >= 1, got {num_couplings}")
        require(hidden_features >= 1, "hidden_features",
                f"hidden_features must be >= 1, got {hidden_features}")
        self.couplings = nn.ModuleList(
            AffineCoupling2d(conditioned=i % 2, hidden_features=hidden_features)
            for i in range(num_couplings)
        )

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map base points ``z (B, 2)`` to ``(x, log|det dx/dz|)``."""
        x, log_det = z, z.new_zeros(len(z))
        for coupling in self.couplings:
            x, coupling_log_det = coupling(x)
            log_det = log_det + coupling_log_det
        return x, log_det

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map data points ``x (B, 2)`` to ``(z, log|det dz/dx|)``."""
        z, log_det = x, x.new_zeros(len(x))
        for coupling in reversed(self.couplings):
            z, coupling_log_det = coupling.inverse(z)
            log_det = log_det + coupling_log_det
        return z, log_det

    def log_prob(self, x: Tensor) -> Tensor:
        z, log_det = self.inverse(x)
        return standard_normal_log_prob(z) + log_det

    def sample(self, num_samples: int) -> tuple[Tensor, Tensor]:
        reference = next(self.parameters())
        z = torch.randn(num_samples, 2, device=reference.device, dtype=reference.dtype)
        x, log_det = self(z)
        return x, standard_normal_log_prob(z) - log_det
