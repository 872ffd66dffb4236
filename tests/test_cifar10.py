"""CIFAR-10 end to end without the real data: every ``configs/cifar10_*.yaml`` trains a few
steps through the command line on a tiny data set in torchvision's format (both generators, ML
then adversarial from the ML checkpoint), and ``lit_ebm.evaluate --split test`` scores the
checkpoints on Inception features from a local weights file with random weights. The path is
under test, not the figures: FID's 2048-dimensional matrix square root is replaced by a cheap
stand-in, and sample counts are far below what FID needs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchmetrics.image.fid as torchmetrics_fid

from lit_ebm import image_files
from lit_ebm.evaluate import main as evaluate
from lit_ebm.evaluation import reference
from lit_ebm.fit import main as fit
from tests.fake_data import write_cifar10

pytestmark = pytest.mark.slow

SHRINK = {
    "realnvp": ["model.generator.realnvp.num_scales=2", "model.generator.realnvp.num_blocks=1",
                "model.generator.realnvp.hidden_channels=4"],
    "pixelcnn": ["model.generator.pixelcnn.channels=4", "model.generator.pixelcnn.dilations=[1]"],
}
ENERGY = ["model.energy.conv.channels=4", "model.energy.conv.depth=1"]


def _cheap_fid(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor,
               sigma2: torch.Tensor) -> torch.Tensor:
    """FID with the covariances' diagonals only (a stand-in: no 2048x2048 eigenvalues)."""
    root = (sigma1.diagonal() * sigma2.diagonal()).clamp_min(0).sqrt().sum()
    return (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * root


def _train(generator: str, objective: str, common: list[str], runs: Path,
           init: Path | None = None) -> Path:
    config = f"configs/cifar10_{generator}_{objective}.yaml"
    extra = ENERGY + [f"model.generator_init={init}"] if init is not None else []
    assert fit(["--config", config, *common, *SHRINK[generator], *extra]) == 0, config
    return runs / f"cifar10_{generator}_{objective}" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: the PixelCNN sampler's many small operations run up to 8 times slower
    on two threads of a shared CPU (README, "PixelCNN")."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_every_cifar10_config_trains_and_evaluates_on_inception_features(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_inception_weights: Path) -> None:
    write_cifar10(tmp_path / "data", num_train=40, num_test=10)
    opened: list[str] = []
    read_batch = image_files.read_cifar10_batch
    monkeypatch.setattr(image_files, "read_cifar10_batch",
                        lambda path: opened.append(path.name) or read_batch(path))
    runs = tmp_path / "runs"
    common = [f"data.root={tmp_path / 'data'}", "data.download=false", "data.val_size=10",
              "data.batch_size=4", "data.num_workers=0", "trainer.accelerator=cpu",
              "trainer.devices=1", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
              "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
              "eval.every_n_epochs=0", "num_sample_images=1", f"output_dir={runs}"]
    checkpoints = []
    for generator in ("realnvp", "pixelcnn"):
        ml = _train(generator, "mle", common, runs)
        checkpoints += [ml, _train(generator, "adversarial", common, runs, init=ml)]
    assert "test_batch" not in opened, "training never opens the test set"
    assert sorted(set(opened)) == [f"data_batch_{i}" for i in range(1, 6)]

    monkeypatch.setattr(torchmetrics_fid, "_compute_fid", _cheap_fid)
    monkeypatch.setattr(reference, "check_sample_counts", lambda *args: None)
    weights = fake_inception_weights
    out = tmp_path / "eval"
    argv = ["--ckpt", *map(str, checkpoints), "--out", str(out), "--split", "test",
            "--inception-weights", str(weights), "--num-samples", "6", "--candidates", "2",
            "--kid-subset-size", "3", "--mcmc-steps", "0", "--device", "cpu"]
    assert evaluate(argv) == 0
    assert "test_batch" in opened
    results = json.loads((out / "results.json").read_text())
    assert results["features"] == "inception" and results["reference"] == "test split"
    assert results["num_real"] == 10 and results["data"] == "cifar10"
    rows = results["rows"]
    ebm = ["ebm_resampled", "ebm_chain"]  # SIR and IMH; the MALA row is turned off
    assert [row["kind"] for row in rows] == ["real", "generator", "generator", *ebm,
                                             "generator", "generator", *ebm]
    for row in rows[1:]:
        assert row["num_samples"] == 6 and "kid_mean_inception" in row
        if row["kind"] == "generator":
            assert 0 < row["bpd"] < 20
