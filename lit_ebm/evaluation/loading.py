"""Checkpoints to evaluate: the module each holds, the data it was trained on, and a label."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from lit_ebm.checkpoints import check_finite_weights, generator_name, read_checkpoint
from lit_ebm.errors import ConfigError
from lit_ebm.evaluation.settings import flag
from lit_ebm.modules import AdversarialEBM, GenerativeModule, module_class
from lit_ebm.objective_names import ADVERSARIAL, MAXIMUM_LIKELIHOOD


@dataclass
class LoadedCheckpoint:
    """One checkpoint to evaluate, its module in eval mode."""

    path: Path
    label: str  # ``<run name>/version_<n>``, or the file's stem
    objective: str  # "mle" or "adversarial"
    generator: str | None  # model.generator.name of its generator
    module: GenerativeModule
    data: dict[str, Any]  # the data section it was trained with


def run_label(path: Path) -> str:
    """``<name>/version_<n>`` for a run folder's checkpoint (plus the file stem unless it is
    ``last``), else the file stem."""
    parts = path.resolve().parts
    if len(parts) >= 4 and parts[-2] == "checkpoints" and re.fullmatch(r"version_\d+",
                                                                      parts[-3]):
        label = f"{parts[-4]}/{parts[-3]}"
        return label if path.stem == "last" else f"{label}/{path.stem}"
    return path.stem


def _data_section(path: Path, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The data section a checkpoint was trained with: from the checkpoint, else from the run
    folder's config.yaml, else empty."""
    saved = (checkpoint.get("datamodule_hyper_parameters") or {}).get("data")
    if saved:
        return dict(saved)
    config = path.resolve().parent.parent / "config.yaml"
    if config.is_file():
        container = OmegaConf.to_container(OmegaConf.load(config))
        if isinstance(container, dict):
            return dict(container.get("data") or {})
    return {}


def is_lit_ebm_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """Whether the hyperparameters describe a generator network, as ``lit_ebm.fit`` saves."""
    spec = (checkpoint.get("hyper_parameters") or {}).get("generator")
    return isinstance(spec, Mapping) and "network" in spec


def load_checkpoint(path: str | Path, data: str | None = None,
                    device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load a lit_ebm checkpoint of an image run onto ``device``; ``data`` names the data set
    for checkpoints that do not record it. Raises :class:`ConfigError` saying what is wrong."""
    path, key = Path(path), flag("checkpoints")
    checkpoint = read_checkpoint(path, key)
    if not is_lit_ebm_checkpoint(checkpoint):
        raise ConfigError(f"{key}: '{path}' is not a lit_ebm checkpoint (no generator network "
                          "in its hyperparameters): pass a checkpoint written by python -m "
                          "lit_ebm.fit")
    check_finite_weights(checkpoint, f"{key} '{path}'")
    section = _data_section(path, checkpoint)
    if data is not None:
        section["name"] = data
    if not section.get("name"):
        raise ConfigError(f"{key}: '{path}' does not say which data it was trained on (no data "
                          "hyperparameters, no config.yaml beside its run folder): pass "
                          f"{flag('data')} NAME")
    module = module_class(checkpoint["hyper_parameters"]).load_from_checkpoint(
        path, map_location=device)
    if not module.images:
        raise ConfigError(f"{key}: '{path}' models {section['name']} points, but sample quality "
                          "is measured on images: pass checkpoints of image runs")

    objective = ADVERSARIAL if isinstance(module, AdversarialEBM) else MAXIMUM_LIKELIHOOD
    return LoadedCheckpoint(path, run_label(path), objective, generator_name(checkpoint),
                            module.eval(), section)


def check_same_data(checkpoints: list[LoadedCheckpoint]) -> str:
    """The one data set all ``checkpoints`` were trained on, else :class:`ConfigError`."""
    names = {c.data["name"] for c in checkpoints}
    if len(names) > 1:
        listed = ", ".join(f"{c.label}: {c.data['name']}" for c in checkpoints)
        raise ConfigError(f"the checkpoints were trained on different data sets ({listed}): "
                          "evaluate checkpoints of one data set together")
    return names.pop()
