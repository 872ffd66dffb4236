"""``python -m lit_ebm.sample`` on tiny checkpoints: every method writes samples.npz and
samples.png, a seed fixes them, and bad input is one line with exit code 2."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from lit_ebm.build import build_module
from lit_ebm.config import load_config
from lit_ebm.generators import RealNVP, to_levels
from lit_ebm.modules import load_module
from lit_ebm.sample import main as sample
from tests.tiny import TINY_PIXELCNN_RUN, TINY_RESIDUAL_ENERGY, one_line_error

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def pixelcnn_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained adversarial PixelCNN checkpoint as Lightning writes one (weights,
    hyperparameters, the data section)."""
    module = build_module(load_config([], [*TINY_PIXELCNN_RUN, *TINY_RESIDUAL_ENERGY]), (1, 28, 28))
    path = tmp_path_factory.mktemp("pixelcnn") / "pixelcnn.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "datamodule_hyper_parameters": {"data": {"name": "mnist5k"}},
                "pytorch-lightning_version": pl.__version__}, path)
    return path


METHODS = {"generator": [], "sir": ["--candidates", "3"], "mcmc": ["--steps", "2", "--burn-in",
                                                                   "3"],
           "imh": ["--steps", "2"], "imh-base-mixture": ["--steps", "2", "--base-mixture"]}


