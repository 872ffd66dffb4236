"""Multi-scale RealNVP (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP").

The bijection maps an image x in [0, 1]^D to a flat standard-normal latent z in R^D:

1. logit preprocessing (Dinh et al. 2017, section 4.1): y = alpha + (1 - 2 alpha) x, s = logit(y);
2. per scale except the last: 3 checkerboard affine couplings, a squeeze (C, H, W) ->
   (4C, H/2, W/2), 3 channel-wise affine couplings, then half of the channels are factored out
   into the latent (section 3.6);
3. last scale: 4 checkerboard affine couplings.

Every step is a :class:`~lit_ebm.generators.flows.FlowLayer` and contributes its
log-determinant, so :meth:`RealNVP.log_prob` is the exact density of x in [0, 1]^D, the space the
energy sees (docs/mathematics.md, densities in one space). Decoded samples lie in
(-alpha / (1 - 2 alpha), 1 + alpha / (1 - 2 alpha)), which is slightly larger than [0, 1]: the
inverse of the preprocessing allows it, and ``log_q`` is still the exact density of the returned
x. Clamp only for display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from lit_ebm.errors import InvalidArgument, require, require_image_shape, require_positive_int
from lit_ebm.generators.flows import (
    FlowGenerator,
    FlowLayer,
    LogitTransform,
    MaskedAffineCoupling,
    Squeeze,
    chain_forward,
    chain_inverse,
)
from lit_ebm.precision import float32_layer
from lit_ebm.registry import register


class _ResidualBlock(nn.Module):
    """Pre-activation residual block of two 3x3 convolutions with per-sample GroupNorm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.GroupNorm(1, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(1, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.layers(h)


class _CouplingNet(nn.Module):
    """Small ResNet giving the raw log-scale and shift of an affine coupling.

    Normalisation is per sample (GroupNorm), never over the batch, so a sample's density does not
    depend on its batch and is the same in train and eval mode. The output convolution starts at
    zero, so every coupling starts as the identity. Under autocast the hidden layers run in the
    run's precision and the output convolution in float32 (:mod:`lit_ebm.precision`).
    """

    def __init__(self, channels: int, num_blocks: int, hidden_channels: int) -> None:
        super().__init__()
        out = nn.Conv2d(hidden_channels, 2 * channels, 3, padding=1)
        assert out.bias is not None  # created with bias=True
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.layers = nn.Sequential(
            nn.Conv2d(channels, hidden_channels, 3, padding=1),
            *(_ResidualBlock(hidden_channels) for _ in range(num_blocks)),
            nn.GroupNorm(1, hidden_channels),
            nn.SiLU(),
            out,
        )

    def forward(self, h: Tensor) -> Tensor:
        return float32_layer(self.layers[-1], self.layers[:-1](h))


class _AffineCoupling(MaskedAffineCoupling):
    """Masked affine coupling (Dinh et al. 2017, eq. 9) with ``s = scale * tanh(raw)``, bounded by
    a learnable per-channel scale. The mask is a checkerboard of shape (1, 1, H, W) or a channel
    mask of shape (1, C, 1, 1).
    """

    def __init__(self, mask: Tensor, channels: int, num_blocks: int, hidden_channels: int) -> None:
        super().__init__(mask)
        self.net = _CouplingNet(channels, num_blocks, hidden_channels)
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def log_scale_and_shift(self, h: Tensor) -> tuple[Tensor, Tensor]:
        raw, shift = self.net(h * self.mask).chunk(2, dim=1)
        return self.scale * torch.tanh(raw), shift


def _checkerboard(height: int, width: int, parity: int) -> Tensor:
    """A (1, 1, H, W) mask equal to 1 where (row + column + parity) is even."""
    rows = torch.arange(height).unsqueeze(1)
    cols = torch.arange(width).unsqueeze(0)
    return ((rows + cols + parity) % 2 == 0).float().reshape(1, 1, height, width)


def _channel_mask(channels: int, parity: int) -> Tensor:
    """A (1, C, 1, 1) mask equal to 1 on the first half of the channels (second if parity 1)."""
    mask = torch.zeros(1, channels, 1, 1)
    half = channels // 2
    if parity == 0:
        mask[:, :half] = 1.0
    else:
        mask[:, half:] = 1.0
    return mask


class _Scale(FlowLayer):
    """One level of the multi-scale architecture (Dinh et al. 2017, section 3.6).

    Maps (C, H, W) to (4C, H/2, W/2) through checkerboard couplings, a squeeze and channel-wise
    couplings, or, for the last level, to (C, H, W) through checkerboard couplings only; the
    model factors out half of a non-last level's output channels.
    """

    def __init__(
        self, shape: tuple[int, int, int], last: bool, num_blocks: int, hidden_channels: int
    ) -> None:
        super().__init__()
        channels, height, width = shape
        self.last = last
        num_checkerboard = 4 if last else 3
        self.checkerboard = nn.ModuleList(
            _AffineCoupling(
                _checkerboard(height, width, i % 2), channels, num_blocks, hidden_channels
            )
            for i in range(num_checkerboard)
        )
        self.channelwise = nn.ModuleList(
            ()
            if last
            else (
                _AffineCoupling(
                    _channel_mask(4 * channels, i % 2), 4 * channels, num_blocks, hidden_channels
                )
                for i in range(3)
            )
        )
        self.squeeze = None if last else Squeeze()

    def _layers(self) -> list[FlowLayer]:
        """The level's layers in data-to-latent order."""
        checkerboard = cast("Sequence[FlowLayer]", self.checkerboard)
        if self.squeeze is None:
            return list(checkerboard)
        return [*checkerboard, self.squeeze, *cast("Sequence[FlowLayer]", self.channelwise)]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return chain_forward(self._layers(), x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return chain_inverse(self._layers(), z)


@register
class RealNVP(FlowGenerator):
    """Multi-scale RealNVP on images in [0, 1]^(C, H, W) with a flat N(0, I) latent.

    Args:
        image_shape: ``(C, H, W)``; H and W must be divisible by ``2 ** (num_scales - 1)``.
        num_scales: number of levels; all but the last squeeze and factor out half the channels.
        num_blocks: residual blocks in each coupling network.
        hidden_channels: width of each coupling network.
        logit_alpha: preprocessing margin, ``0 < logit_alpha < 0.5``.

    ``forward`` maps images ``(B, C, H, W)`` to latents ``(B, D)``, ``inverse`` the reverse. The
    latent is the concatenation, in order, of the flattened pieces factored out at scales
    0, 1, ..., followed by the flattened output of the last scale. Samples may fall slightly
    outside [0, 1] (see the module docstring).
    """

    discrete = False
    autocast_safe = True  # float32 from each coupling network's output layer on

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_scales: int = 2,
        num_blocks: int = 4,
        hidden_channels: int = 64,
        logit_alpha: float = 0.05,
    ) -> None:
        channels, height, width = require_image_shape(image_shape, "RealNVP")
        require_positive_int("num_scales", num_scales, "num_scales=2")
        require_positive_int("num_blocks", num_blocks, "num_blocks=4")
        require_positive_int("hidden_channels", hidden_channels, "hidden_channels=64")
        require(0.0 < logit_alpha < 0.5, "logit_alpha",
                f"logit_alpha must satisfy 0 < logit_alpha < 0.5, got {logit_alpha!r}; "
                "pass e.g. logit_alpha=0.05")
        factor = 2 ** (num_scales - 1)
        if height % factor or width % factor:
            usable = min((height & -height), (width & -width)).bit_length()
            raise InvalidArgument(
                "num_scales",
                f"{height}x{width} images cannot be halved num_scales-1 = {num_scales - 1} "
                f"times (H and W must be divisible by {factor}); use num_scales <= {usable}",
            )
        super().__init__((channels, height, width))
        self.logit_alpha = float(logit_alpha)
        self.logit = LogitTransform(self.logit_alpha)

        scales = []
        self._latent_shapes: list[tuple[int, int, int]] = []
        for i in range(num_scales):
            last = i == num_scales - 1
            scales.append(_Scale((channels, height, width), last, num_blocks, hidden_channels))
            if not last:
                channels, height, width = 2 * channels, height // 2, width // 2
                self._latent_shapes.append((channels, height, width))
        self._latent_shapes.append((channels, height, width))
        self.scales = nn.ModuleList(scales)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data ``(B, C, H, W)`` to latent ``(B, D)``, with log|det dz/dx| of shape ``(B,)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"expected images of shape (B, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x.shape)}; reshape the batch or fix image_shape"
            )
        h, log_det = self.logit(x)
        pieces = []
        for scale in self.scales:
            h, scale_log_det = scale(h)
            log_det = log_det + scale_log_det
            if not scale.last:
                factored, h = h.chunk(2, dim=1)
                pieces.append(factored.flatten(1))
        pieces.append(h.flatten(1))
        return torch.cat(pieces, dim=1), log_det

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Latent ``(B, D)`` to data ``(B, C, H, W)``, with log|det dx/dz| of shape ``(B,)``."""
        if z.dim() != 2 or z.shape[1] != self.num_dims:
            raise ValueError(
                f"expected latents of shape (B, {self.num_dims}), got {tuple(z.shape)}"
            )
        sizes = [math.prod(shape) for shape in self._latent_shapes]
        pieces = [
            piece.reshape(-1, *shape)
            for piece, shape in zip(z.split(sizes, dim=1), self._latent_shapes, strict=True)
        ]
        h, log_det = pieces.pop(), z.new_zeros(z.shape[0])
        for scale in reversed(cast("Sequence[_Scale]", self.scales)):
            if not scale.last:
                h = torch.cat([pieces.pop(), h], dim=1)
            h, scale_log_det = scale.inverse(h)
            log_det = log_det + scale_log_det
        x, logit_log_det = self.logit.inverse(h)
        return x, log_det + logit_log_det
