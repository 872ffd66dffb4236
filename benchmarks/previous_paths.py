"""The PixelCNN's previous cached sampler, kept only as the baseline that
``benchmarks/throughput.py`` times the current one against in the same process.

It is the sampler lit_ebm shipped before the matrix-product sampler of
``lit_ebm.generators.pixelcnn_sampler``: the same caching scheme (Ramachandran et al. 2017), with
each horizontal layer run as a convolution over a zero-padded window at every pixel and fresh
row caches allocated for every row. Its images for a seed are the reference that the new
sampler's are compared with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_ebm.generators.pixelcnn import PixelCNN
from lit_ebm.generators.pixelcnn_sampler import NUM_LEVELS


def _conv_at(conv: nn.Conv2d, x: Tensor, row: int, col: int) -> Tensor:
    """A causal convolution's output ``(B, O, 1, 1)`` at ``(row, col)`` from its padded window."""
    left, right, top, bottom = conv.pads  # type: ignore[attr-defined]
    height, width = x.shape[-2:]
    r0, r1, c0, c1 = row - top, row + bottom + 1, col - left, col + right + 1
    window = x[..., max(r0, 0):min(r1, height), max(c0, 0):min(c1, width)]
    pads = (max(-c0, 0), max(c1 - width, 0), max(-r0, 0), max(r1 - height, 0))
    return nn.Conv2d.forward(conv, F.pad(window, pads))


def _inverse_cdf(logits: Tensor, u: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    log_p = torch.log_softmax(logits.double(), dim=1)
    p_t = log_p.exp() if temperature == 1.0 else torch.softmax(logits.double() / temperature, 1)
    cdf = p_t.cumsum(dim=1)
    k = (cdf[:, :-1] <= u.unsqueeze(1)).sum(dim=1)
    return k, log_p.gather(1, k.unsqueeze(1)).squeeze(1)


def _conv_along(conv: nn.Conv2d, x: Tensor, row: int) -> Tensor:
    """A causal convolution's output ``(B, O, 1, W)`` along ``row`` from its padded window."""
    left, right, top, bottom = conv.pads  # type: ignore[attr-defined]
    height = x.shape[-2]
    r0, r1 = row - top, row + bottom + 1
    window = x[..., max(r0, 0):min(r1, height), :]
    return nn.Conv2d.forward(conv, F.pad(window, (left, right, max(-r0, 0),
                                                  max(r1 - height, 0))))


@torch.no_grad()
def previous_cached_sampler(model: PixelCNN, u: Tensor,
                            temperature: float) -> tuple[Tensor, Tensor]:
    """``(x, log_q)`` as the previous ``PixelCNN._sample_fast`` drew them from the uniforms ``u``
    (one per sub-pixel); patch it in for ``PixelCNN._sample_fast`` to time the previous path."""
    param = next(model.parameters())
    x = torch.zeros(u.shape, device=param.device, dtype=param.dtype)
    log_q = torch.zeros(u.shape[0], device=param.device, dtype=torch.float64)
    x_in = 2.0 * x - 1.0
    n, channels, height, width = x.shape
    layers = list(model.layers)
    v_inputs = [x.new_zeros(n, model.channels, height, width) for _ in layers]
    for i in range(height):
        v = _conv_along(model.first_vertical, x_in, i)
        from_vertical = []
        for layer, v_in in zip(layers, v_inputs, strict=True):
            v_in[..., i:i + 1, :] = v
            v_pre = _conv_along(layer.vertical, v_in, i)
            value, gate = v_pre.chunk(2, dim=1)
            v = torch.tanh(value) * torch.sigmoid(gate)
            from_vertical.append(layer.vertical_to_horizontal(v_pre))
        h_inputs = [x.new_zeros(n, model.channels, 1, width) for _ in layers]
        for j in range(width):
            h = _conv_at(model.first_horizontal, x_in, i, j)
            for layer, h_row, v_row in zip(layers, h_inputs, from_vertical, strict=True):
                h_row[..., j:j + 1] = h
                h = layer._horizontal(h_row[..., j:j + 1], _conv_at(layer.horizontal, h_row, 0, j),
                                      v_row[..., j:j + 1])
            hidden = model.head.hidden(h)
            for c in range(channels):
                logits = model.head.logits(hidden, x_in[..., i:i + 1, j:j + 1])
                k, log_p = _inverse_cdf(logits[:, :, c, 0, 0], u[:, c, i, j], temperature)
                x[:, c, i, j] = k.to(x.dtype) / (NUM_LEVELS - 1)
                x_in[:, c, i, j] = 2.0 * x[:, c, i, j] - 1.0
                log_q += log_p
    return x, log_q
