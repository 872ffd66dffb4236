"""The Trainer of a run: its settings checked against this machine and Lightning, its loggers
(:mod:`lit_ebm.loggers`) and its callbacks."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator
from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from pytorch_lightning.strategies import StrategyRegistry

from lit_ebm.budget import ComputeBudget
from lit_ebm.build import build_generator_ema
from lit_ebm.callbacks import ConfiguredOptimizerSettings, SampleFigures, StepCheckpoint
from lit_ebm.config import Config, TrainerConfig
from lit_ebm.errors import ConfigError, first_line
from lit_ebm.loggers import build_loggers
from lit_ebm.objective_names import ADVERSARIAL
from lit_ebm.precision import bf16_supported


def accelerator_type(accelerator: str) -> str:
    """The device type (cpu, cuda, mps, tpu) that ``trainer.accelerator`` resolves to here."""
    return _available_devices(accelerator)[0]


def _available_devices(accelerator: str) -> tuple[str, int]:
    """The accelerator Lightning resolves ``accelerator`` to, and how many devices it has."""
    counts = {
        "tpu": XLAAccelerator.auto_device_count() if XLAAccelerator.is_available() else 0,
        "cuda": CUDAAccelerator.auto_device_count() if CUDAAccelerator.is_available() else 0,
        "mps": 1 if MPSAccelerator.is_available() else 0,
        "cpu": os.cpu_count() or 1,
    }
    if accelerator == "gpu":
        accelerator = "cuda" if counts["cuda"] or not counts["mps"] else "mps"
    if accelerator == "auto":
        accelerator = next(name for name, count in counts.items() if count)
    return accelerator, counts[accelerator]


def check_trainer_settings(trainer: TrainerConfig) -> int:
    """Refuse accelerators, device counts and strategies this machine or Lightning cannot
    serve; returns the number of training processes, devices per node x ``num_nodes``."""
    accelerator, available = _available_devices(trainer.accelerator)
    if not available:
        raise ConfigError(f"trainer.accelerator={trainer.accelerator!r}, but this machine has no "
                          f"{accelerator} device: use trainer.accelerator=auto or cpu")
    devices = trainer.devices
    if accelerator == "cpu" and (devices == -1 or isinstance(devices, list)):
        raise ConfigError(f"trainer.devices={devices!r} does not suit the CPU: give a number of "
                          f"processes between 1 and {available}")
    if isinstance(devices, list):
        wanted, highest = len(devices), max(devices) + 1
    elif devices == "auto":
        wanted = highest = 1 if accelerator == "cpu" else available
    elif devices == -1:
        wanted = highest = available
    else:
        wanted = highest = devices
    if highest > available:
        raise ConfigError(f"trainer.devices={devices!r} asks for more {accelerator} devices than "
                          f"this machine has ({available}): use trainer.devices<={available}")
    strategies = ("auto", *StrategyRegistry.available_strategies())
    if trainer.strategy not in strategies:
        raise ConfigError(f"invalid value {trainer.strategy!r} for 'trainer.strategy': expected "
                          f"one of auto, ddp, ddp_spawn, fsdp, deepspeed, ... "
                          f"(Lightning's StrategyRegistry lists {len(strategies) - 1})")
    return wanted * trainer.num_nodes


def training_strategy(cfg: Config, processes: int) -> str:
    """The strategy the Trainer gets. An energy step on detached samples leaves the generator's
    parameters without gradient, so adversarial training under DDP needs
    ``find_unused_parameters=True``: ``auto`` over several CPU or CUDA processes (which
    Lightning would run as plain ``ddp``) and every DDP strategy become their
    ``*_find_unused_parameters_true`` variant."""
    strategy = cfg.trainer.strategy
    if cfg.model.objective != ADVERSARIAL:
        return strategy
    if strategy == "auto" and processes > 1 and \
            _available_devices(cfg.trainer.accelerator)[0] in ("cpu", "cuda"):
        strategy = "ddp"
    unused = f"{strategy}_find_unused_parameters_true"
    return unused if unused in StrategyRegistry else strategy


def resolved_precision(trainer: TrainerConfig) -> str:
    """``trainer.precision``, with ``auto`` resolved for the accelerator the run gets:
    ``bf16-mixed`` where it computes bf16 natively (lit_ebm.precision), else ``32-true``."""
    if trainer.precision != "auto":
        return trainer.precision
    return "bf16-mixed" if bf16_supported(accelerator_type(trainer.accelerator)) else "32-true"


def build_trainer(cfg: Config, run_dir: Path, monitor: str | None, extra_callbacks: list[Callback],
                  processes: int) -> pl.Trainer:
    """The Trainer for ``cfg`` over ``processes`` processes, writing into ``run_dir``, with
    ``extra_callbacks`` after the checkpoint and sample callbacks; a logger whose package is
    missing and settings that Lightning rejects become a :class:`ConfigError`. Creates nothing
    on disk but an MLflow logger's file store in ``run_dir``."""
    trainer_args = {**asdict(cfg.trainer), "strategy": training_strategy(cfg, processes),
                    "precision": resolved_precision(cfg.trainer)}
    for key in ("limit_train_batches", "limit_val_batches"):  # Lightning's default, said
        if trainer_args[key] == 1.0 and isinstance(trainer_args[key], float):  # without a note
            trainer_args[key] = None
    loggers = build_loggers(cfg.logger, run_dir)
    try:
        return pl.Trainer(**trainer_args, logger=loggers,
                          callbacks=[*_callbacks(cfg, run_dir, monitor), *extra_callbacks],
                          default_root_dir=run_dir)
    except (MisconfigurationException, ValueError, TypeError) as err:
        raise ConfigError(f"Lightning rejected the trainer.* settings: {first_line(err)}"
                          ) from None


def _callbacks(cfg: Config, run_dir: Path, monitor: str | None) -> list[Callback]:
    """The compute budget, checkpoints (the best by ``monitor``, lower is better, when it is
    set; always the last), early stopping on ``monitor``, sample figures, optimiser names and
    learning rates."""
    checkpoints = run_dir / "checkpoints"
    ranked: list[Callback] = []
    if monitor is not None:
        ranked.append(ModelCheckpoint(dirpath=checkpoints, filename="best-epoch{epoch:03d}",
                                      monitor=monitor, mode="min", save_top_k=1,
                                      auto_insert_metric_name=False))
        if cfg.early_stopping.patience is not None:
            ranked.append(EarlyStopping(monitor, min_delta=cfg.early_stopping.min_delta,
                                        patience=cfg.early_stopping.patience, mode="min"))
    # last.ckpt after every epoch, and also every checkpoint_every_n_steps optimiser steps
    last: list[Callback] = [ModelCheckpoint(dirpath=checkpoints, save_top_k=0, save_last=True,
                                            enable_version_counter=False)]
    if cfg.checkpoint_every_n_steps is not None:
        last.append(StepCheckpoint(checkpoints / "last.ckpt", cfg.checkpoint_every_n_steps))
    samples = SampleFigures(run_dir / "samples", cfg.sample_every_n_epochs, cfg.num_sample_images)
    # after ConfiguredOptimizerSettings, which names each optimiser by what it trains; the
    # learning rate is logged at the start of every epoch, when schedules have stepped
    rates = LearningRateMonitor(logging_interval="epoch")
    # the average is in the module before SampleFigures draws (lit_ebm.averaging)
    budget = ComputeBudget(cfg.budget.train_seconds, cfg.budget.count_passes)
    return [budget, *ranked, *last, *build_generator_ema(cfg), samples,
            ConfiguredOptimizerSettings(), rates]
