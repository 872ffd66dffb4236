"""Shared fixtures: tiny configs that train in seconds on a CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as fidelity

from lit_ebm.features import INCEPTION_WEIGHTS_FILE
from lit_ebm.fit import main as fit
from tests.tiny import TINY_IMAGE_RUN, TINY_RESIDUAL_ENERGY

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


@pytest.fixture
def fake_inception_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file of torch-fidelity's Inception state dict with random weights (no download)."""
    with monkeypatch.context() as patch:
        patch.setattr(fidelity, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(fidelity.FeatureExtractorInceptionV3, "load_state_dict",
                      lambda self, state_dict: None)
        model = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / INCEPTION_WEIGHTS_FILE
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Last checkpoints of a tiny ML RealNVP run and of a tiny residual adversarial run started
    from it, trained once for every test that reads them (none may write beside them)."""
    runs = tmp_path_factory.mktemp("runs")
    common = [*TINY_IMAGE_RUN, f"output_dir={runs}"]
    assert fit([*common, "name=ml"]) == 0
    ml = runs / "ml" / "version_0" / "checkpoints" / "last.ckpt"
    assert fit([*common, *TINY_RESIDUAL_ENERGY, "name=adv", f"model.generator_init={ml}"]) == 0
    return {"ml": ml, "adversarial": runs / "adv" / "version_0" / "checkpoints" / "last.ckpt"}
