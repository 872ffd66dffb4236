"""Shared fixtures: tiny configs that train in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

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
]


@pytest.fixture
def tiny_run(tmp_path: Path) -> list[str]:
    """Overrides for a two-epoch maximum-likelihood run writing under ``tmp_path``."""
    return [*TINY_IMAGE_RUN, f"output_dir={tmp_path / 'runs'}", "name=tiny"]
