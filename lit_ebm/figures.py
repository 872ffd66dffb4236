"""Figures written to a run's samples/ folder, as (3, H, W) float images in [0, 1]."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.utils import make_grid

from lit_ebm.modules.base import GenerativeModule, eval_mode
from lit_ebm.toy2d import grid_energy


def image_grid(samples: Tensor) -> Tensor:
    """A square-ish grid of image samples, clamped to [0, 1] (flow samples may overshoot)."""
    nrow = max(1, round(math.sqrt(len(samples))))
    return make_grid(samples.detach().float().clamp(0.0, 1.0).cpu(), nrow=nrow, padding=2,
                     pad_value=1.0)


def toy2d_figure(log_density: Callable[[Tensor], Tensor], samples: Tensor,
                 data: Tensor | None = None, bound: float = 4.0, resolution: int = 256) -> Tensor:
    """Heat map of ``log_density`` on [-bound, bound]^2, data in blue and samples in red."""
    _, energies = grid_energy(lambda points: -log_density(points), bound, resolution,
                              device=samples.device)
    heat = -energies.flip(0)  # image row 0 is the top (largest y)
    heat = (heat - heat.max()).clamp(min=-20.0) / 20.0 + 1.0  # 20 nats of dynamic range
    figure = heat.float().expand(3, -1, -1).clone() * 0.8
    for cloud, colour in ((data, (0.2, 0.5, 1.0)), (samples, (1.0, 0.2, 0.2))):
        if cloud is None:
            continue
        pixels = ((cloud.detach().cpu().double() + bound) / (2 * bound) * resolution).long()
        inside = ((pixels >= 0) & (pixels < resolution)).all(dim=1)
        cols, rows = pixels[inside, 0], resolution - 1 - pixels[inside, 1]
        for channel, value in enumerate(colour):
            figure[channel, rows, cols] = value
    return figure


@torch.no_grad()
def render_samples(module: GenerativeModule, num_samples: int, data: Tensor | None = None
                   ) -> Tensor:
    """A figure of generator samples as a ``(3, H, W)`` image in [0, 1]: a grid of images, or
    2-D points over the model's log-density (and ``data`` points, when given)."""
    with eval_mode(module):
        samples, _ = module.generator.sample(num_samples)
        if module.images:
            return image_grid(samples)
        return toy2d_figure(module.log_density, samples, data)
