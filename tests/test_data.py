"""DataModules: shapes, dtypes, ranges, split sizes, the validation split carved from the
training files (test files never read in training), downloads in prepare_data only, and
missing-file errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_ebm import data as data_module
from lit_ebm import image_files
from lit_ebm.config import DataConfig, load_config
from lit_ebm.data import (
    ImageDataModule,
    Toy2dDataModule,
    build_datamodule,
)
from lit_ebm.errors import ConfigError
from lit_ebm.image_files import default_root, read_idx, stratified_split
from tests.fake_data import image_keys, write_cifar10, write_idx_set


def _setup(config: DataConfig, dequantise: bool = True) -> ImageDataModule:
    module = build_datamodule(config, dequantise)
    module.setup("fit")
    return module


def test_mnist5k_split_sizes_and_stratification() -> None:
    module = _setup(DataConfig(name="mnist5k"))
    assert (len(module.train_set), len(module.val_set)) == (4000, 500)
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


def test_mnist_through_torchvision_reads_local_files(tmp_path: Path) -> None:
    write_idx_set(tmp_path / "MNIST" / "raw", {"train": 40, "test": 12})
    module = _setup(DataConfig(name="mnist", root=str(tmp_path), batch_size=8, val_size=10))
    assert (len(module.train_set), len(module.val_set)) == (30, 10)
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


def test_fashion_mnist_reads_idx_gz_files_directly(tmp_path: Path) -> None:
    write_idx_set(tmp_path, {"train": 30, "test": 10}, compress=True)
    config = DataConfig(name="fashion_mnist", root=str(tmp_path), batch_size=8, val_size=10)
    module = _setup(config, dequantise=False)
    assert (len(module.train_set), len(module.val_set)) == (20, 10)
    data = module.load()
    expected = torch.from_numpy(read_idx(tmp_path / "train-images-idx3-ubyte.gz").copy())
    assert image_keys(torch.cat([data.train_images, data.val_images])) == image_keys(
        expected.unsqueeze(1))
    assert data.train_images.dtype == torch.uint8 and data.val_labels.dtype == torch.int64
    assert data.val_labels.max() < 10
    batch = next(iter(module.train_dataloader()))
    assert batch.shape == (8, 1, 28, 28) and 0.0 <= batch.min() and batch.max() <= 1.0


def test_fashion_mnist_in_torchvision_layout_extracted(tmp_path: Path) -> None:
    write_idx_set(tmp_path / "FashionMNIST" / "raw", {"train": 30, "test": 6})
    module = _setup(DataConfig(name="fashion_mnist", root=str(tmp_path), batch_size=4,
                               val_size=10))
    assert (len(module.train_set), len(module.val_set)) == (20, 10)


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
    assert default_root("mnist5k") == image_files.BUNDLED_DIR
    monkeypatch.setattr(image_files, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    monkeypatch.chdir(tmp_path)
    assert default_root("fashion_mnist") == tmp_path / "data"


@pytest.mark.parametrize("damage", ["truncated", "not-gzip", "wrong-header"])
def test_damaged_idx_files_are_a_clear_error(tmp_path: Path, damage: str) -> None:
    write_idx_set(tmp_path, {"train": 20, "test": 5}, compress=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    damaged = {"truncated": gzip.compress(raw[:-100]), "not-gzip": raw[:200],
               "wrong-header": gzip.compress(b"\1\2" + raw[2:])}[damage]
    path.write_bytes(damaged)
    config = DataConfig(name="fashion_mnist", root=str(tmp_path), val_size=10)
    module = build_datamodule(config, True)
    with pytest.raises(ConfigError, match=r"train-images-idx3-ubyte\.gz' cannot be read"):
        module.setup("fit")


def test_checkpoints_record_the_data_config() -> None:
    module = build_datamodule(DataConfig(name="mnist5k", batch_size=16), True)
    assert module.hparams["data"]["name"] == "mnist5k"
    assert module.hparams["data"]["batch_size"] == 16


def _write_training_and_test_files(name: str, root: Path, num_train: int,
                                   num_test: int) -> None:
    if name == "cifar10":
        write_cifar10(root, num_train, num_test)
    else:
        folder = root / "MNIST" / "raw" if name == "mnist" else root
        write_idx_set(folder, {"train": num_train, "test": num_test}, compress=name != "mnist")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_validation_is_a_fixed_stratified_part_of_the_training_files(tmp_path: Path,
                                                                     name: str) -> None:
    _write_training_and_test_files(name, tmp_path, num_train=60, num_test=20)
    config = DataConfig(name=name, root=str(tmp_path), val_size=20, batch_size=4)
    data = ImageDataModule(config, dequantise=False).load()
    train, val = image_keys(data.train_images), image_keys(data.val_images)
    assert (len(train), len(val)) == (40, 20) and not train & val
    assert train | val == {(1, i) for i in range(60)}, "both from the training files only"
    assert np.bincount(data.val_labels.numpy()).tolist() == [2] * 10
    again = ImageDataModule(config, dequantise=False).load()
    assert torch.equal(again.val_images, data.val_images)
    test_images, test_labels = ImageDataModule(config, dequantise=False).load_test()
    assert image_keys(test_images) == {(2, i) for i in range(20)} and len(test_labels) == 20


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_training_needs_no_test_file(tmp_path: Path, name: str) -> None:
    _write_training_and_test_files(name, tmp_path, num_train=30, num_test=5)
    for path in tmp_path.rglob("*"):
        if path.name.startswith(("t10k", "test_batch")):
            path.unlink()
    module = build_datamodule(DataConfig(name=name, root=str(tmp_path), val_size=10), True)
    module.prepare_data()
    module.setup("fit")
    assert (len(module.train_set), len(module.val_set)) == (20, 10)
    with pytest.raises(ConfigError, match=r"(t10k|test_batch).*data\.root"):
        module.load_test()


@pytest.mark.slow
def test_fit_never_opens_a_test_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lit_ebm.fit import main as fit
    from tests.tiny import TINY_IMAGE_RUN

    write_idx_set(tmp_path / "data" / "MNIST" / "raw", {"train": 60, "test": 20})
    opened: list[Path] = []
    read_idx = image_files.read_idx
    monkeypatch.setattr(image_files, "read_idx", lambda path: opened.append(path) or read_idx(
        path))
    argv = [*TINY_IMAGE_RUN, "data.name=mnist", f"data.root={tmp_path / 'data'}",
            "data.val_size=20", "data.batch_size=8", f"output_dir={tmp_path / 'runs'}"]
    assert fit(argv) == 0
    assert opened and all(path.name.startswith("train-") for path in opened)
    config = (tmp_path / "runs" / "run" / "version_0" / "config.yaml").read_text()
    assert "val_size: 20" in config


def test_setup_never_downloads_and_prepare_data_downloads_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloads: list[Path] = []

    def fake_download(self: ImageDataModule) -> None:
        downloads.append(self.root)
        write_idx_set(self.root / "MNIST" / "raw", {"train": 30, "test": 10})

    monkeypatch.setattr(ImageDataModule, "_download", fake_download)
    config = DataConfig(name="mnist", root=str(tmp_path), download=True, val_size=10)
    module = ImageDataModule(config, dequantise=True)
    with pytest.raises(ConfigError, match="not found"):
        module.setup("fit")  # files missing: setup reads, never downloads
    assert downloads == []
    module.prepare_data()
    ImageDataModule(config, dequantise=True).prepare_data()  # files there: no second download
    assert downloads == [tmp_path] and (tmp_path / data_module.DOWNLOAD_LOCK).exists()
    module.setup("fit")
    assert len(module.val_set) == 10


def test_val_size_must_hold_out_whole_classes_that_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'data.val_size': expected a multiple of 10"):
        load_config([], ["data.val_size=15"])
    write_idx_set(tmp_path / "MNIST" / "raw", {"train": 30, "test": 5})
    module = ImageDataModule(DataConfig(name="mnist", root=str(tmp_path)), dequantise=True)
    with pytest.raises(ConfigError, match=r"'data.val_size'.*use data.val_size<=20"):
        module.setup("fit")


def test_mnist5k_has_a_test_split_of_its_own_apart_from_train_and_validation() -> None:
    module = ImageDataModule(DataConfig(name="mnist5k"), dequantise=True)
    data, (test, labels) = module.load(), module.load_test()
    assert len(test) == 500 and torch.bincount(labels).tolist() == [50] * 10
    seen = {bytes(image) for images in (data.train_images, data.val_images)
            for image in images.numpy()}
    assert not seen & {bytes(image) for image in test.numpy()}
    assert len(seen) == 4500 and torch.equal(module.load_test()[0], test)


def test_damaged_cifar10_batch_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path, 30, 10)
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:500])
    module = ImageDataModule(DataConfig(name="cifar10", root=str(tmp_path), val_size=10), True)
    with pytest.raises(ConfigError, match=r"data_batch_3' cannot be read.*data.download=true"):
        module.setup("fit")
