"""Reading image data sets from their files: the bundled mnist5k archive, idx files
(MNIST, Fashion-MNIST), torchvision's pickled CIFAR-10 batches, and stratified splits. Damaged
or missing files become one :class:`~lit_ebm.errors.ConfigError` naming the file and the fix,
never a traceback. Each split's files are read on their own, so training never opens a test
file."""

from __future__ import annotations

import gzip
import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lit_ebm.errors import ConfigError, describe_error

# The package's own folder holding mnist_5k.npz and its README (provenance, licences): the
# package is installed as plain files (wheels always are), so the resource is a folder on disk.
BUNDLED_DIR = Path(str(resources.files("lit_ebm") / "bundled"))
# Where the other data sets are looked for (and downloaded to), under the working directory.
LOCAL_DATA_DIR = Path("data")
# Debian/Ubuntu: `apt-get install dataset-fashion-mnist` puts the original idx .gz files here.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
RESTORE_MNIST5K = ("restore it with `pip install --force-reinstall lit_ebm` (in a checkout: "
                   "`git checkout lit_ebm/bundled/mnist_5k.npz`)")
REPLACE_IDX = ("delete the damaged files and set data.download=true, or replace them with intact "
               "copies")
# torchvision's CIFAR-10 layout under data.root (batches.meta is not needed).
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


def stratified_split(labels: np.ndarray, val_per_class: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (kept, held-out) indices holding ``val_per_class`` of each label out, the
    same for the same labels and ``seed``."""
    rng = np.random.default_rng(seed)
    val = np.concatenate([
        rng.permutation(np.flatnonzero(labels == label))[:val_per_class]
        for label in np.unique(labels)
    ])
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, np.sort(val)


def mnist5k_splits(labels: np.ndarray, per_class: int) -> tuple[np.ndarray, ...]:
    """mnist5k's fixed (train, val, test) indices: ``per_class`` digits of each class held out
    for validation (the split runs have always been validated on), then ``per_class`` more of
    each class from the rest for test, so no recipe chosen on validation saw a test digit."""
    rest, val = stratified_split(labels, per_class)
    kept, test = stratified_split(labels[rest], per_class, seed=1)
    return rest[kept], val, rest[test]


def missing_file_error(path: Path, what: str, download_possible: bool,
                       extra: str = "") -> ConfigError:
    fix = "set data.root to the folder that holds it"
    if download_possible:
        fix += ", or set data.download=true to fetch it"
    return ConfigError(f"{what} not found at '{path}': {fix}{extra}")


def default_root(name: str) -> Path:
    """Where a data set is looked for when ``data.root`` is null: the installed package's
    ``bundled/`` folder for mnist5k; the system Fashion-MNIST folder for fashion_mnist when it
    exists; otherwise ``./data`` under the current working directory (as an absolute path),
    where ``data.download=true`` puts torchvision's files."""
    if name == "mnist5k":
        return BUNDLED_DIR
    if name == "fashion_mnist" and FASHION_MNIST_SYSTEM_DIR.is_dir():
        return FASHION_MNIST_SYSTEM_DIR
    return LOCAL_DATA_DIR.resolve()


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
        if len(body) != int(np.prod(shape)) or not body:
            raise ValueError(f"the header says shape {shape}, but {len(body)} bytes follow")
    except Exception as err:  # gzip, EOF and header errors all mean "damaged"
        raise ConfigError(f"the idx file '{path}' cannot be read ({describe_error(err)}): it is "
                          f"truncated or corrupted; {REPLACE_IDX}") from None
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def idx_folders(name: str, root: Path) -> list[Path]:
    """Where the idx files of ``name`` (mnist or fashion_mnist) may be: torchvision's
    ``root/MNIST/raw`` for mnist; ``root`` itself (the Debian package's layout) or
    torchvision's ``root/FashionMNIST/raw`` for fashion_mnist."""
    if name == "mnist":
        return [root / "MNIST" / "raw"]
    return [root, root / "FashionMNIST" / "raw"]


def idx_file(folders: list[Path], stem: str) -> Path | None:
    """The first of ``stem.gz`` or ``stem`` found in ``folders``."""
    for folder in folders:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                return candidate
    return None


def read_idx_split(folders: list[Path], split: str) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 1, H, W) and int64 labels (N,) of one split from idx files."""
    paths = [idx_file(folders, stem) for stem in IDX_FILES[split]]
    images, labels = (read_idx(path) for path in paths if path is not None)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ConfigError(f"the {split} idx files in {[str(f) for f in folders]} hold images "
                          f"{images.shape} and labels {labels.shape}, not (N, H, W) and (N,): "
                          f"{REPLACE_IDX}")
    return as_nchw_uint8(images.copy()), torch.from_numpy(labels.astype(np.int64))


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One of torchvision's pickled CIFAR-10 batches: uint8 images (N, 3, 32, 32), labels (N,)."""
    try:
        with open(path, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
        data, labels = np.asarray(entry["data"]), np.asarray(entry["labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.shape != (len(labels), 3 * 32 * 32):
            raise ValueError(f"it holds data {data.dtype} {data.shape} and {len(labels)} labels, "
                             "not uint8 (N, 3072) with N labels")
    except Exception as err:  # pickle, EOF, key and shape errors all mean "damaged"
        raise ConfigError(f"the CIFAR-10 file '{path}' cannot be read ({describe_error(err)}): "
                          "it is truncated or corrupted; delete its folder and set "
                          "data.download=true, or set data.root to an intact copy") from None
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10_split(folder: Path, split: str) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 3, 32, 32) and int64 labels (N,) of CIFAR-10's ``train`` or ``test``
    files in ``folder``."""
    batches = [read_cifar10_batch(folder / name) for name in CIFAR10_FILES[split]]
    return (torch.from_numpy(np.concatenate([images for images, _ in batches])),
            torch.from_numpy(np.concatenate([labels for _, labels in batches])))


def read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bundled archive's uint8 images (N, 28, 28) and labels (N,), or a ConfigError."""
    try:
        with np.load(path) as archive:
            images, labels = archive["images"], archive["labels"]
    except Exception as err:  # zip, zlib, pickle and key errors all mean "damaged"
        raise ConfigError(
            f"the mnist5k archive '{path}' cannot be read ({describe_error(err)}): it is "
            f"truncated or corrupted; {RESTORE_MNIST5K}, or set data.root to a folder holding "
            "an intact copy") from None
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or len(labels) != len(images):
        raise ConfigError(f"the mnist5k archive '{path}' holds images {images.dtype} "
                          f"{images.shape} and {len(labels)} labels, not uint8 (N, 28, 28) with N "
                          f"labels: {RESTORE_MNIST5K}")
    return images, labels


def as_nchw_uint8(data: Tensor | np.ndarray) -> Tensor:
    """MNIST-like (N, H, W) or CIFAR-10's (N, H, W, C) images to (N, C, H, W)."""
    images = torch.as_tensor(data)
    return images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2).contiguous()

