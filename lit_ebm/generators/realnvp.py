"""Multi-scale RealNVP (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP").

The bijection maps an image x in [0, 1]^D to a flat standard-normal latent z in R^D:

1. logit preprocessing (Dinh et al. 2017, section 4.1): y = alpha + (1 - 2 alpha) x, s = logit(y);
2. per scale except the last: 3 checkerboard affine couplings, a squeeze (C, H, W) ->
   (4C, H/2, W/2), 3 channel-wise affine couplings, then half of the channels are factored out
   into the latent (section 3.6);
3. last scale: 4 checkerboard affine couplings.

Every step contributes its log-determinant, so :meth:`RealNVP.log_prob` is the exact density of x
in [0, 1]^D, the space the energy sees (DESIGN.md, "Densities must live in one space").
Decoded samples lie in (-alpha / (1 - 2 alpha), 1 + alpha / (1 - 2 alpha)), which is slightly
larger than [0, 1]: the inverse of the preprocessing allows it, and ``log_q`` is still the exact
density of the returned x. Clamp only for display.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_ebm.config import InvalidArgument, require
from lit_ebm.generators.base import Generator


def _squeeze(h: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2); channels ordered (row in 2x2 block, column, C)."""
    b, c, height, width = h.shape
    h = h.reshape(b, c, height // 2, 2, width // 2, 2).permute(0, 3, 5, 1, 2, 4)
    return h.reshape(b, 4 * c, height // 2, width // 2)


def _unsqueeze(h: Tensor) -> Tensor:
    """Inverse of :func:`_squeeze`."""
    b, c, height, width = h.shape
    h = h.reshape(b, 2, 2, c // 4, height, width).permute(0, 3, 4, 1, 5, 2)
    return h.reshape(b, c // 4, 2 * height, 2 * width)


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
    zero, so every coupling starts as the identity.
    """

    def __init__(self, channels: int, num_blocks: int, hidden_channels: int) -> None:
        super().__init__()
        out = nn.Conv2d(hidden_channels, 2 * channels, 3, padding=1)
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
        return self.layers(h)


class _AffineCoupling(nn.Module):
    """Masked affine coupling (Dinh et al. 2017, eq. 9).

    Entries where ``mask == 1`` pass through and condition the network; the others become
    ``h * exp(s) + t`` with ``s = scale * tanh(raw)`` bounded by a learnable per-channel scale.
    The mask is a checkerboard of shape (1, 1, H, W) or a channel mask of shape (1, C, 1, 1).
    """

    def __init__(self, mask: Tensor, channels: int, num_blocks: int, hidden_channels: int) -> None:
        super().__init__()
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("free", 1.0 - mask, persistent=False)
        self.net = _CouplingNet(channels, num_blocks, hidden_channels)
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def _log_scale_and_shift(self, h: Tensor) -> tuple[Tensor, Tensor]:
        raw, shift = self.net(h * self.mask).chunk(2, dim=1)
        return self.scale * torch.tanh(raw) * self.free, shift * self.free

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Data-to-latent direction; returns the output and log|det| per sample."""
        log_scale, shift = self._log_scale_and_shift(h)
        return h * log_scale.exp() + shift, log_scale.sum(dim=(1, 2, 3))

    def inverse(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Latent-to-data direction; returns the output and log|det| per sample."""
        log_scale, shift = self._log_scale_and_shift(h)
        return (h - shift) * (-log_scale).exp(), -log_scale.sum(dim=(1, 2, 3))


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


class _Scale(nn.Module):
    """One level of the multi-scale architecture (Dinh et al. 2017, section 3.6)."""

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

    def encode(self, h: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """Returns (input of the next scale, factored-out latent or None, log|det|)."""
        log_det = h.new_zeros(h.shape[0])
        for coupling in self.checkerboard:
            h, ld = coupling(h)
            log_det = log_det + ld
        if self.last:
            return h, None, log_det
        h = _squeeze(h)
        for coupling in self.channelwise:
            h, ld = coupling(h)
            log_det = log_det + ld
        z, h = h.chunk(2, dim=1)
        return h, z, log_det

    def decode(self, h: Tensor, z: Tensor | None) -> tuple[Tensor, Tensor]:
        """Inverse of :meth:`encode`; returns (input of this scale, log|det|)."""
        log_det = h.new_zeros(h.shape[0])
        if not self.last:
            h = torch.cat([z, h], dim=1)
            for coupling in reversed(self.channelwise):
                h, ld = coupling.inverse(h)
                log_det = log_det + ld
            h = _unsqueeze(h)
        for coupling in reversed(self.checkerboard):
            h, ld = coupling.inverse(h)
            log_det = log_det + ld
        return h, log_det


def _positive_int(name: str, value: object) -> None:
    require(not isinstance(value, bool) and isinstance(value, int) and value >= 1, name,
            f"{name} must be a positive integer, got {value!r}; pass e.g. {name}=2")


class RealNVP(Generator):
    """Multi-scale RealNVP on images in [0, 1]^(C, H, W) with a flat N(0, I) latent.

    Args:
        image_shape: ``(C, H, W)``; H and W must be divisible by ``2 ** (num_scales - 1)``.
        num_scales: number of levels; all but the last squeeze and factor out half the channels.
        num_blocks: residual blocks in each coupling network.
        hidden_channels: width of each coupling network.
        logit_alpha: preprocessing margin, ``0 < logit_alpha < 0.5``.

    The latent is the concatenation, in order, of the flattened pieces factored out at scales
    0, 1, ..., followed by the flattened output of the last scale. Samples may fall slightly
    outside [0, 1] (see the module docstring).
    """

    discrete = False

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_scales: int = 2,
        num_blocks: int = 4,
        hidden_channels: int = 64,
        logit_alpha: float = 0.05,
    ) -> None:
        image_shape = tuple(image_shape)
        require(len(image_shape) == 3, "image_shape",
                f"image_shape must be (C, H, W), got {image_shape!r}; pass e.g. (1, 28, 28)")
        for dim in image_shape:
            _positive_int("image_shape", dim)
        _positive_int("num_scales", num_scales)
        _positive_int("num_blocks", num_blocks)
        _positive_int("hidden_channels", hidden_channels)
        require(0.0 < logit_alpha < 0.5, "logit_alpha",
                f"logit_alpha must satisfy 0 < logit_alpha < 0.5, got {logit_alpha!r}; "
                "pass e.g. logit_alpha=0.05")
        channels, height, width = image_shape
        factor = 2 ** (num_scales - 1)
        if height % factor or width % factor:
            usable = min((height & -height), (width & -width)).bit_length()
            raise InvalidArgument(
                "num_scales",
                f"{height}x{width} images cannot be halved num_scales-1 = {num_scales - 1} "
                f"times (H and W must be divisible by {factor}); use num_scales <= {usable}",
            )
        super().__init__(image_shape)
        self.logit_alpha = float(logit_alpha)

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

    def _preprocess(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x -> logit(alpha + (1 - 2 alpha) x) and its log|det| per sample.

        A sampled pixel whose logit saturated decodes to the very edge of the range, where float
        rounding puts y on 1; logit's eps keeps such a log-density finite (data never get there).
        """
        a = self.logit_alpha
        y = a + (1.0 - 2.0 * a) * x
        s = torch.logit(y, eps=torch.finfo(y.dtype).eps)
        # d logit(y) / dy = 1 / (y (1 - y)) and -log y - log(1 - y) = softplus(s) + softplus(-s).
        log_det = (F.softplus(s) + F.softplus(-s)).flatten(1).sum(1)
        return s, log_det + self.num_dims * math.log(1.0 - 2.0 * a)

    def _postprocess(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """Inverse of :meth:`_preprocess`, with its own log|det|."""
        a = self.logit_alpha
        x = (torch.sigmoid(s) - a) / (1.0 - 2.0 * a)
        log_det = (F.softplus(s) + F.softplus(-s)).flatten(1).sum(1)
        return x, -log_det - self.num_dims * math.log(1.0 - 2.0 * a)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data ``(B, C, H, W)`` to latent ``(B, D)``, with log|det dz/dx| of shape ``(B,)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"expected images of shape (B, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x.shape)}; reshape the batch or fix image_shape"
            )
        h, log_det = self._preprocess(x)
        pieces = []
        for scale in self.scales:
            h, z, ld = scale.encode(h)
            log_det = log_det + ld
            if z is not None:
                pieces.append(z.flatten(1))
        pieces.append(h.flatten(1))
        return torch.cat(pieces, dim=1), log_det

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
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
        h = pieces[-1]
        log_det = z.new_zeros(z.shape[0])
        for i in reversed(range(len(self.scales))):
            factored = pieces[i] if i < len(self.scales) - 1 else None
            h, ld = self.scales[i].decode(h, factored)
            log_det = log_det + ld
        x, ld = self._postprocess(h)
        return x, log_det + ld

    @staticmethod
    def _standard_normal_log_prob(z: Tensor) -> Tensor:
        return -0.5 * (z.square().sum(1) + z.shape[1] * math.log(2.0 * math.pi))

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of ``x`` in [0, 1]^D (preprocessing included); shape ``(B,)``."""
        z, log_det = self.encode(x)
        return self._standard_normal_log_prob(z) + log_det

    def sample(self, num_samples: int) -> tuple[Tensor, Tensor]:
        """Reparameterised ``(x, log_q)``: gradients reach the parameters through both."""
        param = next(self.parameters())
        z = torch.randn(num_samples, self.num_dims, device=param.device, dtype=param.dtype)
        x, log_det = self.decode(z)
        return x, self._standard_normal_log_prob(z) - log_det
