"""torch.compile is opt in and never stops a run: without a C++ compiler the networks stay
eager and one line says so."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from torch import nn

from lit_ebm.compilation import compile_networks, missing_compiler
from lit_ebm.fit import main as fit

from .tiny import TINY_IMAGE_RUN


@pytest.fixture
def no_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH on which no C++ compiler can be found."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)


@pytest.mark.usefixtures("no_compiler")
def test_without_a_compiler_the_networks_stay_eager_with_one_line() -> None:
    network, stream = nn.Linear(2, 2), io.StringIO()
    assert missing_compiler("cpu") is not None and missing_compiler("cuda") is None
    assert compile_networks([network], "cpu", stream=stream) is False
    assert network._compiled_call_impl is None
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("compile: no C++ compiler")
    assert lines[0].endswith("the networks run eager")


@pytest.mark.slow
@pytest.mark.usefixtures("no_compiler")
def test_a_run_asked_to_compile_without_a_compiler_trains_eager(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = [*TINY_IMAGE_RUN, "model.compile=true", "trainer.max_epochs=1",
                 f"output_dir={tmp_path}", "name=eager", "logger=[csv]"]
    assert fit(["--config", "configs/mnist5k_realnvp_mle.yaml", *overrides]) == 0
    err = capsys.readouterr().err
    assert err.count("compile: no C++ compiler") == 1
    assert (tmp_path / "eager" / "version_0" / "checkpoints" / "last.ckpt").is_file()
