"""LightningDataModules: bundled mnist5k, MNIST, Fashion-MNIST, CIFAR-10, and toy2d points.

Image batches are float tensors in the energy's input space (DESIGN.md section 2):
continuous generators get uniformly dequantised x = (k + u) / 256 in [0, 1); discrete
generators get k / 255. Validation noise is fixed per image, so val/bpd is comparable
across epochs.
"""

from __future__ import annotations

import gzip
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lit_ebm.config import ConfigError, DataConfig
from lit_ebm.toy2d import sample_toy2d

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MNIST5K_FILE = "mnist_5k.npz"
MNIST5K_VAL_PER_CLASS = 50
IMAGE_SHAPES = {"mnist5k": (1, 28, 28), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
                "cifar10": (3, 32, 32)}
# Debian/Ubuntu: `apt-get install dataset-fashion-mnist` puts the original idx .gz files here.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
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


def stratified_split(labels: np.ndarray, val_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/val indices holding ``val_per_class`` of each label out for val."""
    rng = np.random.default_rng(0)
    val = np.concatenate([
        rng.permutation(np.flatnonzero(labels == label))[:val_per_class]
        for label in np.unique(labels)
    ])
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, np.sort(val)


def _missing(path: Path, what: str, download_possible: bool, extra: str = "") -> ConfigError:
    fix = "set data.root to the folder that holds it"
    if download_possible:
        fix += ", or set data.download=true to fetch it"
    return ConfigError(f"{what} not found at '{path}': {fix}{extra}")


def default_root(name: str) -> Path:
    """Where a data set is looked for when ``data.root`` is null: the system Fashion-MNIST
    folder when it exists, otherwise the repository's ``data/`` folder."""
    if name == "fashion_mnist" and FASHION_MNIST_SYSTEM_DIR.is_dir():
        return FASHION_MNIST_SYSTEM_DIR
    return REPO_DATA_DIR


def read_idx(path: Path) -> np.ndarray:
    """An idx file of unsigned bytes (LeCun's MNIST format), plain or gzip-compressed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
        zero, dtype_code, ndim = data[0:2], data[2], data[3]
        if zero != b"\0\0" or dtype_code != 0x08:
            raise ValueError("not an idx file of unsigned bytes")
        shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
        body = data[4 + 4 * ndim:]
        if len(body) != int(np.prod(shape)):
            raise ValueError(f"the header says shape {shape}, but {len(body)} bytes follow")
    except Exception as err:  # gzip, EOF and header errors all mean "damaged"
        raise ConfigError(f"the idx file '{path}' cannot be read ({_reason(err)}): it is "
                          "truncated or corrupted; replace it with an intact copy") from None
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _idx_file(folders: list[Path], stem: str) -> Path | None:
    """The first of ``stem.gz`` or ``stem`` found in ``folders``."""
    for folder in folders:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                return candidate
    return None


def _fashion_mnist_folders(root: Path) -> list[Path]:
    """Where Fashion-MNIST's idx files may be: ``root`` itself (the Debian package's layout)
    or torchvision's ``root/FashionMNIST/raw``."""
    return [root, root / "FashionMNIST" / "raw"]


