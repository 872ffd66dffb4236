"""Sample quality on fixed features: FID and KID through torchmetrics, during training and in
``lit_ebm.evaluate`` (DESIGN.md section 7).

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

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from lit_ebm.config import ConfigError, DataConfig, EvalConfig
from lit_ebm.features import build_feature_extractor
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
def image_features(extractor: nn.Module, levels: Tensor, batch_size: int = 500) -> Tensor:
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


class SampleQuality(Callback):
    """Log ``val/fid_<features>`` and ``val/kid_<features>`` (mean) every ``every_n_epochs``
    epochs, and after the last, from ``num_samples`` generator samples against the validation
    split (real features computed once per run).

    Under DDP each rank draws its share of the samples and features a shard of the
    validation split; every rank computes the synchronised metrics. Samples are drawn under a
    forked random state seeded by epoch and rank, so evaluation leaves training unchanged.
    """

    def __init__(self, extractor: nn.Module, every_n_epochs: int, num_samples: int,
                 kid_subset_size: int, batch_size: int, seed: int = 0) -> None:
        self.extractor = extractor
        self.name = extractor.name
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.distances = FeatureDistances(extractor.num_features, kid_subset_size)
        self._real_done = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.extractor.to(pl_module.device)
        self.distances.to(pl_module.device)

    def _due(self, trainer: pl.Trainer) -> bool:
        epochs_done = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epochs_done >= trainer.max_epochs
        return not trainer.sanity_checking and (epochs_done % self.every_n_epochs == 0 or last)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        rank, world = trainer.global_rank, trainer.world_size
        if not self._real_done:
            shard = trainer.datamodule.val_set.images[rank::world]
            self.distances.update(image_features(self.extractor, shard), real=True)
            self._real_done = True
        share = self.num_samples // world + (rank < self.num_samples % world)
        was_training = pl_module.training
        pl_module.eval()
        with torch.random.fork_rng(devices=_cuda_devices(pl_module.device)):
            torch.manual_seed(self.seed + 1000 * trainer.current_epoch + rank)
            levels = generated_levels(pl_module.generator.sample, pl_module.generator.discrete,
                                      share, self.batch_size)
        pl_module.train(was_training)
        self.distances.update(image_features(self.extractor, levels), real=False)
        values = self.distances.compute(seed=self.seed + trainer.current_epoch)
        self.distances.reset_fake()
        # identical on every rank: torchmetrics gathered the features of all of them
        pl_module.log(f"val/fid_{self.name}", values["fid"], prog_bar=True, sync_dist=True)
        pl_module.log(f"val/kid_{self.name}", values["kid_mean"], sync_dist=True)


def build_sample_quality(config: EvalConfig, data: DataConfig, num_real: int,
                         seed: int) -> SampleQuality:
    """The :class:`SampleQuality` callback of a run, its features loaded and its sample counts
    checked against the ``num_real`` validation images (a :class:`ConfigError` otherwise)."""
    extractor = build_feature_extractor(data.name, config.inception_weights)
    check_sample_counts(config.num_samples, num_real, extractor.num_features,
                        config.kid_subset_size, "eval.num_samples", "eval.kid_subset_size")
    return SampleQuality(extractor, config.every_n_epochs, config.num_samples,
                         config.kid_subset_size, config.batch_size, seed)


def _cuda_devices(device: torch.device) -> list[torch.device]:
    return [device] if device.type == "cuda" else []