@pytest.mark.slow
@pytest.mark.parametrize("case", METHODS)
def test_every_method_writes_the_images_and_what_it_measured(
        case: str, checkpoints: dict[str, Path], tmp_path: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    method = case.split("-")[0]
    out = tmp_path / case
    assert sample(["--ckpt", str(checkpoints["adversarial"]), "--method", method, "--out",
                   str(out), "--num-samples", "6", "--batch-size", "4", "--seed", "3",
                   *METHODS[case]]) == 0
    stdout, _ = capfd.readouterr()
    assert f"6 samples by {method}" in stdout and f"written to {out}/samples.npz" in stdout
    with np.load(out / "samples.npz") as saved:
        images = saved["images"]
        assert images.dtype == np.uint8 and images.shape == (6, 28, 28, 1)
        assert str(saved["method"]) == method and int(saved["seed"]) == 3
        assert int(saved["num_samples"]) == 6 and float(saved["seconds"]) > 0
        if method in ("mcmc", "imh"):
            assert int(saved["steps"]) == 2 and 0 <= float(saved["acceptance_rate"]) <= 1
            assert f"acceptance {float(saved['acceptance_rate']):.3f}" in stdout
        else:
            assert "acceptance_rate" not in saved
        if method == "mcmc":
            assert int(saved["burn_in"]) == 3 and float(saved["adapted_step_size"]) > 0
        if method == "sir":
            assert int(saved["candidates"]) == 3
        if method == "imh":
            assert bool(saved["base_mixture"]) == (case == "imh-base-mixture")
    assert len(np.unique(images)) > 2, "images, not a constant"
    grid = Image.open(out / "samples.png")
    assert grid.size == (6 * 30 + 2, 32), "one row of six 28 x 28 images, 2 pixels apart"


@pytest.mark.slow
def test_the_images_are_the_samples_and_a_seed_fixes_them(
        checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = str(checkpoints["adversarial"])
    common = ["--ckpt", ckpt, "--num-samples", "5", "--batch-size", "5"]
    assert sample([*common, "--method", "generator", "--out", str(tmp_path / "g"),
                   "--seed", "7"]) == 0
    module = load_module(ckpt).eval()
    torch.manual_seed(7)
    with torch.no_grad():
        expected = to_levels(module.generator.sample(5)[0], discrete=False)
    with np.load(tmp_path / "g" / "samples.npz") as saved:
        assert np.array_equal(saved["images"], expected.permute(0, 2, 3, 1).numpy())
    runs = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert sample([*common, "--method", "mcmc", "--steps", "2", "--burn-in", "1",
                       "--out", str(tmp_path / name), "--seed", seed]) == 0
        with np.load(tmp_path / name / "samples.npz") as saved:
            runs[name] = (saved["images"], float(saved["acceptance_rate"]))
    assert np.array_equal(runs["a"][0], runs["b"][0]) and runs["a"][1] == runs["b"][1]
    assert not np.array_equal(runs["a"][0], runs["c"][0])


@pytest.mark.slow
def test_a_maximum_likelihood_checkpoint_samples_its_generator_only(
        checkpoints: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    ml = str(checkpoints["ml"])
    assert sample(["--ckpt", ml, "--method", "generator", "--num-samples", "3", "--out",
                   str(tmp_path / "ml")]) == 0
    assert (tmp_path / "ml" / "samples.npz").is_file()
    capfd.readouterr()
    assert sample(["--ckpt", ml, "--method", "sir", "--out", str(tmp_path / "sir")]) == 2
    assert "no energy (a maximum-likelihood model): use method 'generator'" in (
        one_line_error("\n".join(capfd.readouterr())))


BAD = {
    "missing-file": (["--ckpt", "/nonexistent/last.ckpt", "--method", "sir"], "does not exist"),
    "no-samples": (["--ckpt", "{adversarial}", "--method", "sir", "--num-samples", "0"],
                   "invalid value 0 for '--num-samples': num_samples must be a positive integer"),
    "unknown-method": (["--ckpt", "{adversarial}", "--method", "hmc"],
                       "invalid value 'hmc' for '--method': unknown method 'hmc'; valid methods "
                       "are generator, sir, mcmc, imh"),
    "option-of-another-method": (["--ckpt", "{adversarial}", "--method", "sir", "--steps", "3"],
                                 "'--steps': steps is not an option of method 'sir'"),
    "negative-steps": (["--ckpt", "{adversarial}", "--method", "mcmc", "--steps", "-1"],
                       "invalid value -1 for '--steps'"),
    "bad-device": (["--ckpt", "{adversarial}", "--method", "sir", "--device", "nonsense"],
                   "'--device'"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2(case: str, checkpoints: dict[str, Path], tmp_path: Path,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    args, expected = BAD[case]
    out = tmp_path / "out"
    assert sample([*(a.format(**checkpoints) for a in args), "--out", str(out)]) == 2
    assert expected in one_line_error("\n".join(capfd.readouterr()))
    assert not (out / "samples.npz").exists()


def test_mcmc_on_a_pixelcnn_names_the_methods_that_work(
        pixelcnn_checkpoint: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert sample(["--ckpt", str(pixelcnn_checkpoint), "--method", "mcmc", "--out",
                   str(tmp_path / "out")]) == 2
    assert ("invalid value 'mcmc' for '--method': method 'mcmc' runs MALA in the latent space "
            "of a continuous flow, and PixelCNN is not one: use method 'imh' or 'sir'") in (
        one_line_error("\n".join(capfd.readouterr())))


@pytest.mark.slow
def test_imh_samples_a_pixelcnn(pixelcnn_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "imh"
    assert sample(["--ckpt", str(pixelcnn_checkpoint), "--method", "imh", "--steps", "1",
                   "--num-samples", "2", "--out", str(out)]) == 0
    with np.load(out / "samples.npz") as saved:
        assert saved["images"].shape == (2, 28, 28, 1) and str(saved["method"]) == "imh"


@pytest.mark.slow
def test_non_finite_samples_are_one_line_naming_the_checkpoint(
        checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    def nan_sample(self: RealNVP, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((num_samples, 1, 28, 28), math.nan), torch.zeros(num_samples)

    monkeypatch.setattr(RealNVP, "sample", nan_sample)
    assert sample(["--ckpt", str(checkpoints["ml"]), "--method", "generator", "--out",
                   str(tmp_path / "nan")]) == 2
    line = one_line_error("\n".join(capfd.readouterr()))
    assert "last.ckpt'" in line and "NaN or infinite" in line


@pytest.mark.slow
def test_the_module_runs_as_a_command(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "lit_ebm.sample", "--ckpt",
                           str(tmp_path / "missing.ckpt"), "--method", "mcmc", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "missing.ckpt' does not exist" in done.stderr
