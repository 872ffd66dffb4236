"""LightningDataModules: bundled mnist5k, MNIST, Fashion-MNIST, CIFAR-10, and toy2d points.

Image batches are float tensors in the energy's input space (docs/mathematics.md, densities
in one space): continuous generators get uniformly dequantised x = (k + u) / 256 in [0, 1);
discrete generators get k / 255. Validation noise is fixed per image, so val/bpd is comparable
across epochs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lit_ebm.config import DataConfig
from lit_ebm.errors import ConfigError, describe_error
from lit_ebm.image_files import (
    FASHION_MNIST_SYSTEM_DIR,
    IDX_FILES,
    as_nchw_uint8,
    default_root,
    fashion_mnist_folders,
    idx_file,
    missing_file_error,
    read_idx_split,
    read_mnist5k,
    stratified_split,
)
from lit_ebm.toy2d import sample_toy2d

MNIST5K_FILE = "mnist_5k.npz"
MNIST5K_VAL_PER_CLASS = 50
IMAGE_SHAPES = {"mnist5k": (1, 28, 28), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
                "cifar10": (3, 32, 32)}
TORCHVISION_FOLDERS = {"mnist": "MNIST/raw", "cifar10": "cifar-10-batches-py"}


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

    The data config is saved in checkpoints (``datamodule_hyper_parameters``), so that
    ``lit_ebm.evaluate`` knows which data a checkpoint was trained on.
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

    def check_files(self) -> None:
        """Raise :class:`ConfigError` naming the expected path when data cannot be found."""
        name = self.config.name
        if name == "mnist5k":
            path = self.root / MNIST5K_FILE
            if not path.is_file():
                raise missing_file_error(path, "the bundled mnist5k archive",
                                         download_possible=False)
        elif name == "fashion_mnist":
            if not self.config.download:
                folders = fashion_mnist_folders(self.root)
                for stem in (*IDX_FILES["train"], *IDX_FILES["val"]):
                    if idx_file(folders, stem) is None:
                        raise missing_file_error(
                            self.root / f"{stem}.gz", "the fashion_mnist files",
                            download_possible=True,
                            extra=f" (on Debian or Ubuntu, `apt-get install "
                                  f"dataset-fashion-mnist` puts them in "
                                  f"'{FASHION_MNIST_SYSTEM_DIR}', used when data.root is null)")
        elif not self.config.download:
            path = self.root / TORCHVISION_FOLDERS[name]
            if not path.is_dir():
                raise missing_file_error(path, f"the {name} files", download_possible=True)

    def prepare_data(self) -> None:
        self.check_files()
        if self.config.download and self.config.name != "mnist5k":
            self._torchvision_sets(download=True)

    def _torchvision_sets(self, download: bool) -> tuple[Dataset, Dataset]:
        from torchvision import datasets

        cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST,
               "cifar10": datasets.CIFAR10}[self.config.name]
        root = str(self.root)
        try:
            return (cls(root, train=True, download=download),
                    cls(root, train=False, download=download))
        except Exception as err:  # missing, truncated or corrupted files: never a traceback
            raise ConfigError(
                f"the {self.config.name} files under '{root}' cannot be read "
                f"({describe_error(err)}): they are incomplete or damaged; delete them and set "
                "data.download=true, or set data.root to an intact copy") from None

    def load(self) -> LabelledImages:
        """Both splits as uint8 images with their labels (read from disk on every call)."""
        self.check_files()
        name = self.config.name
        if name == "mnist5k":
            array_images, array_labels = read_mnist5k(self.root / MNIST5K_FILE)
            train, val = stratified_split(array_labels, MNIST5K_VAL_PER_CLASS)
            images = torch.from_numpy(array_images).unsqueeze(1)
            labels = torch.from_numpy(array_labels).long()
            return LabelledImages(images[train], labels[train], images[val], labels[val])
        if name == "fashion_mnist":
            folders = fashion_mnist_folders(self.root)
            return LabelledImages(*read_idx_split(folders, "train"),
                                  *read_idx_split(folders, "val"))
        train_set, val_set = self._torchvision_sets(download=False)  # MNIST or CIFAR10
        return LabelledImages(
            as_nchw_uint8(train_set.data), torch.as_tensor(train_set.targets),  # type: ignore[attr-defined]
            as_nchw_uint8(val_set.data), torch.as_tensor(val_set.targets))  # type: ignore[attr-defined]

    def setup(self, stage: str | None = None) -> None:
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
