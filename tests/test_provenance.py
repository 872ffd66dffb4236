"""provenance.json: the record of what produced a run, the git state of a checkout, and a
writer that never replaces a record."""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torchmetrics

import lit_ebm
from lit_ebm.errors import ConfigError
from lit_ebm.provenance import git_state, provenance, write_provenance

CET = timezone(timedelta(hours=1))


def test_record_holds_the_command_versions_and_utc_start() -> None:
    started = datetime(2026, 3, 1, 12, 30, 15, 250000, tzinfo=CET)
    git = {"commit": "0" * 40, "dirty": True}
    record = provenance(["lit-ebm-fit", "--config", "quickstart", "trainer.max_epochs=2"],
                        started, git, Path("runs/q/version_0/checkpoints/last.ckpt"))
    assert record == {
        "started_utc": "2026-03-01T11:30:15.250000+00:00",
        "command": ["lit-ebm-fit", "--config", "quickstart", "trainer.max_epochs=2"],
        "git": {"commit": "0" * 40, "dirty": True},
        "versions": {"lit_ebm": lit_ebm.__version__, "torch": torch.__version__,
                     "pytorch_lightning": pl.__version__,
                     "torchmetrics": torchmetrics.__version__,
                     "python": platform.python_version()},
        "platform": platform.platform(),
        "resumed_from": "runs/q/version_0/checkpoints/last.ckpt",
    }
    assert provenance([], started, None, None)["git"] is None
    assert provenance([], started, None, None)["resumed_from"] is None


def test_writer_writes_json_once_and_never_replaces_it(tmp_path: Path) -> None:
    record = provenance(["x"], datetime.now(timezone.utc), None, None)
    path = write_provenance(tmp_path, record)
    assert path == tmp_path / "provenance.json" and json.loads(path.read_text()) == record
    with pytest.raises(ConfigError, match="provenance.json"):
        write_provenance(tmp_path, {**record, "command": ["y"]})
    assert json.loads(path.read_text())["command"] == ["x"]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.slow
def test_git_state_of_a_checkout_its_subfolders_and_no_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "pkg" / "code.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state(repo) == {"commit": head, "dirty": False}
    (repo / "notes.txt").write_text("untracked\n")
    assert git_state(repo) == {"commit": head, "dirty": False}, "untracked files are not dirt"
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    assert git_state(repo) == {"commit": head, "dirty": True}
    assert git_state(repo / "pkg") is None, "only the top of a work tree describes itself"
    (tmp_path / "plain").mkdir()
    assert git_state(tmp_path / "plain") is None


@pytest.mark.slow
def test_git_state_without_git_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "first")
    assert git_state(repo) is not None
    monkeypatch.setenv("PATH", str(tmp_path / "no-binaries-here"))
    assert git_state(repo) is None
