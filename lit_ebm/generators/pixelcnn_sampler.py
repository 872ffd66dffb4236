"""Cached sampling for the Gated PixelCNN (Ramachandran et al. 2017, "Fast Generation for
Convolutional Autoregressive Models").

Sampling draws one sub-pixel at a time, so each step runs a small network on a small batch and
framework overhead sets the pace for small batches, arithmetic and memory traffic for large
ones. The sampler therefore

- runs the vertical stack once per row (it never reads the current row), as one matrix product
  per kernel offset over preallocated, zero-padded caches of the rows above;
- per pixel, runs each horizontal layer at that pixel only, as one matrix product over the few
  columns its kernel reads, from a preallocated cache of the row's inputs laid out so that
  those columns are adjacent;
- per sub-pixel, runs only the head's output for that channel, and draws the level by inverse
  CDF in a preallocated float64 work space.

The arithmetic is that of :meth:`PixelCNN.forward` (the logits) in another order, so logits
agree to float rounding and the images drawn agree with the full-network reference
(``method="naive"``) unless a uniform falls within that rounding of a CDF boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from lit_ebm.generators.pixelcnn import PixelCNN, _GatedLayer

NUM_LEVELS = 256


class InverseCdf:
    """Draws levels by inverse CDF for a batch of ``n``: called with logits ``(n, 256)`` and
    uniforms ``u`` ``(n,)``, returns the levels ``k`` with ``P_T(K < k) <= u < P_T(K <= k)``,
    P_T = softmax(logits / T), and their log-probabilities at T = 1, both computed in float64.

    Its float64 work space is allocated once: the sampler calls it for every sub-pixel, and
    fresh buffers of this size cost page faults on every call."""

    def __init__(self, n: int, temperature: float, device: torch.device) -> None:
        self.temperature = temperature
        self.logits, self.log_p, self.p, self.cdf = (
            torch.empty(n, NUM_LEVELS, device=device, dtype=torch.float64) for _ in range(4))

    def __call__(self, logits: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        self.logits.copy_(logits)
        torch.log_softmax(self.logits, 1, out=self.log_p)
        if self.temperature == 1.0:
            torch.exp(self.log_p, out=self.p)
        else:
            torch.softmax(self.logits.div_(self.temperature), 1, out=self.p)
        torch.cumsum(self.p, 1, out=self.cdf)
        # the number of CDF values <= u among the first 255: a level in 0..255
        k = torch.searchsorted(self.cdf, u.unsqueeze(1), right=True).clamp_(max=NUM_LEVELS - 1)
        return k.squeeze(1), self.log_p.gather(1, k).squeeze(1)


def _bias(conv: nn.Conv2d) -> Tensor:
    assert conv.bias is not None, "every convolution of the PixelCNN has a bias"
    return conv.bias


def conv_as_matrix(conv: nn.Conv2d) -> Tensor:
    """A one-row convolution's weight ``(O, I, 1, K)`` as the matrix ``(K * I, O)`` that maps a
    window of ``K`` columns, flattened column-major over channels (``k * I + i``), to its output."""
    weight = conv.weight
    return weight[:, :, 0, :].permute(2, 1, 0).reshape(-1, weight.shape[0])


class _Vertical:
    """One causal convolution of the vertical stack, run along a row as matrix products.

    Its input rows live in a buffer ``(top + H, n * (left + W + right), I)`` with the
    convolution's zero padding around each image's row. For kernel offset ``(k, t)`` the inputs
    of all outputs of a row are one contiguous slice of one buffer row, shifted by ``t``
    columns, so the convolution is a sum of one matrix product per kernel offset, without
    copying its input. Outputs are computed at every padded column; those past an image's last
    column are never read.
    """

    def __init__(self, conv: nn.Conv2d, n: int, height: int, width: int, like: Tensor) -> None:
        left, right, top, _ = conv.pads  # type: ignore[misc]
        self.top, self.left, self.n, self.width = top, left, n, width
        self.padded_width = left + width + right
        self.bias = _bias(conv)
        rows, cols = conv.weight.shape[2:]
        row_step, col_step = conv.dilation
        # (buffer row offset, column shift, weight (I, O)) of each kernel offset
        self.taps = [(k * row_step, t * col_step, conv.weight[:, :, k, t].t())
                     for k in range(rows) for t in range(cols)]
        self.inputs = like.new_zeros(top + height, n * self.padded_width, conv.in_channels)
        self.length = n * self.padded_width - left - right  # output rows of one image row

    def along(self, row: int, out: Tensor) -> Tensor:
        """The convolution's output along ``row`` at every padded column, written into
        ``out`` ``(length, O)``."""
        for index, (offset, shift, weight) in enumerate(self.taps):
            x = self.inputs[row + offset, shift:shift + self.length]
            if index == 0:
                torch.addmm(self.bias, x, weight, out=out)
            else:
                out.addmm_(x, weight)
        return out

    def columns(self, out: Tensor) -> Tensor:
        """``(n, W, O)``: the rows of an output of :meth:`along` (or of a function of it, row
        by row) at the images' own columns."""
        channels = out.shape[1]
        return out.as_strided((self.n, self.width, channels),
                              (self.padded_width * channels, channels, 1))

    def store(self, row: int, values: Tensor) -> None:
        """Write an input row ``values`` ``(n, W, I)`` at ``row``."""
        padded = self.inputs[self.top + row].view(self.n, self.padded_width, -1)
        padded[:, self.left:self.left + self.width] = values

    def store_pixel(self, row: int, col: int, channel: int, values: Tensor) -> None:
        """Write one input sub-pixel ``values`` ``(n,)`` at ``(row, col)``."""
        self.inputs[self.top + row, self.left + col::self.padded_width, channel] = values


