"""Run folders: ``<output_dir>/<name>/version_<n>/``, created once per run and never reused,
and the checkpoint a run resumes from."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from lit_ebm.config import Config, to_yaml
from lit_ebm.errors import ConfigError

RUN_DIR_ENV = "LIT_EBM_RUN_DIR"  # hands rank 0's run folder to DDP worker processes


def version_dirs(output_dir: str, name: str) -> list[tuple[int, Path]]:
    """Existing ``version_<n>`` folders of a run name, sorted by n."""
    root = Path(output_dir) / name
    found = []
    for path in root.glob("version_*"):
        match = re.fullmatch(r"version_(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def next_run_dir(cfg: Config) -> Path:
    """The next ``<output_dir>/<name>/version_<n>`` (not yet created); DDP workers get rank 0's."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        return Path(inherited)
    existing = version_dirs(cfg.output_dir, cfg.name)
    number = existing[-1][0] + 1 if existing else 0
    return Path(cfg.output_dir) / cfg.name / f"version_{number}"


def create_run_dir(run_dir: Path, cfg: Config) -> Path | None:
    """Create ``run_dir`` with its ``config.yaml``; returns the outermost folder created, for
    :func:`remove_created` if the start fails later. Raises :class:`ConfigError`, leaving
    nothing behind, when ``output_dir`` cannot be created or written."""
    outermost = next((p for p in (*reversed(run_dir.parents), run_dir) if not p.exists()), None)
    try:
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    except OSError as err:
        remove_created(outermost)
        raise ConfigError(f"output_dir={cfg.output_dir!r} cannot hold the run folder '{run_dir}' "
                          f"({err.strerror or err}): set output_dir to a writable folder") from None
    return outermost


def remove_created(outermost: Path | None) -> None:
    """Remove what :func:`create_run_dir` created (nothing if it created nothing)."""
    if outermost is not None:
        shutil.rmtree(outermost, ignore_errors=True)


def resolve_ckpt_path(cfg: Config) -> Path | None:
    """The checkpoint to resume from: ``last`` means the newest version's last.ckpt."""
    if cfg.ckpt_path is None:
        return None
    if cfg.ckpt_path != "last":
        return Path(cfg.ckpt_path)
    for _, folder in reversed(version_dirs(cfg.output_dir, cfg.name)):
        candidate = folder / "checkpoints" / "last.ckpt"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"ckpt_path=last, but no '{Path(cfg.output_dir) / cfg.name}/version_*/checkpoints/"
        "last.ckpt' exists: check output_dir and name, or start without ckpt_path"
    )
