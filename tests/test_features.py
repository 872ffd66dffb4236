"""Feature extractors for sample quality: the shipped classifier and its accuracy, frozen
features, the training routine, and Inception from a local file or a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as fidelity

from lit_ebm.config import DataConfig
from lit_ebm.data import ImageDataModule
from lit_ebm.errors import ConfigError
from lit_ebm.features import (
    INCEPTION_WEIGHTS_FILE,
    FeatureClassifier,
    accuracy,
    build_feature_extractor,
    features_name,
    load_classifier,
    train_classifier,
    weights_path,
)


def test_shipped_mnist_classifier_reaches_98_percent_on_held_out_digits() -> None:
    data = ImageDataModule(DataConfig(name="mnist5k"), dequantise=False).load()
    assert accuracy(load_classifier("mnist_cnn"), data.val_images, data.val_labels) >= 0.98
    report = json.loads(weights_path("mnist_cnn").with_suffix(".json").read_text())
    assert report["held_out_accuracy"] >= 0.98 and report["data"] == "mnist5k"


@pytest.mark.parametrize("data_name", ["mnist5k", "mnist", "fashion_mnist"])
def test_every_1x28x28_data_set_has_named_shipped_features(data_name: str) -> None:
    extractor = build_feature_extractor(data_name)
    assert extractor.name == features_name(data_name) and extractor.name.endswith("_cnn")
    images = torch.rand(6, 1, 28, 28)
    features = extractor(images)
    assert features.shape == (6, extractor.num_features) == (6, 128)
    extractor.train()  # frozen: batch statistics and weights stay as shipped
    assert torch.equal(extractor(images), features)
    assert not any(p.requires_grad for p in extractor.parameters())


def test_no_features_for_points() -> None:
    with pytest.raises(ConfigError, match="no sample-quality features for data.name='toy2d'"):
        features_name("toy2d")


def test_training_routine_learns_a_separable_problem() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 60, (512, 1, 28, 28), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 2, (512,), generator=generator)
    images[labels == 1, :, 8:20, 8:20] = 255  # class 1 has a bright square
    classifier = train_classifier(images[:384], labels[:384], epochs=6, batch_size=32,
                                  augment=False)
    assert isinstance(classifier, FeatureClassifier) and not classifier.training
    assert accuracy(classifier, images[384:], labels[384:]) >= 0.95


def test_inception_features_from_a_local_weights_file(fake_inception_weights: Path) -> None:
    weights = fake_inception_weights
    extractor = build_feature_extractor("cifar10", str(weights))
    assert extractor.name == "inception" and extractor.num_features == 2048
    features = extractor(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


def test_missing_inception_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        build_feature_extractor("cifar10", str(tmp_path / "nowhere.pth"))
    assert "eval.inception_weights" in str(err.value)
    assert INCEPTION_WEIGHTS_FILE in str(err.value)


def test_failed_inception_download_names_the_file_and_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fidelity, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError) as err:
        build_feature_extractor("cifar10", None)
    message = str(err.value)
    assert "URLError" in message and INCEPTION_WEIGHTS_FILE in message
    assert "eval.inception_weights=" in message and "\n" not in message
