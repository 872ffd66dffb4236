"""LightningDataModules: bundled mnist5k, MNIST, Fashion-MNIST, CIFAR-10, and toy2d points.

Image batches are float tensors in the energy's input space (docs/mathematics.md, densities
in one space): continuous generators get uniformly dequantised x = (k + u) / 256 in [0, 1);
discrete generators get k / 255. Validation noise is fixed per image, so val/bpd is comparable
across epochs.

The validation split, on which the best checkpoint and the FIDs of a run are chosen, is carved
from the training files: for mnist, fashion_mnist and cifar10 a fixed stratified
``data.val_size`` images (500 per class by default). mnist5k's 5,000 digits are split
4,000 / 500 / 500 (train / validation / test), fixed and stratified. Training never reads a
test image; the test set is reached through :meth:`ImageDataModule.load_test` only
(``python -m lit_ebm.evaluate --split test``, the study runner).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lit_ebm.config import DataConfig
from lit_ebm.errors import ConfigError, describe_error
from lit_ebm.image_files import (
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    FASHION_MNIST_SYSTEM_DIR,
    IDX_FILES,
    default_root,
    idx_file,
    idx_folders,
    missing_file_error,
    mnist5k_splits,
    read_cifar10_split,
    read_idx_split,
    read_mnist5k,
    stratified_split,
)
from lit_ebm.toy2d import sample_toy2d

MNIST5K_FILE = "mnist_5k.npz"
MNIST5K_PER_CLASS = 50  # held out of each class for validation, and as many for test
NUM_CLASSES = 10  # of every image data set; data.val_size holds out val_size / 10 of each
IMAGE_SHAPES = {"mnist5k": (1, 28, 28), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
                "cifar10": (3, 32, 32)}
DOWNLOAD_LOCK = ".lit_ebm-download.lock"


@dataclass
class LabelledImages:
    """uint8 images ``(N, C, H, W)`` of both splits with their int64 class labels ``(N,)``."""

    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor


def event_shape(data: DataConfig) -> tuple[int, ...]:
    """Shape of one example of the configured data set."""
    return IMAGE_SHAPES.get(data.name, (2,))


def carve_validation(labels: Tensor, val_size: int) -> tuple[Tensor, Tensor]:
    """Fixed, stratified (train, val) indices into a training split: ``val_size / 10`` images
    of each class held out, always the same for the same labels."""
    per_class = val_size // NUM_CLASSES
    counts = np.bincount(labels.numpy(), minlength=NUM_CLASSES)
    if counts.min() <= per_class:
        most = (int(counts.min()) - 1) * NUM_CLASSES
        raise ConfigError(
            f"invalid value {val_size} for 'data.val_size': it holds out {per_class} images of "
            f"each class, but class {int(counts.argmin())} has {int(counts.min())} training "
            f"images; use data.val_size<={max(most, 0)} (a multiple of {NUM_CLASSES})")
    train, val = stratified_split(labels.numpy(), per_class)
    return torch.from_numpy(train), torch.from_numpy(val)


class QuantisedImages(Dataset):
    """uint8 images ``(N, C, H, W)`` served as floats in the energy's input space."""

    def __init__(self, images: Tensor, dequantise: bool, noise_seed: int | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images of shape (N, C, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images = images
        self.dequantise = dequantise
        self.noise_seed = noise_seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        levels = self.images[index].float()
        if not self.dequantise:
            return levels / 255.0
        if self.noise_seed is None:
            noise = torch.rand(levels.shape)
        else:
            rng = torch.Generator().manual_seed(self.noise_seed + index)
            noise = torch.rand(levels.shape, generator=rng)
        return (levels + noise) / 256.0


class ImageDataModule(pl.LightningDataModule):
    """mnist5k (bundled), mnist, fashion_mnist or cifar10 as :class:`QuantisedImages` loaders.

    ``prepare_data`` downloads (``data.download``), which Lightning runs on one process per
    node; ``setup`` only reads. The data config is saved in checkpoints
    (``datamodule_hyper_parameters``), so that ``lit_ebm.evaluate`` knows which data, and which
    validation split, a checkpoint was trained on.
    """

    def __init__(self, config: DataConfig, dequantise: bool) -> None:
        super().__init__()
        if config.name not in IMAGE_SHAPES:
            raise ConfigError(f"data.name={config.name!r} is not an image data set")
        self.save_hyperparameters({"data": asdict(config)})
        self.config = config
        self.dequantise = dequantise
        self.root = Path(config.root) if config.root is not None else default_root(config.name)
        self._splits: tuple[QuantisedImages, QuantisedImages] | None = None

    @property
    def train_set(self) -> QuantisedImages:
        return self._ready()[0]

    @property
    def val_set(self) -> QuantisedImages:
        return self._ready()[1]

    def _ready(self) -> tuple[QuantisedImages, QuantisedImages]:
        if self._splits is None:
            raise RuntimeError("call setup() before asking for the data")
        return self._splits

    def _missing_file(self, split: str) -> Path | None:
        """The first file of ``split`` (``train`` or ``test``) that is not there, else None."""
        name = self.config.name
        if name == "mnist5k":
            path = self.root / MNIST5K_FILE
            return None if path.is_file() else path
        if name == "cifar10":
            folder = self.root / CIFAR10_FOLDER
            return next((folder / f for f in CIFAR10_FILES[split] if not (folder / f).is_file()),
                        None)
        folders = idx_folders(name, self.root)
        for stem in IDX_FILES[split]:
            if idx_file(folders, stem) is None:
                return folders[0] / f"{stem}.gz"
        return None

    def check_files(self, split: str = "train") -> None:
        """Raise :class:`ConfigError` naming the expected path when the files of ``split``
        (``train``, which the validation split is carved from, or ``test``) are missing."""
        path = self._missing_file(split)
        if path is None:
            return
        name = self.config.name
        if name == "mnist5k":
            raise missing_file_error(path, "the bundled mnist5k archive", download_possible=False)
        extra = ""
        if name == "fashion_mnist":
            extra = (f" (on Debian or Ubuntu, `apt-get install dataset-fashion-mnist` puts them "
                     f"in '{FASHION_MNIST_SYSTEM_DIR}', used when data.root is null)")
        raise missing_file_error(path, f"the {name} files", download_possible=True, extra=extra)

    def prepare_data(self) -> None:
        """Download the data set through torchvision when ``data.download`` is set and files
        are missing, under a file lock in ``data.root`` so that concurrent processes download
        once; then check that the training files are there."""
        missing = self._missing_file("train") or self._missing_file("test")
        if self.config.download and self.config.name != "mnist5k" and missing is not None:
            from filelock import FileLock

            self.root.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.root / DOWNLOAD_LOCK)):
                if self._missing_file("train") or self._missing_file("test"):
                    self._download()
        self.check_files("train")

    def _download(self) -> None:
        from torchvision import datasets

        cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST,
               "cifar10": datasets.CIFAR10}[self.config.name]
        try:
            cls(str(self.root), train=True, download=True)
        except Exception as err:  # no network, a damaged archive: never a traceback
            raise ConfigError(
                f"downloading {self.config.name} into '{self.root}' failed "
                f"({describe_error(err)}): check the network, or put the files there yourself "
                "and set data.download=false") from None

    def _read(self, split: str) -> tuple[Tensor, Tensor]:
        """uint8 images and labels of the ``train`` or ``test`` files (mnist, fashion_mnist,
        cifar10)."""
        self.check_files(split)
        if self.config.name == "cifar10":
            return read_cifar10_split(self.root / CIFAR10_FOLDER, split)
        return read_idx_split(idx_folders(self.config.name, self.root), split)

    def load(self) -> LabelledImages:
        """The training and validation splits as uint8 images with their labels, both from
        the training files (read from disk on every call; no test file is opened)."""
        if self.config.name == "mnist5k":
            self.check_files()
            array_images, array_labels = read_mnist5k(self.root / MNIST5K_FILE)
            train, val, _ = mnist5k_splits(array_labels, MNIST5K_PER_CLASS)
            images = torch.from_numpy(array_images).unsqueeze(1)
            labels = torch.from_numpy(array_labels).long()
            return LabelledImages(images[train], labels[train], images[val], labels[val])
        images, labels = self._read("train")
        kept, held_out = carve_validation(labels, self.config.val_size)
        return LabelledImages(images[kept], labels[kept], images[held_out], labels[held_out])

    def load_test(self) -> tuple[Tensor, Tensor]:
        """The test set as uint8 images and labels (the official one; mnist5k's own 500 digits),
        for ``lit_ebm.evaluate --split test`` only: nothing in training calls this."""
        if self.config.name == "mnist5k":
            self.check_files()
            array_images, array_labels = read_mnist5k(self.root / MNIST5K_FILE)
            _, _, test = mnist5k_splits(array_labels, MNIST5K_PER_CLASS)
            return (torch.from_numpy(array_images[test]).unsqueeze(1),
                    torch.from_numpy(array_labels[test]).long())
        return self._read("test")

    def setup(self, stage: str | None = None) -> None:
        """Read both splits from disk (never downloads: see :meth:`prepare_data`)."""
        if self._splits is None:
            data = self.load()
            self._splits = (QuantisedImages(data.train_images, self.dequantise),
                            QuantisedImages(data.val_images, self.dequantise, noise_seed=0))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=shuffle,
                          drop_last=shuffle, num_workers=workers, persistent_workers=workers > 0)


class Toy2dDataModule(pl.LightningDataModule):
    """Points from a toy 2-D density (ring8, pinwheel), drawn once from fixed seeds."""

    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        self.config = config
        self.train_set = TensorDataset(self._draw(config.toy_train_size, seed=1))
        self.val_set = TensorDataset(self._draw(config.toy_val_size, seed=2))

    def _draw(self, num_points: int, seed: int) -> Tensor:
        rng = torch.Generator().manual_seed(seed)
        return sample_toy2d(self.config.toy_shape, num_points, rng)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.config.batch_size, shuffle=True,
                          drop_last=True, collate_fn=_stack_points)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.config.batch_size, collate_fn=_stack_points)


def _stack_points(items: list[tuple[Tensor]]) -> Tensor:
    return torch.stack([item[0] for item in items])


def build_datamodule(config: DataConfig, dequantise: bool) -> ImageDataModule | Toy2dDataModule:
    """The DataModule for ``config``; ``dequantise`` follows the generator (continuous or not)."""
    if config.name == "toy2d":
        return Toy2dDataModule(config)
    return ImageDataModule(config, dequantise)
