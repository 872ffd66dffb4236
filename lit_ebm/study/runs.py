"""Training a study's runs: the ML start to the end of its schedule, and each arm from it for a
budget of seconds spent inside training steps (:mod:`lit_ebm.budget`), with the curve of
validation figures against that clock and the passes counted."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lit_ebm.budget import ComputeBudget
from lit_ebm.config import load_config
from lit_ebm.fit import parameter_checksum, train
from lit_ebm.study.spec import RunSpec, Study

UNLIMITED_EPOCHS = 1_000_000  # a run with a budget stops on it, not on an epoch count
CURVE_KEYS = ("val/bpd",)  # besides val/fid_<features>


@dataclass
class TrainedRun:
    """A finished run: its last checkpoint, the wall time of the whole run, and the figures of
    its budget (seconds inside training steps, passes per training image) and curve."""

    checkpoint: Path
    wall_seconds: float
    train_seconds: float
    passes_per_image: float | None  # None: stopped before its measured steps
    checksum: str
    curve: list[dict[str, float]]

    def record(self) -> dict[str, Any]:
        return {"wall_seconds": self.wall_seconds, "train_seconds": self.train_seconds,
                "passes_per_image": self.passes_per_image, "checksum": self.checksum,
                "curve": self.curve}


def read_curve(metrics_csv: Path) -> list[dict[str, float]]:
    """The validation figures of a run (bits/dim, FID) each with the training seconds and
    passes per image spent when it was measured, from its metrics.csv."""
    with open(metrics_csv, newline="") as file:
        rows = list(csv.DictReader(file))
    spent = {"train_seconds": 0.0, "passes_per_image": 0.0}
    curve = []
    for row in rows:
        for key in spent:
            if row.get(f"budget/{key}"):
                spent[key] = float(row[f"budget/{key}"])
        figures = {key: float(value) for key, value in row.items() if value and (
            key in CURVE_KEYS or key.startswith("val/fid_"))}
        if figures:
            curve.append({"step": float(row["step"]), **spent, **figures})
    return curve


def run_overrides(study: Study, name: str, seed: int, output_dir: Path) -> list[str]:
    """What every run of a study sets: data, seed, name, folder, quiet, passes counted."""
    return [f"data.name={study.data}", f"seed={seed}", f"name={name}",
            f"output_dir={output_dir}", "trainer.enable_progress_bar=false",
            "budget.count_passes=true"]


def train_run(study: Study, spec: RunSpec, name: str, seed: int, output_dir: Path,
              init: Path | None = None, seconds: float | None = None) -> TrainedRun:
    """Train ``spec`` as the study's run ``name``: from the generator of ``init`` when given,
    for ``seconds`` inside training steps when given (else its own schedule)."""
    overrides = [*run_overrides(study, name, seed, output_dir), *study.overrides,
                 *spec.overrides]
    if init is not None:
        overrides.append(f"model.generator_init={init}")
    if seconds is not None:
        overrides += [f"budget.train_seconds={seconds}", f"trainer.max_epochs={UNLIMITED_EPOCHS}"]
    cfg = load_config([spec.config], overrides)
    start = time.perf_counter()
    run_dir = train(cfg)
    wall = time.perf_counter() - start
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    budget, checksum = checkpoint_budget(checkpoint)
    return TrainedRun(checkpoint, wall, budget["train_seconds"], budget["passes_per_image"],
                      checksum, read_curve(run_dir / "metrics.csv"))


def checkpoint_budget(checkpoint: Path) -> tuple[dict[str, float], str]:
    """The training seconds and passes per image a run's last checkpoint holds (the state of
    its :class:`~lit_ebm.budget.ComputeBudget`), and its parameter checksum."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    budget = state["callbacks"][ComputeBudget.__qualname__]
    figures = {"train_seconds": budget["spent"], "passes_per_image": budget["passes_per_image"]}
    return figures, parameter_checksum(state["state_dict"])


def export_generator(checkpoint: Path, path: Path) -> str:
    """Write the generator of a run's ``checkpoint`` to ``path`` as a checkpoint of its own
    (what ``model.generator_init`` reads: the generator's weights and the run's
    hyperparameters, no optimiser state); returns its checksum."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    generator = {key: value for key, value in state["state_dict"].items()
                 if key.startswith("generator.")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": generator, "hyper_parameters": state["hyper_parameters"]}, path)
    return parameter_checksum(generator)


def generator_checksum(path: Path) -> str:
    """The checksum of a file :func:`export_generator` wrote."""
    return parameter_checksum(torch.load(path, map_location="cpu", weights_only=True)[
        "state_dict"])