def _read_idx_split(folders: list[Path], split: str) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 1, H, W) and int64 labels (N,) of one split from idx files."""
    images, labels = (read_idx(_idx_file(folders, stem)) for stem in IDX_FILES[split])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ConfigError(f"the {split} idx files in {[str(f) for f in folders]} hold images "
                          f"{images.shape} and labels {labels.shape}, not (N, H, W) and (N,): "
                          "replace them with intact copies")
    return _as_nchw_uint8(images.copy()), torch.from_numpy(labels.astype(np.int64))


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
        self.train_set: QuantisedImages | None = None
        self.val_set: QuantisedImages | None = None

    def check_files(self) -> None:
        """Raise :class:`ConfigError` naming the expected path when data cannot be found."""
        name = self.config.name
        if name == "mnist5k":
            path = self.root / MNIST5K_FILE
            if not path.is_file():
                raise _missing(path, "the bundled mnist5k archive", download_possible=False)
        elif name == "fashion_mnist":
            if not self.config.download:
                folders = _fashion_mnist_folders(self.root)
                for stem in (*IDX_FILES["train"], *IDX_FILES["val"]):
                    if _idx_file(folders, stem) is None:
                        raise _missing(
                            self.root / f"{stem}.gz", "the fashion_mnist files",
                            download_possible=True,
                            extra=f" (on Debian or Ubuntu, `apt-get install "
                                  f"dataset-fashion-mnist` puts them in "
                                  f"'{FASHION_MNIST_SYSTEM_DIR}', used when data.root is null)")
        elif not self.config.download:
            path = self.root / TORCHVISION_FOLDERS[name]
            if not path.is_dir():
                raise _missing(path, f"the {name} files", download_possible=True)

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
                f"the {self.config.name} files under '{root}' cannot be read ({_reason(err)}): "
                "they are incomplete or damaged; delete them and set data.download=true, or set "
                "data.root to an intact copy") from None

    def load(self) -> LabelledImages:
        """Both splits as uint8 images with their labels (read from disk on every call)."""
        self.check_files()
        name = self.config.name
        if name == "mnist5k":
            images, labels = _read_mnist5k(self.root / MNIST5K_FILE)
            train, val = stratified_split(labels, MNIST5K_VAL_PER_CLASS)
            images, labels = torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)
            return LabelledImages(images[train], labels[train].long(), images[val],
                                  labels[val].long())
        if name == "fashion_mnist":
            folders = _fashion_mnist_folders(self.root)
            return LabelledImages(*_read_idx_split(folders, "train"),
                                  *_read_idx_split(folders, "val"))
        train_set, val_set = self._torchvision_sets(download=False)
        return LabelledImages(_as_nchw_uint8(train_set.data), torch.as_tensor(train_set.targets),
                              _as_nchw_uint8(val_set.data), torch.as_tensor(val_set.targets))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        data = self.load()
        self.train_set = QuantisedImages(data.train_images, self.dequantise)
        self.val_set = QuantisedImages(data.val_images, self.dequantise, noise_seed=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=shuffle,
                          drop_last=shuffle, num_workers=workers, persistent_workers=workers > 0)


def _reason(err: Exception) -> str:
    """The first line of an exception, with its type."""
    text = str(err).splitlines()[0] if str(err) else "no details"
    return f"{type(err).__name__}: {text}"


def _read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bundled archive's uint8 images (N, 28, 28) and labels (N,), or a ConfigError."""
    try:
        with np.load(path) as archive:
            images, labels = archive["images"], archive["labels"]
    except Exception as err:  # zip, zlib, pickle and key errors all mean "damaged"
        raise ConfigError(
            f"the mnist5k archive '{path}' cannot be read ({_reason(err)}): it is truncated or "
            "corrupted; restore it with `git checkout data/mnist_5k.npz`, or set data.root to a "
            "folder holding an intact copy") from None
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or len(labels) != len(images):
        raise ConfigError(f"the mnist5k archive '{path}' holds images {images.dtype} "
                          f"{images.shape} and {len(labels)} labels, not uint8 (N, 28, 28) with N "
                          "labels: restore it with `git checkout data/mnist_5k.npz`")
    return images, labels


def _as_nchw_uint8(data: Tensor | np.ndarray) -> Tensor:
    """MNIST-like (N, H, W) or CIFAR-10's (N, H, W, C) images to (N, C, H, W)."""
    images = torch.as_tensor(data)
    return images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2).contiguous()


class Toy2dDataModule(pl.LightningDataModule):
    """Points from a toy 2-D density (ring8, pinwheel), drawn once from fixed seeds."""

    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        self.config = config
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = TensorDataset(self._draw(self.config.toy_train_size, seed=1))
        self.val_set = TensorDataset(self._draw(self.config.toy_val_size, seed=2))

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
