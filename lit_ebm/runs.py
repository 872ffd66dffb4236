"""Run folders: ``<output_dir>/<name>/version_<n>/``, created once per run (by global rank 0
alone; :mod:`lit_ebm.launch` hands the folder to the other ranks) and never reused, and the
checkpoint a run resumes from."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from lit_ebm.config import Config, to_yaml
from lit_ebm.errors import ConfigError


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
    """The next ``<output_dir>/<name>/version_<n>`` (not yet created); for global rank 0 only."""
    existing = version_dirs(cfg.output_dir, cfg.name)
    number = existing[-1][0] + 1 if existing else 0
    return Path(cfg.output_dir) / cfg.name / f"version_{number}"


def create_run_dir(run_dir: Path, cfg: Config) -> Path | None:
    """Create ``run_dir`` with its ``config.yaml`` (global rank 0 only); returns the outermost
    folder this call created, for :func:`remove_created` if the start fails later. Folders
    are made one at a time, so a folder another process made meanwhile is never counted as
    this one's. Raises :class:`ConfigError`, leaving nothing behind, when ``output_dir``
    cannot be created or written, or when another run took ``run_dir`` first."""
    created: Path | None = None
    try:
        for folder in (*reversed(run_dir.parents), run_dir):
            if folder != run_dir and folder.is_dir():
                continue
            try:
                folder.mkdir()
            except FileExistsError:
                if folder == run_dir:
                    raise
                continue  # a file in the way fails below; a folder made meanwhile is not ours
            created = created or folder
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    except FileExistsError:
        remove_created(created)
        raise ConfigError(f"another run of output_dir={cfg.output_dir!r} and name={cfg.name!r} "
                          f"created '{run_dir}' while this one started: start again") from None
    except OSError as err:
        remove_created(created)
        raise ConfigError(f"output_dir={cfg.output_dir!r} cannot hold the run folder '{run_dir}' "
                          f"({err.strerror or err}): set output_dir to a writable folder") from None
    return created


def remove_created(outermost: Path | None) -> None:
    """Remove what :func:`create_run_dir` created in this process (nothing if it created
    nothing): no process removes folders that another one created."""
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
