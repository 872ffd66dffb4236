"""What produced a run: ``provenance.json`` in its run folder, written once by global rank 0
before training starts. A resumed run starts a new run folder, so it gets its own record (with
the checkpoint it resumed from) and the earlier folder's record is never touched.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics

import lit_ebm
from lit_ebm.errors import ConfigError

PROVENANCE_FILE = "provenance.json"
# the folder holding the lit_ebm package: the top of the work tree when run from a checkout
SOURCE_ROOT = Path(lit_ebm.__file__).resolve().parent.parent
GIT_TIMEOUT_S = 10.0


def git_state(root: Path) -> dict[str, Any] | None:
    """``{"commit": HEAD's hash, "dirty": whether tracked files differ from it}`` of the git
    work tree whose top folder is ``root``; None when git is missing or fails, or when
    ``root`` is not the top of a work tree (an installed package inside someone else's
    repository is not theirs to describe). Untracked files do not count as dirty."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=GIT_TIMEOUT_S).stdout.strip()
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(argv: Sequence[str], started: datetime, git: dict[str, Any] | None,
               resumed_from: Path | None) -> dict[str, Any]:
    """The record of a run started at ``started`` by the command line ``argv``: the code's
    git state (None outside a checkout), the versions of lit_ebm, torch, Lightning,
    torchmetrics and Python, the platform, and the checkpoint it resumed from (or None)."""
    return {
        "started_utc": started.astimezone(timezone.utc).isoformat(),
        "command": list(argv),
        "git": git,
        "versions": {"lit_ebm": lit_ebm.__version__, "torch": torch.__version__,
                     "pytorch_lightning": pl.__version__,
                     "torchmetrics": torchmetrics.__version__,
                     "python": platform.python_version()},
        "platform": platform.platform(),
        "resumed_from": None if resumed_from is None else str(resumed_from),
    }


def write_provenance(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``run_dir/provenance.json``, refusing to replace one that exists;
    a failure to write is a one-line :class:`ConfigError`."""
    path = run_dir / PROVENANCE_FILE
    try:
        with path.open("x") as file:
            json.dump(record, file, indent=2)
            file.write("\n")
    except OSError as err:
        raise ConfigError(f"cannot write '{path}' ({err.strerror or err}): set output_dir to a "
                          "writable folder") from None
    return path
