"""Small data sets in their files' own formats (idx files, torchvision's pickled CIFAR-10
batches), each image tagged with its split and index so tests can tell where it came from."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from torch import Tensor

TAGS = {"train": 1, "test": 2}


def tagged_images(count: int, shape: tuple[int, ...], split: str) -> np.ndarray:
    """Random uint8 images whose first three values are the split's tag and the index."""
    rng = np.random.default_rng(TAGS[split])
    images = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
    flat = images.reshape(count, -1)
    flat[:, 0] = TAGS[split]
    flat[:, 1], flat[:, 2] = np.arange(count) // 256, np.arange(count) % 256
    return images


def labels_of(count: int) -> np.ndarray:
    """Every class equally often: 0, 1, ..., 9, 0, 1, ..."""
    return np.arange(count) % 10


def image_keys(images: Tensor) -> set[tuple[int, int]]:
    """The (tag, index) of each uint8 image (N, C, H, W)."""
    flat = images.reshape(len(images), -1)[:, :3].long()
    return {(int(t), int(hi) * 256 + int(lo)) for t, hi, lo in flat}


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """``array`` as an idx file of unsigned bytes (LeCun's MNIST format)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                     *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        Path(f"{path}.gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_idx_set(folder: Path, counts: dict[str, int], compress: bool = False) -> None:
    """MNIST-format files of both splits in ``folder``: ``counts`` maps train/test to sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in counts.items():
        stem = "train" if split == "train" else "t10k"
        write_idx(folder / f"{stem}-images-idx3-ubyte", tagged_images(count, (28, 28), split),
                  compress)
        write_idx(folder / f"{stem}-labels-idx1-ubyte", labels_of(count), compress)


def write_cifar10(root: Path, num_train: int, num_test: int) -> Path:
    """torchvision's ``cifar-10-batches-py`` under ``root``: five training batches, the test
    batch and ``batches.meta``; returns the folder."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = tagged_images(num_train, (3, 32, 32), "train").reshape(num_train, -1)
    labels = labels_of(num_train)
    for i, part in enumerate(np.array_split(np.arange(num_train), 5), start=1):
        _pickle(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                             "data": train[part], "labels": labels[part].tolist()})
    test = tagged_images(num_test, (3, 32, 32), "test").reshape(num_test, -1)
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": test,
                                    "labels": labels_of(num_test).tolist()})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)],
                                      "num_cases_per_batch": num_train // 5, "num_vis": 3072})
    return folder


def _pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as file:
        pickle.dump(entry, file, protocol=2)
