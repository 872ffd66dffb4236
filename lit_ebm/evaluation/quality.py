"""Sample quality on fixed features: FID and KID through torchmetrics, during training and in
:mod:`lit_ebm.evaluation` (docs/evaluation.md).

Features are computed once per image by a named extractor (:mod:`lit_ebm.features`) and fed
to torchmetrics' ``FrechetInceptionDistance`` and ``KernelInceptionDistance`` through a
pass-through ``feature=`` module, so FID, KID and the manifold metrics share one forward pass.
The real (reference) set is the validation split, as 8-bit images; generator samples are
turned into the 8-bit images they stand for (:func:`lit_ebm.generators.to_levels`), so real
features do not depend on the generator's dequantisation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from lit_ebm.errors import ConfigError
from lit_ebm.features import FeatureExtractor
from lit_ebm.generators import to_levels

KID_SUBSETS = 100


class PrecomputedFeatures(nn.Module):
    """The ``feature=`` module of the torchmetrics metrics here: features are computed before
    ``update`` (once, shared by every metric), so it passes them through."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def check_sample_counts(num_samples: int, num_real: int, num_features: int,
                        kid_subset_size: int, samples_key: str, subset_key: str) -> None:
    """Refuse sample counts FID and KID cannot use, naming the settings to change.

    FID needs more samples than feature dimensions in each set (else a covariance is
    singular); KID draws subsets of ``kid_subset_size`` from each set.
    """
    if num_samples <= num_features:
        raise ConfigError(f"invalid value {num_samples} for '{samples_key}': FID on "
                          f"{num_features}-dimensional features needs more samples than "
                          f"dimensions; use {samples_key}>={num_features + 1}")
    if num_real <= num_features:
        raise ConfigError(f"the validation split holds {num_real} images, too few for FID on "
                          f"{num_features}-dimensional features; use a larger data set")
    if kid_subset_size > min(num_samples, num_real):
        raise ConfigError(f"invalid value {kid_subset_size} for '{subset_key}': KID draws "
                          f"subsets of that size from {num_samples} generated and {num_real} "
                          f"real images; use {subset_key}<={min(num_samples, num_real)}")


class FeatureDistances(nn.Module):
    """torchmetrics FID and KID between real and generated features of one extractor.

    Real features persist across :meth:`reset_fake` (``reset_real_features=False``), so the
    reference set is processed once. Under DDP, every rank updates its own share and every rank
    must call :meth:`compute` (torchmetrics gathers the states).
    """

    def __init__(self, num_features: int, kid_subset_size: int) -> None:
        super().__init__()
        passthrough = PrecomputedFeatures(num_features)
        self.fid = FrechetInceptionDistance(feature=passthrough, reset_real_features=False)
        with warnings.catch_warnings():  # that KID keeps every feature vector is known here
            warnings.filterwarnings("ignore", message=".*will save all extracted features")
            self.kid = KernelInceptionDistance(feature=passthrough, subsets=KID_SUBSETS,
                                               subset_size=kid_subset_size,
                                               reset_real_features=False)

    def update(self, features: Tensor, real: bool) -> None:
        self.fid.update(features, real=real)
        self.kid.update(features, real=real)

    def compute(self, seed: int = 0) -> dict[str, float]:
        """FID, and KID's mean and standard deviation over random subsets drawn with ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            kid_mean, kid_std = self.kid.compute()
        return {"fid": float(self.fid.compute()), "kid_mean": float(kid_mean),
                "kid_std": float(kid_std)}

    def reset_fake(self) -> None:
        """Forget the generated features, keep the real ones."""
        self.fid.reset()
        self.kid.reset()


def batches(count: int, batch_size: int) -> Iterator[int]:
    """Sizes of consecutive batches that together hold ``count`` items."""
    for start in range(0, count, batch_size):
        yield min(batch_size, count - start)


@torch.no_grad()
def image_features(extractor: FeatureExtractor, levels: Tensor, batch_size: int = 500) -> Tensor:
    """Features ``(N, d)`` of uint8 images ``(N, C, H, W)``, on the extractor's device."""
    device = next(extractor.parameters()).device
    return torch.cat([extractor(levels[i:i + batch_size].to(device).float() / 255)
                      for i in range(0, len(levels), batch_size)])


def generated_levels(sample: Callable[[int], tuple[Tensor, Tensor]], discrete: bool,
                     num_samples: int, batch_size: int) -> Tensor:
    """``num_samples`` draws of ``sample(n) -> (x, log_q)`` as uint8 images, in batches."""
    with torch.no_grad():
        return torch.cat([to_levels(sample(n)[0], discrete).cpu()
                          for n in batches(num_samples, batch_size)])
