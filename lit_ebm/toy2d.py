"""Two-dimensional toy distributions, mode metrics and exact grid partition functions.

Shapes (``TOY2D_SHAPES``):

- ``"ring8"``: a uniform mixture of 8 isotropic Gaussians with standard deviation
  ``RING8_STD = 0.1``, centred at angles ``2 pi k / 8`` on a circle of radius ``RING8_RADIUS = 2``.
- ``"pinwheel"``: the 5-arm pinwheel of Johnson et al. (2016), with the parameters popularised by
  FFJORD: radial std 0.3, tangential std 0.1, rate 0.25, scaled by 2. Each point starts at
  ``(1 + 0.3 a, 0.1 b)`` with ``a, b ~ N(0, 1)``, is rotated by the angle
  ``2 pi k / 5 + 0.25 exp(1 + 0.3 a)`` for an arm ``k`` drawn uniformly (so arms curl more the
  further out they reach) and is then doubled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

TOY2D_SHAPES = ("ring8", "pinwheel")

RING8_RADIUS = 2.0
RING8_STD = 0.1

EnergyFn = Callable[[Tensor], Tensor]


def ring8_modes() -> tuple[Tensor, float]:
    """Centres ``(8, 2)`` (float32) and the common standard deviation of the ring8 modes."""
    angles = torch.arange(8, dtype=torch.float64) * (2.0 * math.pi / 8)
    centres = RING8_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)
    return centres.float(), RING8_STD


def _sample_ring8(num_samples: int, generator: torch.Generator | None) -> Tensor:
    centres, std = ring8_modes()
    modes = torch.randint(len(centres), (num_samples,), generator=generator)
    return centres[modes] + std * torch.randn(num_samples, 2, generator=generator)


def _sample_pinwheel(num_samples: int, generator: torch.Generator | None) -> Tensor:
    num_arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    arms = torch.randint(num_arms, (num_samples,), generator=generator)
    noise = torch.randn(num_samples, 2, generator=generator)
    radial = 1.0 + radial_std * noise[:, 0]
    tangential = tangential_std * noise[:, 1]
    angles = arms * (2.0 * math.pi / num_arms) + rate * radial.exp()
    cos, sin = angles.cos(), angles.sin()
    return 2.0 * torch.stack([radial * cos - tangential * sin, radial * sin + tangential * cos], 1)


_SAMPLERS = {"ring8": _sample_ring8, "pinwheel": _sample_pinwheel}


def sample_toy2d(shape: str, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``num_samples`` float32 points of shape ``(num_samples, 2)`` from a toy distribution.

    ``generator`` (a CPU ``torch.Generator``) makes the draw reproducible.
    """
    if shape not in _SAMPLERS:
        raise ValueError(f"unknown toy2d shape {shape!r}; valid shapes are {TOY2D_SHAPES}")
    return _SAMPLERS[shape](num_samples, generator).float()


def mode_precision_and_coverage(
    samples: Tensor,
    centres: Tensor,
    std: float,
    num_std: float = 3.0,
    min_share: float = 0.25,
) -> tuple[float, int]:
    """Sample quality and mode coverage of 2-D samples against isotropic Gaussian modes.

    A sample is *high quality* when its Euclidean distance to the nearest centre is at most
    ``num_std * std``; ``precision`` is the fraction of such samples. The default of 3 std follows
    VEEGAN/PacGAN: in 2-D the squared distance of a Gaussian sample is ``std^2 chi^2_2``, so a
    radius of ``k std`` holds ``1 - exp(-k^2 / 2)`` of each mode (98.9% for k = 3, only 86.5% for
    k = 2). A mode is *covered* when at least ``min_share`` of its fair share of the samples,
    ``min_share * n / K`` for ``K`` modes, are high-quality samples nearest to it.
    """
    distances = torch.cdist(samples.double(), centres.double().to(samples.device))
    nearest_distance, nearest = distances.min(dim=1)
    high_quality = nearest_distance <= num_std * std
    counts = torch.bincount(nearest[high_quality], minlength=len(centres))
    precision = high_quality.double().mean().item()
    modes_covered = int((counts >= min_share * len(samples) / len(centres)).sum())
    return precision, modes_covered


def grid_energy(
    energy_fn: EnergyFn,
    bound: float,
    resolution: int,
    *,
    chunk_size: int = 65536,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Energies at the cell midpoints of a square grid on ``[-bound, bound]^2``.

    The square is cut into ``resolution x resolution`` equal cells. Returns ``(coords, energies)``:
    ``coords`` of shape ``(resolution,)`` are the midpoints along each axis and
    ``energies[i, j] = E((coords[j], coords[i]))`` (rows are y, columns are x, as
    ``imshow(..., origin="lower")`` expects), both float64 on the CPU. ``energy_fn`` maps a
    ``(B, 2)`` batch of ``dtype`` on ``device`` to ``(B,)`` energies and is called without gradient
    on at most ``chunk_size`` points at a time.
    """
    if bound <= 0 or resolution < 1:
        raise ValueError(f"need bound > 0 and resolution >= 1, got {bound=} and {resolution=}")
    width = 2.0 * bound / resolution
    coords = -bound + width * (torch.arange(resolution, dtype=torch.float64) + 0.5)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    points = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).to(device=device, dtype=dtype)
    with torch.no_grad():
        chunks = [energy_fn(chunk).double().cpu() for chunk in points.split(chunk_size)]
    energies = torch.cat(chunks)
    return coords, energies.reshape(resolution, resolution)


def log_partition_grid(energy_fn: EnergyFn, bound: float, resolution: int,
                       **grid_options: Any) -> float:
    """Log of the integral of ``exp(-E(x))`` over ``[-bound, bound]^2`` (``log Z`` on the square).

    Midpoint rule on the grid of :func:`grid_energy` (``grid_options`` are its keyword
    arguments), summed with ``logsumexp`` in float64: ``log Z = logsumexp(-E) + 2 log(width)``.
    """
    _, energies = grid_energy(energy_fn, bound, resolution, **grid_options)
    cell_width = 2.0 * bound / resolution
    return (torch.logsumexp(-energies.reshape(-1), dim=0) + 2.0 * math.log(cell_width)).item()
