"""The notebooks run top to bottom on tiny settings; a failing cell fails the test."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from lit_ebm.fit import main
from tests.tiny import TINY_IMAGE_RUN

pytestmark = pytest.mark.slow


NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _run(name: str) -> str:
    """Execute ``notebooks/<name>`` in a fresh kernel; return the text of every output."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") + str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def test_inspect_run_reports_the_logged_bits_per_dim(
    tiny_run: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(tiny_run) == 0
    run_dir = tmp_path / "runs" / "tiny" / "version_0"
    monkeypatch.setenv("LIT_EBM_NOTEBOOK_RUN", str(run_dir))
    printed = re.search(r"validation bits/dim: ([\d.]+) over 500 images", _run("inspect_run.ipynb"))
    assert printed is not None
    with open(run_dir / "metrics.csv", newline="") as file:
        logged = [float(row["val/bpd"]) for row in csv.DictReader(file) if row.get("val/bpd")]
    # the run validated on 2 batches of 16; the notebook on all 500 images
    assert abs(float(printed.group(1)) - logged[-1]) < 0.5


def test_toy2d_equivalence_shows_the_identities_and_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIT_EBM_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("LIT_EBM_NOTEBOOK_OUTPUT", str(tmp_path))
    text = _run("toy2d_equivalence.ipynb")
    differences = [float(v) for v in re.findall(r"^\d\. .* (\S+e[-+]\d+)$", text, re.MULTILINE)]
    assert len(differences) == 4 and max(differences) < 1e-8
    assert re.search(r"maximum likelihood: precision [\d.]+, modes covered \d of 8", text)
    assert re.search(r"adversarial: precision [\d.]+, modes covered \d of 8", text)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notebook_flow_adv", "notebook_flow_mle", "notebook_mixture_adv", "notebook_mixture_mle"]


@pytest.mark.parametrize(("flags", "code", "message"), [
    (["--energy-epochs", "-1"], 2, "--energy-epochs -1: give 0 (no energy stage) or more"),
    (["--extra-epochs", "0"], 2, "--extra-epochs 0: give at least 1"),
    (["--adversarial-config", "no_such_recipe"], 1, "no shipped config has that name"),
])
def test_the_comparison_refuses_bad_settings_before_training(
        tmp_path: Path, flags: list[str], code: int, message: str) -> None:
    """Bad settings end the comparison script with one line before any run folder exists."""
    script = NOTEBOOKS.parent / "benchmarks" / "compare_mle_adversarial.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--generator", "realnvp", *flags,
         "--output-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=NOTEBOOKS.parent, timeout=120)
    assert proc.returncode == code
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_adversarial_vs_mle_shows_the_comparison(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny comparison through the benchmark script, then the notebook on its results."""
    script = NOTEBOOKS.parent / "benchmarks" / "compare_mle_adversarial.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--generator", "realnvp", "--ml-max-epochs", "1",
         "--extra-epochs", "1", "--seeds", "0", "1", "--num-samples", "150",
         "--kid-subset-size", "100", "--candidates", "2", "--mcmc-steps", "4",
         "--mcmc-burn-in", "4", "--energy-epochs", "1", "--output-dir", str(tmp_path / "runs"),
         "--results-dir", str(tmp_path), "--adversarial-overrides",
         "model.energy.conv.channels=8", "model.energy.conv.depth=2", "--",
         *[arg for arg in TINY_IMAGE_RUN if not arg.startswith("trainer.max_epochs")]],
        capture_output=True, text=True, cwd=NOTEBOOKS.parent, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "compare_realnvp_mnist5k.json").read_text())
    assert list(results["rows"]) == ["real", "ml", "ml@T0.8", "ml@T0.9", "ml_continued",
                                     "ml_continued@T0.8", "ml_continued@T0.9", "adversarial",
                                     "ebm_resampled", "ebm_imh", "ebm_mala", "adversarial@T0.8",
                                     "adversarial@T0.9"]
    assert results["ml_epochs"] == 1 and results["ml_start"].startswith("plateau")
    checkpoints = {arm: torch.load(NOTEBOOKS.parent / path, map_location="cpu",
                                   weights_only=True) for arm, path in results["trained"].items()}
    # ML continued trains as long as the adversarial arm and the energy stage together, and the
    # EBM evaluated is the energy stage's, over the adversarial arm's generator unchanged
    continued = checkpoints["ml_continued"]["loops"]["fit_loop"]["epoch_progress"]
    assert continued["total"]["completed"] == 1 + 1 + 1
    assert "energy" in results["rows"]["adversarial"]["label"]
    adversarial, energy = (checkpoints[arm]["state_dict"] for arm in ("adversarial", "energy"))
    generator = [key for key in adversarial if key.startswith("generator.")]
    assert generator and all(torch.equal(adversarial[key], energy[key]) for key in generator)
    assert not torch.equal(adversarial["log_z"], energy["log_z"])
    assert results["rows"]["ebm_mala"]["acceptance_rate"]["mean"] >= 0
    assert results["rows"]["adversarial"]["fid"]["std"] >= 0
    assert (tmp_path / "compare_realnvp_mnist5k.png").is_file()
    monkeypatch.setenv("LIT_EBM_NOTEBOOK_COMPARE", str(tmp_path / "compare_realnvp_mnist5k.json"))
    text = _run("adversarial_vs_mle.ipynb")
    assert ("realnvp on mnist5k: ML 1 epochs, then 1 more of each arm, then 1 of the energy alone"
            " (ML continued: 1 more); seeds [0, 1]") in text
    assert re.search(r"generator_fid_below_ml_continued_beyond_spread: (True|False)", text)
    assert re.search(r"ebm_fid<=0.8_ml_continued: (True|False)", text)
    assert re.search(r"adversarial: bpd [\d.]+ ± [\d.]+, ebm_bpd_learned_log_z", text)
    assert text.count("<PIL.Image.Image image mode=RGB size=280x280>") == 4
