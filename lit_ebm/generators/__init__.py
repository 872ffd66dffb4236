"""Generators with exact log-densities, built by name from the config."""

from __future__ import annotations

from lit_ebm.config import GeneratorConfig, build_from
from lit_ebm.generators.base import Generator, bits_per_dim, to_levels
from lit_ebm.generators.flow2d import RealNVP2d
from lit_ebm.generators.mixture import GaussianMixture2d
from lit_ebm.generators.pixelcnn import PixelCNN
from lit_ebm.generators.realnvp import RealNVP

__all__ = ["Generator", "GaussianMixture2d", "PixelCNN", "RealNVP", "RealNVP2d", "bits_per_dim",
           "build_generator", "to_levels"]


def build_generator(config: GeneratorConfig, event_shape: tuple[int, ...]) -> Generator:
    """The generator named by ``config.name`` for examples of shape ``event_shape``."""
    if config.name == "realnvp":
        return build_from("model.generator.realnvp", RealNVP, config.realnvp,
                          image_shape=tuple(event_shape))
    if config.name == "pixelcnn":
        return build_from("model.generator.pixelcnn", PixelCNN, config.pixelcnn,
                          image_shape=tuple(event_shape))
    if config.name == "realnvp2d":
        return build_from("model.generator.realnvp2d", RealNVP2d, config.realnvp2d)
    if config.name == "mixture2d":
        return build_from("model.generator.mixture2d", GaussianMixture2d, config.mixture2d)
    raise ValueError(f"unknown generator {config.name!r}")
