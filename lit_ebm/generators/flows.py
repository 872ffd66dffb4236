"""The flow-layer protocol that the 2-D and the image RealNVP share (Dinh, Sohl-Dickstein &
Bengio 2017, "Density estimation using Real NVP").

Every invertible piece is a :class:`FlowLayer`. Its ``forward`` is the normalising direction,
data to latent, and returns ``(z, log|det dz/dx|)``; its ``inverse`` is the generating direction
and returns ``(x, log|det dx/dz|)``. Log-determinants have shape ``(B,)``. A flow generator's
density is then exact in the space its data live in, the energy's input space
(docs/mathematics.md, densities in one space).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_ebm.generators.base import Generator, check_temperature


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` of each sample, summed over all but the batch dimension."""
    return -0.5 * (z.square().flatten(1).sum(1) + math.prod(z.shape[1:]) * math.log(2.0 * math.pi))


class FlowLayer(nn.Module, ABC):
    """An invertible map with a tractable Jacobian determinant (Dinh et al. 2017, section 3)."""

    @abstractmethod
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data to latent: ``(z, log|det dz/dx|)``."""

    @abstractmethod
    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Latent to data: ``(x, log|det dx/dz|)``."""


def chain_forward(layers: Sequence[FlowLayer], x: Tensor) -> tuple[Tensor, Tensor]:
    """Each layer's ``forward`` in the order given, with the summed log-determinant."""
    log_det = x.new_zeros(x.shape[0])
    for layer in layers:
        x, layer_log_det = layer(x)
        log_det = log_det + layer_log_det
    return x, log_det


def chain_inverse(layers: Sequence[FlowLayer], z: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`chain_forward` over the same ``layers``: their inverses, last first."""
    log_det = z.new_zeros(z.shape[0])
    for layer in reversed(layers):
        z, layer_log_det = layer.inverse(z)
        log_det = log_det + layer_log_det
    return z, log_det


class MaskedAffineCoupling(FlowLayer):
    """Masked affine coupling (Dinh et al. 2017, eq. 9): entries where ``mask == 1`` pass through
    and condition ``(s, t)``; the others become ``h * exp(s) + t``, with log|det| = sum of ``s``.

    Subclasses supply :meth:`log_scale_and_shift`, computed from the entries where ``mask == 1``
    only; it is zeroed here where ``mask == 1``. As in the paper, ``h * exp(s) + t`` is the
    data-to-latent map; a subclass that sets ``affine_generates = True`` applies it from latent
    to data instead, so that its ``forward`` is ``(h - t) * exp(-s)`` (the 2-D coupling does:
    it was defined that way, and its trained weights keep their meaning).
    """

    affine_generates: ClassVar[bool] = False
    mask: Tensor
    free: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("free", 1.0 - mask, persistent=False)

    @abstractmethod
    def log_scale_and_shift(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(s, t)`` broadcastable to ``h``, computed from ``h`` where ``mask == 1``."""

    def _masked_log_scale_and_shift(self, h: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self.log_scale_and_shift(h)
        return log_scale * self.free, shift * self.free

    def _affine(self, h: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._masked_log_scale_and_shift(h)
        return h * log_scale.exp() + shift, log_scale.flatten(1).sum(1)

    def _affine_inverse(self, h: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._masked_log_scale_and_shift(h)
        return (h - shift) * (-log_scale).exp(), -log_scale.flatten(1).sum(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._affine_inverse(x) if self.affine_generates else self._affine(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._affine(z) if self.affine_generates else self._affine_inverse(z)


class Squeeze(FlowLayer):
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``, channels ordered (row in the 2x2 block, column, C)
    (Dinh et al. 2017, section 3.6); a permutation, so its log-determinant is zero."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, height, width = x.shape
        z = x.reshape(b, c, height // 2, 2, width // 2, 2).permute(0, 3, 5, 1, 2, 4)
        return z.reshape(b, 4 * c, height // 2, width // 2), x.new_zeros(b)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        b, c, height, width = z.shape
        x = z.reshape(b, 2, 2, c // 4, height, width).permute(0, 3, 4, 1, 5, 2)
        return x.reshape(b, c // 4, 2 * height, 2 * width), z.new_zeros(b)


class LogitTransform(FlowLayer):
    """``x in [0, 1] -> logit(alpha + (1 - 2 alpha) x)`` (Dinh et al. 2017, section 4.1), for
    ``0 < alpha < 0.5``; its inverse returns values in ``(-alpha, 1 - alpha) / (1 - 2 alpha)``."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def _log_det(self, s: Tensor) -> Tensor:
        """``log|det ds/dx|`` at the logits ``s``."""
        # d logit(y) / dy = 1 / (y (1 - y)) and -log y - log(1 - y) = softplus(s) + softplus(-s).
        log_det = (F.softplus(s) + F.softplus(-s)).flatten(1).sum(1)
        return log_det + math.prod(s.shape[1:]) * math.log(1.0 - 2.0 * self.alpha)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pixels to logits. A sampled pixel whose logit saturated decodes to the very edge of
        the range, where float rounding puts y on 1: logit's eps keeps its density finite."""
        y = self.alpha + (1.0 - 2.0 * self.alpha) * x
        s = torch.logit(y, eps=torch.finfo(y.dtype).eps)
        return s, self._log_det(s)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = (torch.sigmoid(z) - self.alpha) / (1.0 - 2.0 * self.alpha)
        return x, -self._log_det(z)


class FlowGenerator(Generator, FlowLayer):
    """A generator that is a flow onto a standard normal latent of shape ``(num_dims,)``.

    ``log q(x) = log N(f(x); 0, I) + log|det df/dx|`` for the flow ``f = forward`` (the change
    of variables formula, Dinh et al. 2017, section 3.1); samples are ``f^-1(z)``, z ~ N(0, I).
    """

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log q(x)`` of each sample; shape ``(B,)``."""
        z, log_det = self(x)
        return standard_normal_log_prob(z) + log_det

    def sample(self, num_samples: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """Reparameterised ``(x, log_q)``: gradients reach the parameters through both. At
        ``temperature`` T the latent is z ~ N(0, T^2 I) (Kingma & Dhariwal 2018, "Glow"), and
        ``log_q`` stays the model's (T = 1) log-density of the x drawn."""
        check_temperature(temperature)
        param = next(self.parameters())
        z = temperature * torch.randn(num_samples, self.num_dims, device=param.device,
                                      dtype=param.dtype)
        x, log_det = self.inverse(z)
        return x, standard_normal_log_prob(z) - log_det
