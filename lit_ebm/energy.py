"""Energy networks E(x) (low energy = likely) for 2-D points and for images.

Neither network uses normalisation layers: batch statistics would make E(x) depend on the rest of
the batch, and the data and generated batches must be scored by the same function.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from lit_ebm.errors import require, require_image_shape, require_positive_int
from lit_ebm.generators.base import Generator
from lit_ebm.precision import at_least_float32, density_call, float32_layer
from lit_ebm.registry import register


def quantise_straight_through(x: Tensor) -> Tensor:
    """What survives 8-bit quantisation of images ``x`` in [0, 1]: the centre (k + 1/2) / 256 of
    level k = clamp(floor(256 x), 0, 255), with the identity as its derivative.

    Dequantised data x = (k + u) / 256 and discrete levels k / 255 both map to their level's
    centre; a flow sample outside [0, 1) maps to the end level it would be saved as. An energy
    f(Q(x)) is still a function of x, so p(x) = q0(x) exp(-f(Q(x))) / Z stays an exact
    density; it cannot tell values within one level apart, nor values beyond [0, 1) from the
    end levels. Q is piecewise constant, so a reparameterised generator step would get no
    gradient through it: the forward value is Q(x), the backward pass treats Q as the identity
    (the straight-through estimator, Bengio, Leonard & Courville 2013), i.e. it takes grad f at
    the level's centre for grad_x f(Q(x)). That biases the pathwise L_G gradient by the change
    of grad f within one level; the energy step, the score-function and the forward-KL
    generator steps use only values and stay exact.
    """
    levels = torch.floor(x * 256).clamp(0, 255)
    return x + ((levels + 0.5) / 256 - x).detach()


def _maybe_spectral_norm(layer: nn.Module, enabled: bool) -> nn.Module:
    return _spectral_norm(layer) if enabled else layer


class _ZeroGain(nn.Module):
    """``gain * layer(h)`` with a learnable ``gain`` that starts at 0 (a spectrally normalised
    weight cannot itself start at zero: its norm would be 0)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, h: Tensor) -> Tensor:
        return self.gain * self.layer(h)


def _output_layer(in_features: int, spectral_norm: bool, zero_init: bool) -> nn.Module:
    """The scalar output layer; with ``zero_init`` its output is exactly 0 for every input at
    the start, so a residual EBM q0 exp(-f) / Z starts as q0 itself."""
    linear = nn.Linear(in_features, 1)
    if zero_init and not spectral_norm:
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
    layer = _maybe_spectral_norm(linear, spectral_norm)
    return _ZeroGain(layer) if zero_init and spectral_norm else layer


def _float32_output(net: nn.Sequential, h: Tensor, extra: Tensor | None = None) -> Tensor:
    """``net``'s hidden layers in the run's precision (autocast included), then its scalar
    output layer, squeezed and plus ``extra``, in float32 (lit_ebm.precision)."""
    energy = float32_layer(net[-1], net[:-1](h)).squeeze(-1)
    return energy if extra is None else energy + extra


