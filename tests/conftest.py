"""Shared fixtures: tiny configs that train in seconds on a CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.tiny import TINY_IMAGE_RUN

torch.set_num_threads(2)


@pytest.fixture
def tiny_run(tmp_path: Path) -> list[str]:
    """Overrides for a two-epoch maximum-likelihood run writing under ``tmp_path``."""
    return [*TINY_IMAGE_RUN, f"output_dir={tmp_path / 'runs'}", "name=tiny"]


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One torch thread for a module of tiny models (``pytestmark =
    pytest.mark.usefixtures("single_thread")``): their many small operations only pay for
    synchronisation between threads, a great deal on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
