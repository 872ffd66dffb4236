"""Generators with exact log-densities in the space the energy sees."""

from __future__ import annotations

from lit_ebm.generators.base import Generator, bits_per_dim, to_levels
from lit_ebm.generators.flow2d import RealNVP2d
from lit_ebm.generators.mixture import GaussianMixture2d
from lit_ebm.generators.pixelcnn import PixelCNN
from lit_ebm.generators.realnvp import RealNVP

GENERATORS: dict[str, type[Generator]] = {"realnvp": RealNVP, "pixelcnn": PixelCNN,
                                          "realnvp2d": RealNVP2d, "mixture2d": GaussianMixture2d}
"""Each generator by its name in configs (``model.generator.name``) and results tables."""

__all__ = ["GENERATORS", "Generator", "GaussianMixture2d", "PixelCNN", "RealNVP", "RealNVP2d",
           "bits_per_dim", "to_levels"]
