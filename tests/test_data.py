"""DataModules: shapes, dtypes, ranges, split sizes and missing-file errors."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_ebm.config import ConfigError, DataConfig
from lit_ebm.data import ImageDataModule, Toy2dDataModule, build_datamodule, stratified_split


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
