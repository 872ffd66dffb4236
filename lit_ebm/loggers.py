"""The loggers of a run, chosen by the ``logger`` setting, and figures logged to them as images.

Every logger writes into the run folder ``<output_dir>/<name>/version_<n>/``: CSV its
``metrics.csv``, TensorBoard its event files, MLflow a file store ``mlruns/`` (experiment
``<name>``, run ``version_<n>``), Weights & Biases an offline run under ``wandb/`` (``wandb sync``
uploads it later). Nothing is sent over the network.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import (
    CSVLogger,
    Logger,
    MLFlowLogger,
    TensorBoardLogger,
    WandbLogger,
)
from torch import Tensor

from lit_ebm.errors import ConfigError

LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
# The module each logger needs beyond Lightning, and how to install it: tensorboard is a
# dependency of lit_ebm, wandb and mlflow are extras (mlflow-skinny provides the module mlflow,
# which is all Lightning's MLFlowLogger imports).
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
INSTALL = {"tensorboard": "pip install tensorboard", "wandb": 'pip install "lit_ebm[wandb]"',
           "mlflow": 'pip install "lit_ebm[mlflow]"'}
FIGURE_KEY = "samples"


def logger_names(value: Any) -> str | None:
    """The ``logger`` setting's rule: a non-empty list of distinct names from :data:`LOGGERS`."""
    known = isinstance(value, list) and all(isinstance(n, str) and n in LOGGERS for n in value)
    if known and value and len(set(value)) == len(value):
        return None
    return (f"a list of distinct loggers among {', '.join(LOGGERS)} "
            "(e.g. logger=[csv,tensorboard])")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported."""
    return importlib.util.find_spec(module) is not None


def check_installed(names: Sequence[str]) -> None:
    """Refuse, in one line naming what to install, a logger whose package is missing."""
    for name in names:
        module = PACKAGES.get(name)
        if module is not None and not installed(module):
            others = [n for n in names if n != name] or ["csv"]
            raise ConfigError(
                f"logger={list(names)} includes {name}, but the {module} package is not "
                f"installed: {INSTALL[name]}, or leave it out: "
                f"logger=[{','.join(others)}]")


def build_loggers(names: Sequence[str], run_dir: Path) -> list[Logger]:
    """The loggers ``names``, in that order, all writing into ``run_dir``."""
    check_installed(names)
    return [_BUILDERS[name](run_dir) for name in names]


def _csv(run_dir: Path) -> Logger:
    return CSVLogger(run_dir.parent.parent, name=run_dir.parent.name, version=run_dir.name)


def _tensorboard(run_dir: Path) -> Logger:
    return TensorBoardLogger(run_dir.parent.parent, name=run_dir.parent.name,
                             version=run_dir.name, default_hp_metric=False)


def _mlflow(run_dir: Path) -> Logger:
    # MLflow 3 refuses its file store (kept in maintenance) unless this opt-out is set; a value
    # the user set wins.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(experiment_name=run_dir.parent.name, run_name=run_dir.name,
                        tracking_uri=(run_dir / "mlruns").absolute().as_uri())


def _wandb(run_dir: Path) -> Logger:
    return WandbLogger(name=run_dir.name, project=run_dir.parent.name, save_dir=str(run_dir),
                       offline=True)


_BUILDERS: dict[str, Callable[[Path], Logger]] = {
    "csv": _csv, "tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}


def log_figure(logger: Logger, figure: Tensor, png: Path, step: int) -> None:
    """Log a ``(3, H, W)`` figure in [0, 1], already saved as ``png``, to ``logger`` at
    ``step`` if it takes images: TensorBoard and wandb as an image under ``samples``, MLflow
    the PNG as an artifact under ``samples/``. CSV takes none."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(FIGURE_KEY, figure, global_step=step)
    elif isinstance(logger, MLFlowLogger):
        logger.experiment.log_artifact(logger.run_id, str(png), artifact_path=FIGURE_KEY)
    elif isinstance(logger, WandbLogger):
        logger.log_image(FIGURE_KEY, [figure], step=step)
