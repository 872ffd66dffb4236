"""Shared fixtures: tiny configs that train in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny import TINY_IMAGE_RUN

torch.set_num_threads(2)


@pytest.fixture
def tiny_run(tmp_path: Path) -> list[str]:
    """Overrides for a two-epoch maximum-likelihood run writing under ``tmp_path``."""
    return [*TINY_IMAGE_RUN, f"output_dir={tmp_path / 'runs'}", "name=tiny"]
