"""The notebooks run top to bottom on tiny settings; a failing cell fails the test."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lit_ebm.fit import main

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
