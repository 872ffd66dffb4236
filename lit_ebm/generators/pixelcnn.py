"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders") with an exact discrete likelihood and a cached sampler.

Sub-pixels are drawn in raster order (rows, columns, then R, G, B), each from a 256-way
categorical: q(k) = prod_d q(k_d | k_<d) is an exact mass (docs/mathematics.md). The network has

- a vertical stack whose features at row i depend on the rows strictly above i only;
- a horizontal stack whose features at (i, j) depend on the pixels left of j in row i, and on the
  vertical stack at (i, j) through a 1x1 convolution (never the reverse: that would leak the
  pixel's value); gated tanh x sigmoid units and residual connections;
- whole-pixel spatial causality: only the first layer excludes the centre pixel;
- an output head whose logits for channel c also receive the current pixel's channels < c
  through a masked 1x1 convolution, so R, then G | R, then B | R, G.

Kernels cover only the causal neighbourhood (no multiplied-out mask), so an output is the same
sum over the whole image or a window: :meth:`PixelCNN.sample` caches activations that way
(Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive Models").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_ebm.errors import require, require_image_shape, require_positive_int
from lit_ebm.generators.base import Generator, check_temperature
from lit_ebm.generators.pixelcnn_sampler import NUM_LEVELS, CachedSampler, InverseCdf
from lit_ebm.precision import float32_layer
from lit_ebm.registry import register


def _scale(x: Tensor) -> Tensor:
    """Network input: levels k / 255 in [0, 1] mapped to [-1, 1]."""
    return 2.0 * x - 1.0


def _gate(a: Tensor) -> Tensor:
    """Gated activation tanh(a_1) * sigmoid(a_2) over the two halves of the channels."""
    value, gate = a.chunk(2, dim=1)
    return torch.tanh(value) * torch.sigmoid(gate)


class _CausalConv(nn.Conv2d):
    """A convolution whose kernel covers only the offsets the raster order allows.

    ``rows`` and ``cols`` are the first and last kernel offsets relative to the output pixel,
    in units of ``dilation``; zero padding keeps the output the size of the input.
    """

    def __init__(self, in_channels: int, out_channels: int, rows: tuple[int, int],
                 cols: tuple[int, int], dilation: int = 1) -> None:
        kernel = (rows[1] - rows[0] + 1, cols[1] - cols[0] + 1)
        super().__init__(in_channels, out_channels, kernel, dilation=dilation)
        # F.pad order (left, right, top, bottom); negative right/bottom crop the unused edge.
        self.pads = (-cols[0] * dilation, cols[1] * dilation, -rows[0] * dilation,
                     rows[1] * dilation)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.pads))


class _GatedLayer(nn.Module):
    """One gated layer of both stacks (van den Oord et al. 2016, figure 2), centre included."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        r = kernel_size // 2
        self.vertical = _CausalConv(channels, 2 * channels, (-r, 0), (-r, r), dilation)
        self.horizontal = _CausalConv(channels, 2 * channels, (0, 0), (-r, 0), dilation)
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)

    def forward(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        v_pre = self.vertical(v)
        return _gate(v_pre), self._horizontal(h, self.horizontal(h),
                                              self.vertical_to_horizontal(v_pre))

    def _horizontal(self, h: Tensor, h_pre: Tensor, from_vertical: Tensor) -> Tensor:
        """Residual update of the horizontal stack from its conv and the vertical stack."""
        return h + self.horizontal_out(_gate(h_pre + from_vertical))


class _Head(nn.Module):
    """Per-pixel 256-way logits for each image channel; channel c also sees channels < c of
    the same pixel through a masked 1x1 convolution of the (scaled) pixel values."""

    mask: Tensor

    def __init__(self, image_channels: int, channels: int) -> None:
        super().__init__()
        hidden = image_channels * channels
        self.image_channels = image_channels
        self.features = nn.Conv2d(channels, hidden, 1)
        self.earlier_channels = (nn.Conv2d(image_channels, hidden, 1, bias=False)
                                 if image_channels > 1 else None)
        mask = torch.zeros(hidden, image_channels, 1, 1)
        for c in range(image_channels):
            mask[c * channels:(c + 1) * channels, :c] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        self.out = nn.Conv2d(hidden, image_channels * NUM_LEVELS, 1, groups=image_channels)

    def hidden(self, h: Tensor) -> Tensor:
        """The part of the head's hidden units that comes from the stacks."""
        return self.features(F.elu(h))

    def logits(self, hidden: Tensor, x_in: Tensor) -> Tensor:
        """Logits ``(B, 256, C, H, W)`` from :meth:`hidden` and the scaled pixel values."""
        if self.earlier_channels is not None:
            hidden = hidden + F.conv2d(x_in, self.earlier_channels.weight * self.mask)
        out = float32_layer(self.out, F.elu(hidden))
        b, _, height, width = out.shape
        return out.reshape(b, self.image_channels, NUM_LEVELS, height, width).transpose(1, 2)


