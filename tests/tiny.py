"""Overrides for runs that train in seconds on a CPU, a quiet Trainer for modules built in a
test, and the check of a failed start's output."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

# lit_ebm.fit warns, each on a line of its own, about a section it does not use: the tiny runs set
# the RealNVP's, which a PixelCNN or toy run ignores
UNUSED_REALNVP_WARNING = "warning: override 'model.generator.realnvp"

TINY_IMAGE_RUN = [
    "data.name=mnist5k",
    "data.batch_size=16",
    "model.generator.realnvp.num_scales=1",
    "model.generator.realnvp.num_blocks=1",
    "model.generator.realnvp.hidden_channels=8",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "num_sample_images=4",
    "eval.every_n_epochs=0",  # sample quality has its own tests
]

TINY_PIXELCNN_RUN = [
    *TINY_IMAGE_RUN,
    "model.generator.name=pixelcnn",
    "model.generator.pixelcnn.channels=8",
    "model.generator.pixelcnn.dilations=[1,2]",
    "model.generator_optim.lr=0.01",
]

TINY_ENERGY = ["model.objective=adversarial", "model.energy.conv.channels=8",
               "model.energy.conv.depth=2"]
TINY_RESIDUAL_ENERGY = [*TINY_ENERGY, "model.energy.residual=true"]


def one_line_error(output: str) -> str:
    """The single ``error:`` line of a failed start's output, beside the unused-section warnings
    of the tiny runs' own overrides; fails when anything else was printed."""
    lines = [line for line in output.splitlines()
             if line.strip() and not line.startswith(UNUSED_REALNVP_WARNING)]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def quiet_trainer(**settings: Any) -> pl.Trainer:
    """A Trainer on one CPU that logs, checkpoints, validates and prints nothing unless
    ``settings`` say otherwise."""
    quiet = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
             "enable_progress_bar": False, "enable_model_summary": False,
             "limit_val_batches": 0}
    return pl.Trainer(**{**quiet, **settings})


def logged_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def logged(run_dir: Path, key: str) -> list[float]:
    """Every value of ``key`` in a run's metrics.csv, in order."""
    return [float(row[key]) for row in logged_rows(run_dir) if row.get(key)]
