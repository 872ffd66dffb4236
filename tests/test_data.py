"""DataModules: shapes, dtypes, ranges, split sizes and missing-file errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_ebm import image_files
from lit_ebm.config import DataConfig
from lit_ebm.data import (
    ImageDataModule,
    Toy2dDataModule,
    build_datamodule,
)
from lit_ebm.errors import ConfigError
from lit_ebm.image_files import default_root, read_idx, stratified_split


def _setup(config: DataConfig, dequantise: bool = True) -> ImageDataModule:
    module = build_datamodule(config, dequantise)
    module.setup("fit")
    return module


def test_mnist5k_split_sizes_and_stratification() -> None:
    module = _setup(DataConfig(name="mnist5k"))
    assert (len(module.train_set), len(module.val_set)) == (4500, 500)
    with np.load(module.root / "mnist_5k.npz") as archive:
        labels = archive["labels"]
    train, val = stratified_split(labels, 50)
    assert np.bincount(labels[val]).tolist() == [50] * 10
    assert not set(train) & set(val)
    again_train, again_val = stratified_split(labels, 50)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)


def test_dequantised_batches_lie_in_unit_interval() -> None:
    module = _setup(DataConfig(name="mnist5k", batch_size=32))
    batch = next(iter(module.train_dataloader()))
    assert batch.shape == (32, 1, 28, 28) and batch.dtype == torch.float32
    assert 0.0 <= batch.min() and batch.max() < 1.0
    levels = torch.floor(batch * 256)
    assert len(torch.unique(levels)) > 100  # real digits, not a constant image


def test_validation_noise_is_fixed_and_training_noise_is_not() -> None:
    module = _setup(DataConfig(name="mnist5k"))
    assert torch.equal(module.val_set[3], module.val_set[3])
    assert not torch.equal(module.train_set[3], module.train_set[3])
    first, second = module.train_set[3], module.train_set[3]
    assert torch.equal(torch.floor(first * 256), torch.floor(second * 256))  # same levels k


def test_discrete_models_get_levels_over_255() -> None:
    module = _setup(DataConfig(name="mnist5k"), dequantise=False)
    image = module.val_set[0]
    assert torch.allclose(image * 255, torch.round(image * 255), atol=1e-4)
    assert image.max() == 1.0


def test_missing_mnist5k_names_path_and_key(tmp_path: Path) -> None:
    module = build_datamodule(DataConfig(name="mnist5k", root=str(tmp_path)), True)
    with pytest.raises(ConfigError, match=r"mnist_5k\.npz.*set data\.root"):
        module.check_files()


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST/raw"),
                                              ("cifar10", "cifar-10-batches-py")])
def test_missing_torchvision_data_names_path_and_keys(tmp_path: Path, name: str,
                                                      folder: str) -> None:
    module = build_datamodule(DataConfig(name=name, root=str(tmp_path)), True)
    with pytest.raises(ConfigError) as err:
        module.check_files()
    message = str(err.value)
    assert str(tmp_path / folder) in message
    assert "data.root" in message and "data.download=true" in message


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_through_torchvision_reads_local_files(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("t10k", 12)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, (count,)))
    module = _setup(DataConfig(name="mnist", root=str(tmp_path), batch_size=8))
    assert (len(module.train_set), len(module.val_set)) == (40, 12)
    batch = next(iter(module.train_dataloader()))
    assert batch.shape == (8, 1, 28, 28) and 0.0 <= batch.min() and batch.max() < 1.0


def test_toy2d_points_are_fixed_per_split() -> None:
    config = DataConfig(name="toy2d", toy_train_size=300, toy_val_size=100, batch_size=50)
    first, second = Toy2dDataModule(config), Toy2dDataModule(config)
    first.setup("fit")
    second.setup("fit")
    assert torch.equal(first.val_set.tensors[0], second.val_set.tensors[0])
    assert not torch.equal(first.train_set.tensors[0][:100], first.val_set.tensors[0])
    batch = next(iter(first.train_dataloader()))
    assert batch.shape == (50, 2) and batch.dtype == torch.float32


def _write_fashion_idx(folder: Path, counts: dict[str, int], compress: bool = True) -> None:
    """Small Fashion-MNIST idx files (images and labels of both splits) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        for kind, shape in (("images-idx3", (count, 28, 28)), ("labels-idx1", (count,))):
            path = folder / f"{split}-{kind}-ubyte"
            _write_idx(path, rng.integers(0, 10 if kind.startswith("labels") else 256, shape))
            if compress:
                path.with_suffix(".gz").write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()


def test_fashion_mnist_reads_idx_gz_files_directly(tmp_path: Path) -> None:
    _write_fashion_idx(tmp_path, {"train": 30, "t10k": 10})
    module = _setup(DataConfig(name="fashion_mnist", root=str(tmp_path), batch_size=8),
                    dequantise=False)
    assert (len(module.train_set), len(module.val_set)) == (30, 10)
    data = module.load()
    expected = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert torch.equal(data.train_images[:, 0], torch.from_numpy(expected.copy()))
    assert data.train_images.dtype == torch.uint8 and data.val_labels.dtype == torch.int64
    assert data.val_labels.max() < 10
    batch = next(iter(module.train_dataloader()))
    assert batch.shape == (8, 1, 28, 28) and 0.0 <= batch.min() and batch.max() <= 1.0


def test_fashion_mnist_in_torchvision_layout_extracted(tmp_path: Path) -> None:
    _write_fashion_idx(tmp_path / "FashionMNIST" / "raw", {"train": 12, "t10k": 6},
                       compress=False)
    module = _setup(DataConfig(name="fashion_mnist", root=str(tmp_path), batch_size=4))
    assert (len(module.train_set), len(module.val_set)) == (12, 6)


def test_missing_fashion_mnist_names_the_files_the_keys_and_the_package(tmp_path: Path) -> None:
    module = build_datamodule(DataConfig(name="fashion_mnist", root=str(tmp_path)), True)
    with pytest.raises(ConfigError) as err:
        module.check_files()
    message = str(err.value)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message
    assert "data.root" in message and "data.download=true" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_default_fashion_mnist_root_is_the_system_folder_when_it_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_files, "FASHION_MNIST_SYSTEM_DIR", tmp_path)
    assert default_root("fashion_mnist") == tmp_path
    assert default_root("mnist5k") == image_files.REPO_DATA_DIR
    monkeypatch.setattr(image_files, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    assert default_root("fashion_mnist") == image_files.REPO_DATA_DIR


@pytest.mark.parametrize("damage", ["truncated", "not-gzip", "wrong-header"])
def test_damaged_idx_files_are_a_clear_error(tmp_path: Path, damage: str) -> None:
    _write_fashion_idx(tmp_path, {"train": 5, "t10k": 5})
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    damaged = {"truncated": gzip.compress(raw[:-100]), "not-gzip": raw[:200],
               "wrong-header": gzip.compress(b"\1\2" + raw[2:])}[damage]
    path.write_bytes(damaged)
    module = build_datamodule(DataConfig(name="fashion_mnist", root=str(tmp_path)), True)
    with pytest.raises(ConfigError, match=r"train-images-idx3-ubyte\.gz' cannot be read"):
        module.setup("fit")


def test_checkpoints_record_the_data_config() -> None:
    module = build_datamodule(DataConfig(name="mnist5k", batch_size=16), True)
    assert module.hparams["data"]["name"] == "mnist5k"
    assert module.hparams["data"]["batch_size"] == 16
