"""The reference split every row is measured against: its images (the validation split a run
was trained with, or the official test set, the only way lit_ebm reads it), the training images
of the real-versus-real row, the feature extractor, and a checkpoint's bits/dim on the split."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lit_ebm.config import DataConfig
from lit_ebm.data import ImageDataModule, QuantisedImages
from lit_ebm.errors import ConfigError
from lit_ebm.evaluation.loading import LoadedCheckpoint
from lit_ebm.evaluation.quality import check_sample_counts
from lit_ebm.evaluation.settings import KID_SUBSET_SIZE, EvaluationSettings, flag
from lit_ebm.features import FeatureExtractor, build_feature_extractor
from lit_ebm.generators import bits_per_dim
from lit_ebm.modules import AdversarialEBM


@dataclass
class ValidationBits:
    """The generator's bits/dim on the reference split; for an EBM also the learned log Z, its
    own bits/dim under it, and the energies of the reference images."""

    bpd: float
    log_z_learned: float | None = None
    ebm_bpd_learned_log_z: float | None = None
    energies: Tensor | None = None


@dataclass
class Reference:
    """The images every row is measured against (``split``), the training images of the
    real-versus-real row, the features, and the KID subset size."""

    name: str
    split: str
    images: Tensor
    train_images: Tensor
    extractor: FeatureExtractor
    kid_subset_size: int


def data_module(section: dict[str, Any], root: str | None, dequantise: bool,
                batch_size: int = 256) -> ImageDataModule:
    """The DataModule of a checkpoint's data section (its validation split included), reading
    from ``root`` when given."""
    known = {item.name for item in fields(DataConfig)}
    values = {key: value for key, value in section.items() if key in known}
    config = DataConfig(**{**values, "root": root or section.get("root"),
                           "batch_size": batch_size, "num_workers": 0})
    return ImageDataModule(config, dequantise)


def split_images(datamodule: ImageDataModule, split: str) -> QuantisedImages:
    """The ``val`` split, or the official ``test`` set, served as in validation."""
    if split == "test":
        return QuantisedImages(datamodule.load_test()[0], datamodule.dequantise, noise_seed=0)
    datamodule.setup("validate")
    return datamodule.val_set


@torch.no_grad()
def validation_bits(checkpoint: LoadedCheckpoint, data_root: str | None,
                    batch_size: int, split: str = "val") -> ValidationBits:
    """Bits/dim over the whole reference split (``val`` or ``test``) of the data the
    checkpoint was trained on."""
    module, generator = checkpoint.module, checkpoint.module.generator
    datamodule = data_module(checkpoint.data, data_root, not generator.discrete, batch_size)
    log_q, energy = [], []
    for batch in DataLoader(split_images(datamodule, split), batch_size=batch_size):
        batch = batch.to(module.device)
        log_q.append(generator.log_prob(batch))
        if isinstance(module, AdversarialEBM):
            energy.append(module.energy(batch))
    d, discrete = generator.num_dims, generator.discrete
    bpd = float(bits_per_dim(torch.cat(log_q), d, discrete).mean())
    if not energy or not isinstance(module, AdversarialEBM):
        return ValidationBits(bpd)
    energies = torch.cat(energy).double()
    log_z = float(module.log_z.detach())
    ebm_bpd = float(bits_per_dim(-energies - log_z, d, discrete).mean())
    return ValidationBits(bpd, log_z, ebm_bpd, energies)


def load_reference(section: dict[str, Any], root: str | None, settings: EvaluationSettings,
                   device: torch.device) -> Reference:
    """The data set of a checkpoint's data ``section`` (its ``settings.split``, and its
    training split) and its feature extractor; refuses sample counts they cannot serve."""
    datamodule = data_module(section, root, dequantise=False)
    data = datamodule.load()
    images = data.val_images if settings.split == "val" else datamodule.load_test()[0]
    data_name = section["name"]
    extractor = build_feature_extractor(data_name, settings.inception_weights).to(device)
    num_real, num_train = len(images), len(data.train_images)
    kid_subset_size = settings.kid_subset_size
    if kid_subset_size is None:
        kid_subset_size = min(KID_SUBSET_SIZE, num_real)
    check_sample_counts(settings.num_samples, num_real, extractor.num_features, kid_subset_size,
                        flag("num_samples"), flag("kid_subset_size"))
    if settings.num_samples > num_train:
        raise ConfigError(f"{flag('num_samples')} {settings.num_samples} exceeds the {num_train}"
                          " training images that the real-versus-real row draws from: use "
                          f"{flag('num_samples')}<={num_train}")
    return Reference(data_name, settings.split, images, data.train_images, extractor,
                     kid_subset_size)