@register
class MLPEnergy(nn.Module):
    """``E(x) = net(x) + confinement * ||x||^2`` for flat inputs of ``in_features`` dimensions.

    ``net`` is an MLP with ``depth`` hidden layers of ``hidden_features`` SiLU units and a scalar
    output. SiLU is Lipschitz, so ``|net(x)| <= |net(0)| + L ||x||`` grows at most linearly; the
    fixed quadratic term (``confinement > 0``) dominates far from the origin, so
    ``Z = integral exp(-E(x)) dx`` is finite for every parameter value and ``p = exp(-E) / Z`` is
    a proper density. Its output is float32 under autocast (``autocast_safe``).
    """

    autocast_safe = True

    def __init__(self, in_features: int = 2, hidden_features: int = 128, depth: int = 3,
                 confinement: float = 0.1, spectral_norm: bool = False,
                 zero_init: bool = False) -> None:
        super().__init__()
        require_positive_int("in_features", in_features)
        require_positive_int("hidden_features", hidden_features, "hidden_features=128")
        require_positive_int("depth", depth, "depth=3 (hidden layers)")
        require(
            confinement > 0,
            "confinement",
            f"confinement must be > 0 so that Z is finite, got {confinement}; try 0.1",
        )
        self.confinement = confinement
        widths = [in_features] + [hidden_features] * depth
        layers: list[nn.Module] = []
        for width_in, width_out in pairwise(widths):
            linear = nn.Linear(width_in, width_out)
            layers += [_maybe_spectral_norm(linear, spectral_norm), nn.SiLU()]
        layers.append(_output_layer(hidden_features, spectral_norm, zero_init))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Energies ``(B,)`` of a batch ``(B, in_features)`` (other shapes are flattened)."""
        x = x.flatten(1)
        return _float32_output(self.net, x, self.confinement * at_least_float32(x).pow(2).sum(1))


@register
class ConvEnergy(nn.Module):
    """Convolutional energy for images in ``[0, 1]`` of shape ``image_shape = (C, H, W)``.

    Inputs are rescaled to ``[-1, 1]``, then pass ``depth`` stages; stage ``i`` has
    ``channels * 2**i`` channels and is a 3x3 convolution followed by a stride-2 3x3 convolution
    (halving height and width, rounding up), each followed by SiLU. Global average pooling and a
    linear layer give one scalar per image. ``spectral_norm=True`` wraps every convolution and the
    final linear layer in :func:`torch.nn.utils.parametrizations.spectral_norm`; ``zero_init=True``
    makes the output exactly 0 at the start; ``quantised_input=True`` scores only what survives
    8-bit quantisation (:func:`quantise_straight_through`). Under autocast the convolutions run
    in the run's precision and the output layer in float32 (``autocast_safe``).
    """

    autocast_safe = True

    def __init__(self, image_shape: tuple[int, int, int], channels: int = 64, depth: int = 3,
                 spectral_norm: bool = False, zero_init: bool = False,
                 quantised_input: bool = False) -> None:
        super().__init__()
        in_channels, height, width = require_image_shape(image_shape, "ConvEnergy")
        self.quantised_input = quantised_input
        require_positive_int("channels", channels, "channels=64")
        require_positive_int("depth", depth, "depth=3 (downsampling stages)")
        require(
            2**depth <= min(height, width),
            "depth",
            f"depth={depth} halves the {height}x{width} image below 1 pixel; "
            f"use depth <= {min(height, width).bit_length() - 1}",
        )
        self.image_shape = (in_channels, height, width)

        def conv(c_in: int, c_out: int, stride: int) -> nn.Module:
            layer = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1)
            return _maybe_spectral_norm(layer, spectral_norm)

        layers: list[nn.Module] = []
        for stage in range(depth):
            out_channels = channels * 2**stage
            layers += [conv(in_channels, out_channels, 1), nn.SiLU()]
            layers += [conv(out_channels, out_channels, 2), nn.SiLU()]
            in_channels = out_channels
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        layers.append(_output_layer(in_channels, spectral_norm, zero_init))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Energies ``(B,)`` of images ``(B, C, H, W)`` with values in ``[0, 1]``."""
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"expected images of shape (B, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        if self.quantised_input:
            x = quantise_straight_through(x)
        return _float32_output(self.net, 2.0 * x - 1.0)


@register
class ResidualEnergy(nn.Module):
    """E(x) = f(x) - log q0(x): an energy measured against a frozen base density q0.

    The EBM is p(x) = q0(x) exp(-f(x)) / Z, so with f = 0 it starts as q0 itself (for example
    the maximum-likelihood generator), and the discriminator starts balanced instead of facing
    the thousands of nats that separate image densities. Gradients reach ``x`` through both
    terms; q0's parameters are frozen and stay in eval mode. Each part is evaluated at the
    precision :mod:`lit_ebm.precision` gives it, so E is float32 under autocast.
    """

    autocast_safe = True

    def __init__(self, net: nn.Module, base: Generator) -> None:
        super().__init__()
        self.net = net
        self.base = base.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> ResidualEnergy:
        super().train(mode)
        self.base.eval()
        return self

    def forward(self, x: Tensor, base_log_prob: Tensor | None = None) -> Tensor:
        """E(x); pass ``base_log_prob`` = log q0(x) where it is already computed, to skip q0."""
        device = x.device.type
        if base_log_prob is None:
            base_log_prob = density_call(self.base, device, self.base.log_prob, x)
        return density_call(self.net, device, self.net, x) - base_log_prob


def base_of(energy: nn.Module) -> Generator | None:
    """A residual energy's frozen base q0; None for an energy measured against no base."""
    return energy.base if isinstance(energy, ResidualEnergy) else None


def learnable_part(energy: nn.Module) -> nn.Module:
    """f, what training changes: a residual energy's net, else the energy itself."""
    return energy.net if isinstance(energy, ResidualEnergy) else energy