@register
class PixelCNN(Generator):
    """Gated PixelCNN on 8-bit images x = k / 255 of shape ``image_shape = (C, H, W)``.

    Args:
        image_shape: ``(C, H, W)``, any positive sizes (e.g. (1, 28, 28) or (3, 32, 32)).
        channels: width of the vertical and horizontal stacks.
        dilations: one gated layer per entry, with that dilation, after a first layer that
            excludes the centre pixel; e.g. ``(1, 2, 1, 4, 1, 2, 1)``.
        kernel_size: odd, at least 3; the vertical stack reads ``kernel_size // 2`` rows above
            and columns either side, the horizontal stack ``kernel_size // 2`` columns left.

    :meth:`log_prob` is the exact log-mass of the levels ``k = round(255 x)``; :meth:`sample`
    draws exact samples with that log-mass.
    """

    discrete = True
    autocast_safe = True  # the gated layers in the run's precision, first layers and logits float32

    def __init__(self, image_shape: tuple[int, int, int], channels: int = 64,
                 dilations: Sequence[int] = (1, 2, 1, 4, 1, 2, 1), kernel_size: int = 3) -> None:
        image_shape = require_image_shape(image_shape, "PixelCNN")
        require_positive_int("channels", channels, "channels=64")
        dilations = tuple(dilations)
        require(bool(dilations), "dilations", "dilations must list at least one dilation (one "
                "per gated layer); pass e.g. dilations=[1, 2, 1, 4, 1, 2, 1]")
        for dilation in dilations:
            require_positive_int("dilations", dilation, "dilations=[1, 2, 1, 4, 1, 2, 1]")
        require_positive_int("kernel_size", kernel_size, "kernel_size=3")
        require(kernel_size >= 3 and kernel_size % 2 == 1, "kernel_size", f"kernel_size must be "
                f"odd and at least 3, got {kernel_size}; pass e.g. kernel_size=3")
        super().__init__(image_shape)
        image_channels = image_shape[0]
        r = kernel_size // 2
        self.first_vertical = _CausalConv(image_channels, channels, (-r, -1), (-r, r))
        self.first_horizontal = _CausalConv(image_channels, channels, (0, 0), (-r, -1))
        self.layers = nn.ModuleList(_GatedLayer(channels, kernel_size, d) for d in dilations)
        self.head = _Head(image_channels, channels)
        self.channels = channels

    def _check_images(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.event_shape:
            shape = ", ".join(map(str, self.event_shape))
            raise ValueError(f"expected images of shape (B, {shape}), got {tuple(x.shape)}; "
                             "reshape the batch or fix image_shape")

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, 256, C, H, W)`` of every sub-pixel given the ones before it in ``x``."""
        self._check_images(x)
        x_in = _scale(x)
        # float32 first layers under autocast: bf16 cannot tell all 256 input levels apart
        v, h = float32_layer(self.first_vertical, x_in), float32_layer(self.first_horizontal, x_in)
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head.logits(self.head.hidden(h), x_in)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-mass of the levels ``round(255 x)`` of each image; shape ``(B,)``."""
        levels = torch.round(x.detach() * (NUM_LEVELS - 1)).long()
        if not ((levels >= 0) & (levels < NUM_LEVELS)).all():
            raise ValueError(f"expected levels k / 255 in [0, 1] (the PixelCNN is discrete), got "
                             f"values in [{x.min().item():.4g}, {x.max().item():.4g}]; serve data "
                             "without dequantisation, as lit_ebm.data does for discrete generators")
        log_p = -F.cross_entropy(self(x), levels, reduction="none")
        return log_p.flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, num_samples: int, method: str = "fast",
               temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """Draw ``(x, log_q)``: images k / 255 and their exact log-mass (no gradient); at
        ``temperature`` T each sub-pixel is drawn from softmax(logits / T), and ``log_q`` stays
        the model's (T = 1) log-mass of the images drawn.

        All randomness is drawn up front, one uniform per sub-pixel, and each sub-pixel is
        sampled by inverse CDF, so ``method="fast"`` (cached, the default) and
        ``method="naive"`` (one full forward pass per sub-pixel, the reference) consume it
        identically and return the same images for the same random state (their logits agree
        to float rounding, so images could part only where a uniform falls that close to a
        CDF boundary).
        """
        samplers: dict[str, Callable[[Tensor, float], tuple[Tensor, Tensor]]] = {
            "fast": self._sample_fast, "naive": self._sample_naive}
        if method not in samplers:
            raise ValueError(f"method must be 'fast' or 'naive', got {method!r}")
        check_temperature(temperature)
        param = next(self.parameters())
        u = torch.rand(num_samples, *self.event_shape, device=param.device, dtype=torch.float64)
        x, log_q = samplers[method](u, temperature)
        return x, log_q.to(param.dtype)

    def _sample_naive(self, u: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
        """Reference sampler: the whole network once per sub-pixel."""
        x = torch.zeros_like(u, dtype=next(self.parameters()).dtype)
        log_q = torch.zeros(u.shape[0], device=u.device, dtype=torch.float64)
        channels, height, width = self.event_shape
        inverse_cdf = InverseCdf(len(u), temperature, u.device)
        for i in range(height):
            for j in range(width):
                for c in range(channels):
                    logits = self(x)[:, :, c, i, j]
                    k, log_p = inverse_cdf(logits, u[:, c, i, j].contiguous())
                    x[:, c, i, j] = k.to(x.dtype) / (NUM_LEVELS - 1)
                    log_q += log_p
        return x, log_q

    def _sample_fast(self, u: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
        """Cached sampler (:mod:`lit_ebm.generators.pixelcnn_sampler`)."""
        return CachedSampler(self, u, temperature).run()
