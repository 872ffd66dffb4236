"""The notebooks run top to bottom on tiny settings; a failing cell fails the test (the
study notebook runs in tests/test_study.py, on the tiny study trained there)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lit_ebm.fit import main
from tests.notebooks import run_notebook
from tests.tiny import logged

pytestmark = pytest.mark.slow


def test_inspect_run_reports_the_logged_bits_per_dim(
    tiny_run: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(tiny_run) == 0
    run_dir = tmp_path / "runs" / "tiny" / "version_0"
    monkeypatch.setenv("LIT_EBM_NOTEBOOK_RUN", str(run_dir))
    printed = re.search(r"validation bits/dim: ([\d.]+) over 500 images",
                        run_notebook("inspect_run.ipynb"))
    assert printed is not None
    # the run validated on 2 batches of 16; the notebook on all 500 images
    assert abs(float(printed.group(1)) - logged(run_dir, "val/bpd")[-1]) < 0.5


def test_toy2d_equivalence_shows_the_identities_and_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIT_EBM_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("LIT_EBM_NOTEBOOK_OUTPUT", str(tmp_path))
    text = run_notebook("toy2d_equivalence.ipynb")
    differences = [float(v) for v in re.findall(r"^\d\. .* (\S+e[-+]\d+)$", text, re.MULTILINE)]
    assert len(differences) == 4 and max(differences) < 1e-8
    assert re.search(r"maximum likelihood: precision [\d.]+, modes covered \d of 8", text)
    assert re.search(r"adversarial: precision [\d.]+, modes covered \d of 8", text)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notebook_flow_adv", "notebook_flow_mle", "notebook_mixture_adv", "notebook_mixture_mle"]