class _Horizontal(NamedTuple):
    """One gated layer's horizontal part as matrices: the window of its causal convolution,
    the 1x1 output convolution and its bias, and the columns its kernel reads."""

    window: Tensor
    out: Tensor
    out_bias: Tensor
    pad: int
    dilation: int

    def new_row(self, n: int, width: int, like: Tensor) -> Tensor:
        """A zero row cache ``(n, dilation, L, C)``: padded column ``p`` (the ``pad`` zero
        columns first) lives at ``[:, p % dilation, p // dilation]``, so the columns one
        window reads, ``dilation`` apart, are adjacent."""
        length = -(-(width + self.pad) // self.dilation)
        return like.new_zeros(n, self.dilation, length, self.out.shape[0])

    def step(self, row: Tensor, j: int, h: Tensor, from_vertical: Tensor) -> Tensor:
        """Store the layer's input ``h`` at column ``j`` and return its output there."""
        d = self.dilation
        row[:, (j + self.pad) % d, (j + self.pad) // d] = h
        window = row[:, j % d, j // d:j // d + self.pad // d + 1].flatten(1)
        value, gate = torch.addmm(from_vertical, window, self.window).chunk(2, dim=1)
        return torch.addmm(h, torch.tanh(value) * torch.sigmoid(gate), self.out).add_(
            self.out_bias)


def _horizontal(layer: _GatedLayer) -> _Horizontal:
    pad, dilation = layer.horizontal.pads[0], layer.horizontal.dilation[0]
    out = layer.horizontal_out
    return _Horizontal(conv_as_matrix(layer.horizontal), out.weight[:, :, 0, 0].t(), _bias(out),
                       pad, dilation)


class CachedSampler:
    """Draws a batch of images from ``model`` in raster order by inverse CDF from the uniforms
    ``u`` (one per sub-pixel, ``(n, C, H, W)``, float64); :meth:`run` returns ``(x, log_q)``."""

    def __init__(self, model: PixelCNN, u: Tensor, temperature: float) -> None:
        self.u = u.permute(2, 3, 1, 0).contiguous()  # u[i, j, c] is one contiguous batch
        param = next(model.parameters())
        n, image_channels, height, width = u.shape
        channels = model.channels
        self.x = torch.zeros(u.shape, device=param.device, dtype=param.dtype)
        self.log_q = torch.zeros(n, device=param.device, dtype=torch.float64)
        self.inverse_cdf = InverseCdf(n, temperature, param.device)
        self.logits = self.x.new_empty(n, NUM_LEVELS)
        layers = cast("Sequence[_GatedLayer]", model.layers)
        # each holds its input (the network's input 2 x - 1 first), zero-padded
        self.verticals = [_Vertical(conv, n, height, width, self.x) for conv in
                          (model.first_vertical, *(layer.vertical for layer in layers))]
        longest = max(v.length for v in self.verticals)
        # the gated layers' pre-activations, their halves and their output along a row
        self.scratch = [self.x.new_empty(longest, size) for size in
                        (2 * channels, channels, channels, channels)]
        self.from_vertical = [self.x.new_empty(v.length, 2 * channels)
                              for v in self.verticals[1:]]
        # the vertical stack's 1x1 link into the horizontal stack, with the horizontal
        # convolution's bias folded into its own
        self.to_horizontal = [(layer.vertical_to_horizontal.weight[:, :, 0, 0].t(),
                               _bias(layer.vertical_to_horizontal) + _bias(layer.horizontal))
                              for layer in layers]
        self.horizontals = [_horizontal(layer) for layer in layers]
        self.h_rows = [h.new_row(n, width, self.x) for h in self.horizontals]
        first = model.first_horizontal
        self.first_pad = first.pads[0]
        self.first = (conv_as_matrix(first), _bias(first))
        # the current row of the network's input, channels last, zero-padded on the left
        self.x_row = self.x.new_zeros(n, width + self.first_pad, image_channels)
        head = model.head
        self.features = (head.features.weight[:, :, 0, 0].t(), _bias(head.features))
        self.head_out = [(w[:, :, 0, 0].t(), b) for w, b in zip(
            head.out.weight.chunk(image_channels), _bias(head.out).chunk(image_channels),
            strict=True)]
        earlier = head.earlier_channels
        self.earlier = (None if earlier is None else
                        [w[:, :c, 0, 0].t() for c, w in enumerate(
                            (earlier.weight * head.mask).chunk(image_channels))])

    def run(self) -> tuple[Tensor, Tensor]:
        """Every pixel in raster order, in the parameters' precision whatever the autocast
        setting, so the log-masses reported are exactly those of the images drawn."""
        height, width = self.x.shape[-2:]
        with torch.autocast(self.x.device.type, enabled=False):
            for i in range(height):
                from_vertical = self._vertical_row(i)
                for j in range(width):
                    self._pixel(i, j, [v[:, j] for v in from_vertical])
        return self.x, self.log_q

    def _vertical_row(self, row: int) -> list[Tensor]:
        """The vertical stack along ``row`` from the rows above (the network's input there is
        already in the first buffer); returns each gated layer's input to the horizontal
        stack, ``(n, W, 2C)``, with the horizontal convolution's bias added."""
        first, *gated = self.verticals
        pre, value, gate, v = self.scratch
        gated_input = first.columns(first.along(row, v[:first.length]))
        from_vertical = []
        for vertical, (weight, bias), out in zip(gated, self.to_horizontal, self.from_vertical,
                                                 strict=True):
            vertical.store(row, gated_input)
            length = vertical.length
            v_pre = vertical.along(row, pre[:length])
            halves = v_pre.shape[1] // 2
            torch.tanh(v_pre[:, :halves], out=value[:length])
            torch.sigmoid(v_pre[:, halves:], out=gate[:length])
            gated_input = vertical.columns(torch.mul(value[:length], gate[:length],
                                                     out=v[:length]))
            from_vertical.append(vertical.columns(torch.addmm(bias, v_pre, weight, out=out)))
        return from_vertical

    def _pixel(self, i: int, j: int, from_vertical: list[Tensor]) -> None:
        """Both stacks and the head at pixel ``(i, j)``; draws its sub-pixels."""
        window = self.x_row[:, j:j + self.first_pad].flatten(1)
        h = torch.addmm(self.first[1], window, self.first[0])
        for horizontal, row, v in zip(self.horizontals, self.h_rows, from_vertical, strict=True):
            h = horizontal.step(row, j, h, v)
        hidden = torch.addmm(self.features[1], F.elu(h), self.features[0])
        for c, (out, out_bias) in enumerate(self.head_out):
            part = hidden[:, c * out.shape[0]:(c + 1) * out.shape[0]]
            if c > 0 and self.earlier is not None:
                part = torch.addmm(part, self.x_row[:, j + self.first_pad, :c], self.earlier[c])
            self._draw(torch.addmm(out_bias, F.elu(part), out, out=self.logits), c, i, j)

    def _draw(self, logits: Tensor, c: int, i: int, j: int) -> None:
        k, log_p = self.inverse_cdf(logits, self.u[i, j, c])
        level = k.to(self.x.dtype) / (NUM_LEVELS - 1)
        self.x[:, c, i, j] = level
        scaled = 2.0 * level - 1.0
        self.x_row[:, j + self.first_pad, c] = scaled
        self.verticals[0].store_pixel(i, j, c, scaled)
        self.log_q += log_p
