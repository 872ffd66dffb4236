"""Reading checkpoints safely: clear errors for missing, corrupted or mismatched files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_ebm.errors import ConfigError, describe_error
from lit_ebm.generators import GENERATORS


def read_checkpoint(path: str | Path, key: str) -> dict[str, Any]:
    """Load a Lightning checkpoint with ``weights_only=True``; ``key`` names the config key.

    Raises :class:`ConfigError` when the file is missing, truncated, corrupted or not a
    Lightning checkpoint, instead of a pickle or zip traceback.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{key}: checkpoint '{file}' does not exist")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle and unpickler errors all mean "unreadable"
        raise ConfigError(
            f"{key}: checkpoint '{file}' cannot be read, it is truncated or corrupted "
            f"({describe_error(err)}). "
            "Pass an intact checkpoint, e.g. another version's checkpoints/last.ckpt"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{key}: '{file}' is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def check_compatible(expected: Mapping[str, Tensor], found: Mapping[str, Tensor],
                     source: str) -> None:
    """Raise :class:`ConfigError` naming the first parameter that differs in name or shape."""
    for name, tensor in expected.items():
        if name not in found:
            raise ConfigError(f"{source} does not fit this model: parameter '{name}' is missing "
                              "(the architecture settings differ)")
        if tuple(found[name].shape) != tuple(tensor.shape):
            raise ConfigError(
                f"{source} does not fit this model: parameter '{name}' has shape "
                f"{tuple(found[name].shape)} there but {tuple(tensor.shape)} here "
                "(the architecture settings differ)"
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ConfigError(f"{source} does not fit this model: it has parameter '{extra[0]}' "
                          "that this model lacks (the architecture settings differ)")


def check_finite_weights(checkpoint: Mapping[str, Any], source: str) -> None:
    """Raise :class:`ConfigError` naming the first weight of ``checkpoint`` that holds NaN or
    infinite values (a run saved after it diverged)."""
    for name, tensor in checkpoint["state_dict"].items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ConfigError(f"{source} holds non-finite weights ('{name}' has {bad} NaN or "
                              "infinite values): evaluate a checkpoint saved before training "
                              "diverged, e.g. its run's best-epoch*.ckpt")


def generator_name(checkpoint: Mapping[str, Any]) -> str | None:
    """The ``model.generator.name`` of the generator a checkpoint holds (None if unknown)."""
    spec = (checkpoint.get("hyper_parameters") or {}).get("generator")
    names = {cls.__name__: name for name, cls in GENERATORS.items()}
    return names.get(str(spec.get("network"))) if isinstance(spec, Mapping) else None


def check_generator_name(checkpoint: Mapping[str, Any], expected: str, source: str) -> None:
    """Raise :class:`ConfigError` when ``checkpoint`` holds another generator than
    ``expected`` (checkpoints that do not say are not judged)."""
    found = generator_name(checkpoint)
    if found is not None and found != expected:
        raise ConfigError(
            f"{source} holds a {found} generator, but this run's model.generator.name is "
            f"{expected}: pass a checkpoint of a {expected} run, or set "
            f"model.generator.name={found} with the settings of that run")


def sub_state_dict(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``state_dict`` under ``prefix.``, with the prefix removed."""
    start = f"{prefix}."
    return {k[len(start):]: v for k, v in state_dict.items() if k.startswith(start)}
