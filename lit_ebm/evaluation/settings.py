"""What an evaluation measures: :class:`EvaluationSettings`, checked by the rules every command
shares (:mod:`lit_ebm.config.rules`), with errors that name the command-line flag."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from lit_ebm.config import IMAGE_DATASETS
from lit_ebm.config.rules import (
    check_settings,
    non_negative,
    one_of,
    optional,
    positive,
    positive_numbers,
    setting,
)

SPLITS = ("val", "test")
LOG_Z_PROPOSALS = ("mixture", "base", "q")  # for a residual energy; any other uses q
KID_SUBSET_SIZE = 1000  # the default, lowered to the validation split's size where smaller
FLAGS = {"checkpoints": "--ckpt"}  # settings whose flag is not named after them


def flag(key: str) -> str:
    """The ``python -m lit_ebm.evaluate`` flag of the setting ``key``."""
    return FLAGS.get(key, "--" + key.replace("_", "-"))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def some_checkpoint(value: Any) -> str | None:
    return None if len(value) > 0 else "at least one checkpoint"


def some_candidate(value: Any) -> str | None:
    return None if value >= 1 else ("at least 1 candidate per EBM sample (1 gives the "
                                     "generator's samples)")


def torch_device(value: Any) -> str | None:
    try:
        torch.device(value)
    except (RuntimeError, TypeError):
        return "a torch device such as cpu, cuda or cuda:1"
    return None


@dataclass(frozen=True)
class EvaluationSettings:
    """The checkpoints to evaluate (image runs of one data set) and how; ``out``, when set, is
    the folder that receives results.json, results.md and samples.png. Frozen: evaluating
    never changes the settings (the results say what was used)."""

    checkpoints: list[str | Path] = setting(MISSING, some_checkpoint)
    out: str | Path | None = None
    num_samples: int = setting(1000, positive)  # images per row
    seed: int = 0
    candidates: int = setting(16, some_candidate)  # generator samples per resampled EBM sample
    kid_subset_size: int | None = setting(None, optional(positive))  # None: KID_SUBSET_SIZE
    batch_size: int = setting(256, positive)  # images per forward pass
    data: str | None = setting(None, optional(one_of(*IMAGE_DATASETS)))  # None: as trained
    data_root: str | None = None  # None: as in training
    # the reference of every figure: the validation split carved from the training files, on
    # which the run chose its checkpoint, or the official test set (mnist, fashion_mnist, cifar10)
    split: str = setting("val", one_of(*SPLITS))
    inception_weights: str | None = None  # cifar10: a local Inception weights file
    # the proposal of an EBM's importance-sampling log Z when its energy is residual, E = f -
    # log q0: the mixture q/2 + q0/2, q0 alone, or the generator q (lit_ebm.evaluation.ebm)
    log_z_proposal: str = setting("mixture", one_of(*LOG_Z_PROPOSALS))
    # an EBM over a flow: log Z by annealed importance sampling over this many temperatures, one
    # chain per sample, instead of importance sampling (0: importance sampling)
    log_z_annealing: int = setting(0, non_negative)
    # an EBM over a flow: a row of samples by MALA in the flow's latent space, this many steps
    # after mcmc_burn_in steps of step-size adaptation (0: no MALA row; each step is a decode,
    # an energy and a backward pass per sample, so 100 + 100 steps cost minutes per 100 samples
    # on a CPU: opt in)
    mcmc_steps: int = setting(0, non_negative)
    mcmc_burn_in: int = setting(100, non_negative)
    # a row per temperature T != 1 for every checkpoint's generator: its samples at T (flows:
    # latent scaled by T; PixelCNN: logits / T), the baseline that trades recall for precision
    temperatures: list[float] = setting([], positive_numbers)
    device: str | None = setting(None, optional(torch_device))  # None: cuda when available
    compile: bool = False  # torch.compile the networks (lit_ebm.compilation)
    command: str | None = None  # for results.json; None: the equivalent command line

    def check(self) -> None:
        """Raise :class:`~lit_ebm.errors.ConfigError` naming the flag of a bad value."""
        check_settings(self, name_of=flag)

    def command_line(self) -> str:
        """``command``, else the ``python -m lit_ebm.evaluate`` command of these settings."""
        if self.command is not None:
            return self.command
        words = ["python -m lit_ebm.evaluate", flag("checkpoints"), *map(str, self.checkpoints)]
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name not in ("checkpoints", "command") and value != item.default:
                words += [flag(item.name), str(value)]
        return " ".join(words)
