"""Generators with exact log-densities in the space the energy sees."""

from __future__ import annotations

from lit_ebm.generators.base import Generator, bits_per_dim, to_levels
from lit_ebm.generators.flow2d import RealNVP2d
from lit_ebm.generators.mixture import GaussianMixture2d
from lit_ebm.generators.pixelcnn import PixelCNN
from lit_ebm.generators.realnvp import RealNVP

__all__ = ["Generator", "GaussianMixture2d", "PixelCNN", "RealNVP", "RealNVP2d", "bits_per_dim",
           "to_levels"]
