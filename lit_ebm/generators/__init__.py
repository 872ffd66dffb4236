"""Generators with exact log-densities, built by name from the config."""

from __future__ import annotations

from dataclasses import asdict

from lit_ebm.config import GeneratorConfig
from lit_ebm.generators.base import Generator, bits_per_dim
from lit_ebm.generators.flow2d import RealNVP2d
from lit_ebm.generators.mixture import GaussianMixture2d
from lit_ebm.generators.pixelcnn import PixelCNN
from lit_ebm.generators.realnvp import RealNVP

__all__ = ["Generator", "GaussianMixture2d", "PixelCNN", "RealNVP", "RealNVP2d", "bits_per_dim",
           "build_generator"]


def build_generator(config: GeneratorConfig, event_shape: tuple[int, ...]) -> Generator:
    """The generator named by ``config.name`` for examples of shape ``event_shape``."""
    if config.name == "realnvp":
        return RealNVP(tuple(event_shape), **asdict(config.realnvp))
    if config.name == "pixelcnn":
        return PixelCNN(tuple(event_shape), **asdict(config.pixelcnn))
    if config.name == "realnvp2d":
        return RealNVP2d(**asdict(config.realnvp2d))
    if config.name == "mixture2d":
        return GaussianMixture2d(**asdict(config.mixture2d))
    raise ValueError(f"unknown generator {config.name!r}")
