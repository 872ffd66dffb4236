"""A small RealNVP flow on R^2 (Dinh et al. 2017): an exact-density, reparameterised generator
for toy data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from lit_ebm.errors import require_positive_int
from lit_ebm.generators.flows import (
    FlowGenerator,
    MaskedAffineCoupling,
    chain_forward,
    chain_inverse,
)
from lit_ebm.registry import register

LOG_SCALE_BOUND = 2.0
"""Each coupling's log-scale is ``LOG_SCALE_BOUND * tanh(raw / LOG_SCALE_BOUND)``."""


class AffineCoupling2d(MaskedAffineCoupling):
    """Transforms coordinate ``1 - conditioned`` by a scale and shift computed from ``conditioned``.

    From latent to data, ``x_t = z_t * exp(s(z_c)) + t(z_c)`` with ``s`` bounded by
    :data:`LOG_SCALE_BOUND`; ``forward`` (data to latent) is its inverse. The conditioner's last
    layer is zero-initialised, so a new coupling is the identity.
    """

    affine_generates = True

    def __init__(self, conditioned: int, hidden_features: int) -> None:
        super().__init__(torch.eye(2)[conditioned].unsqueeze(0))
        self.conditioned = conditioned
        self.conditioner = nn.Sequential(
            nn.Linear(1, hidden_features),
            nn.SiLU(),
            nn.Linear(hidden_features, hidden_features),
            nn.SiLU(),
            nn.Linear(hidden_features, 2),
        )
        out = cast(nn.Linear, self.conditioner[-1])
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)

    def log_scale_and_shift(self, h: Tensor) -> tuple[Tensor, Tensor]:
        raw_log_scale, shift = self.conditioner(h[:, self.conditioned, None]).chunk(2, dim=1)
        return LOG_SCALE_BOUND * torch.tanh(raw_log_scale / LOG_SCALE_BOUND), shift


@register
class RealNVP2d(FlowGenerator):
    """RealNVP on R^2: a standard normal base and ``num_couplings`` affine couplings.

    Couplings alternate which coordinate conditions the other; each conditioner is an MLP with
    two hidden SiLU layers of ``hidden_features`` units. ``forward`` maps data to base,
    ``inverse`` base to data; both also return the log-determinant of their Jacobian.
    """

    discrete = False

    def __init__(self, num_couplings: int = 6, hidden_features: int = 64) -> None:
        super().__init__(event_shape=(2,))
        require_positive_int("num_couplings", num_couplings, "num_couplings=6")
        require_positive_int("hidden_features", hidden_features, "hidden_features=64")
        self.couplings = nn.ModuleList(
            AffineCoupling2d(conditioned=i % 2, hidden_features=hidden_features)
            for i in range(num_couplings)
        )

    def _data_to_latent(self) -> list[AffineCoupling2d]:
        """The couplings in data-to-latent order (``couplings`` is latent-to-data)."""
        return list(reversed(cast("Sequence[AffineCoupling2d]", self.couplings)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map data points ``x (B, 2)`` to ``(z, log|det dz/dx|)``."""
        return chain_forward(self._data_to_latent(), x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map base points ``z (B, 2)`` to ``(x, log|det dx/dz|)``."""
        return chain_inverse(self._data_to_latent(), z)
