"""Image features for sample-quality metrics (docs/evaluation.md).

- 1x28x28 data (mnist5k, mnist, fashion_mnist): a small classifier trained by this module on
  the training split only, shipped in ``lit_ebm/weights/``; its penultimate layer (128 units)
  gives the features. ``python -m lit_ebm.features --data mnist5k`` (or ``fashion_mnist``)
  retrains it, reports its held-out accuracy and writes the weights.
- cifar10: Inception-v3 (torchmetrics through torch-fidelity), 2048 pool features, from a local
  weights file (``eval.inception_weights``) or torch-fidelity's download.

Every extractor maps float images in [0, 1] (levels k / 255) to features ``(N, d)`` and is
named, so that metrics say which features they use (``fid_mnist_cnn``, never a bare ``fid``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_ebm.errors import ConfigError, describe_error

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CLASSIFIER_FEATURES = {"mnist5k": "mnist_cnn", "mnist": "mnist_cnn",
                       "fashion_mnist": "fashion_mnist_cnn"}
CLASSIFIER_TRAINING_DATA = {"mnist_cnn": "mnist5k", "fashion_mnist_cnn": "fashion_mnist"}
INCEPTION_FEATURES = "inception"
# The file torch-fidelity downloads for torchmetrics' FID/KID (inception-v3-compat).
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         + INCEPTION_WEIGHTS_FILE)


def features_name(data_name: str) -> str:
    """The features used for ``data.name`` (part of every metric's name)."""
    if data_name in CLASSIFIER_FEATURES:
        return CLASSIFIER_FEATURES[data_name]
    if data_name == "cifar10":
        return INCEPTION_FEATURES
    raise ConfigError(f"no sample-quality features for data.name={data_name!r}: they exist for "
                      f"{', '.join([*CLASSIFIER_FEATURES, 'cifar10'])}")


class FeatureClassifier(nn.Module):
    """A small CNN for 1x28x28 images; ``features`` gives its penultimate layer.

    Three stages of 3x3 convolutions with batch normalisation (32, 64, 128 channels; the first
    two halve the image), global average pooling, a 128-unit ReLU layer (the features) and a
    linear layer to the class logits.
    """

    num_features = 128

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                    nn.ReLU()]

        self.body = nn.Sequential(
            *block(1, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
            *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(128, self.num_features), nn.ReLU(),
        )
        self.classify = nn.Linear(self.num_features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features ``(N, 128)`` of images ``(N, 1, 28, 28)`` in [0, 1]."""
        return self.body((x - 0.5) / 0.5)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, num_classes)``."""
        return self.classify(self.features(x))


class FeatureExtractor(nn.Module):
    """Maps images ``(N, C, H, W)`` in [0, 1] to features ``(N, num_features)``; ``name``
    labels the metrics computed on them (``val/fid_<name>``)."""

    name: str
    num_features: int


class ClassifierFeatures(FeatureExtractor):
    """Frozen :class:`FeatureClassifier` features, the extractor for 1x28x28 data."""

    def __init__(self, classifier: FeatureClassifier, name: str) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.name = name
        self.num_features = classifier.num_features

    def train(self, mode: bool = True) -> ClassifierFeatures:
        return super().train(False)  # batch-norm statistics stay as trained

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images.float())


class InceptionFeatures(FeatureExtractor):
    """Inception-v3 pool features (2048) of torchmetrics' FID, from uint8 RGB images."""

    num_features = 2048
    name = INCEPTION_FEATURES

    def __init__(self, weights_path: str | None) -> None:
        super().__init__()
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as err:  # pragma: no cover - torchmetrics always has the module
            raise ConfigError(f"Inception features need torchmetrics' image extra: {err}") from None
        self.inception = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                            feature_extractor_weights_path=weights_path)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        levels = torch.round(images.clamp(0.0, 1.0) * 255).to(torch.uint8)
        if levels.shape[1] == 1:
            levels = levels.expand(-1, 3, -1, -1)
        return self.inception(levels).reshape(len(images), -1)


def weights_path(name: str) -> Path:
    """The shipped weights of the classifier ``name`` (e.g. ``mnist_cnn``)."""
    return WEIGHTS_DIR / f"{name}.pt"


def load_classifier(name: str) -> FeatureClassifier:
    """The shipped classifier ``name``, read with ``weights_only=True``."""
    path = weights_path(name)
    if not path.is_file():
        data = CLASSIFIER_TRAINING_DATA.get(name, "<data>")
        raise ConfigError(f"the feature classifier weights '{path}' are missing: restore them "
                          f"with `git checkout {path.relative_to(WEIGHTS_DIR.parent.parent)}` "
                          f"or retrain them with `python -m lit_ebm.features --data {data}`")
    classifier = FeatureClassifier()
    classifier.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return classifier.eval()


def build_feature_extractor(data_name: str, inception_weights: str | None = None
                            ) -> FeatureExtractor:
    """The feature extractor for ``data.name``; it has ``name`` and ``num_features``.

    For cifar10, ``inception_weights`` is a local copy of torch-fidelity's
    ``weights-inception-2015-12-05-6726825d.pth``; without it the file is taken from torch's
    hub cache or downloaded, and a failed download is a :class:`ConfigError` naming the file
    and the config key. The global random state is left as it was.
    """
    name = features_name(data_name)
    with torch.random.fork_rng(devices=[]):  # building initialises weights: keep training's RNG
        if name != INCEPTION_FEATURES:
            return ClassifierFeatures(load_classifier(name), name)
        return _inception(inception_weights)


def _inception(inception_weights: str | None) -> InceptionFeatures:
    if inception_weights is not None and not Path(inception_weights).is_file():
        raise ConfigError(f"eval.inception_weights='{inception_weights}' does not exist: point it "
                          f"at a copy of {INCEPTION_WEIGHTS_FILE} ({INCEPTION_WEIGHTS_URL})")
    try:
        return InceptionFeatures(inception_weights)
    except ModuleNotFoundError as err:
        raise ConfigError(f"Inception features for cifar10 need torch-fidelity ({err}): "
                          "pip install torch-fidelity") from None
    except Exception as err:  # no network, a damaged file: one line, never a traceback
        raise ConfigError(
            f"the Inception weights for cifar10's sample-quality features could not be loaded "
            f"({describe_error(err)}): download {INCEPTION_WEIGHTS_URL} on a machine "
            f"with network access and set eval.inception_weights=/path/to/"
            f"{INCEPTION_WEIGHTS_FILE} (lit_ebm.evaluate: --inception-weights)") from None


def accuracy(classifier: FeatureClassifier, images: Tensor, labels: Tensor,
             batch_size: int = 500) -> float:
    """Fraction of ``images`` (uint8) whose predicted class is the label."""
    classifier.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].float() / 255
            correct += int((classifier(batch).argmax(1) == labels[start:start + batch_size]).sum())
    return correct / len(images)


def _augment(batch: Tensor, generator: torch.Generator) -> Tensor:
    """Random shifts of up to 2 pixels and small rotations and scalings, per image."""
    n = len(batch)
    angle = (torch.rand(n, generator=generator) - 0.5) * 2 * 0.17  # about +-10 degrees
    scale = 1.0 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 2 * (2 / 14)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, align_corners=False, padding_mode="zeros")


def train_classifier(train_images: Tensor, train_labels: Tensor, epochs: int,
                     batch_size: int = 128, lr: float = 2e-3, augment: bool = True,
                     seed: int = 0) -> FeatureClassifier:
    """Train a :class:`FeatureClassifier` on uint8 images ``(N, 1, 28, 28)`` with Adam and a
    cosine learning-rate schedule (and random affine augmentation if ``augment``)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    classifier = FeatureClassifier(num_classes=int(train_labels.max()) + 1)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    steps = epochs * (len(train_images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    classifier.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_images), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            batch = train_images[index].float() / 255
            if augment:
                batch = _augment(batch, generator)
            loss = F.cross_entropy(classifier(batch), train_labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return classifier.eval()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train the shipped classifier for ``--data`` on its training split and save it."""
    from lit_ebm.config import DataConfig
    from lit_ebm.data import ImageDataModule

    parser = argparse.ArgumentParser(
        prog="python -m lit_ebm.features",
        description="Train the feature classifier shipped for 1x28x28 data (training split "
                    "only), report its held-out accuracy and write its weights.")
    parser.add_argument("--data", choices=sorted(CLASSIFIER_TRAINING_DATA.values()),
                        required=True)
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: 30 for mnist5k, 10 for fashion_mnist")
    parser.add_argument("--data-root", default=None, help="data.root (default as in training)")
    parser.add_argument("--out", default=None,
                        help="weights file (default: the shipped one); its accuracy and settings "
                             "go beside it as .json")
    args = parser.parse_args(argv)
    epochs = args.epochs or {"mnist5k": 30, "fashion_mnist": 10}[args.data]
    name = CLASSIFIER_FEATURES[args.data]
    data = ImageDataModule(DataConfig(name=args.data, root=args.data_root), False).load()
    start = time.perf_counter()
    classifier = train_classifier(data.train_images, data.train_labels, epochs,
                                  augment=args.data == "mnist5k")
    seconds = time.perf_counter() - start
    out = Path(args.out) if args.out else weights_path(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(classifier.state_dict(), out)
    results: dict[str, Any] = {
        "features": name, "data": args.data, "epochs": epochs,
        "train_examples": len(data.train_images), "held_out_examples": len(data.val_images),
        "held_out_accuracy": accuracy(classifier, data.val_images, data.val_labels),
        "train_accuracy": accuracy(classifier, data.train_images, data.train_labels),
        "train_seconds": seconds, "weights": out.name, "weights_bytes": out.stat().st_size,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                   f"torch {torch.__version__}",
    }
    text = json.dumps(results, indent=2) + "\n"
    out.with_suffix(".json").write_text(text)
    print(text, end="")
    return results


if __name__ == "__main__":
    main()
