"""Callbacks that watch training without changing it: sample figures (files, and images for the
loggers), the toy2d partition function by quadrature, FID and KID of generator samples, and the
configured optimiser settings applied over a resumed state."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torchvision.utils import save_image

from lit_ebm.evaluation.quality import FeatureDistances, generated_levels, image_features
from lit_ebm.features import FeatureExtractor
from lit_ebm.figures import render_samples
from lit_ebm.loggers import log_figure
from lit_ebm.modules import AdversarialEBM, GenerativeModule
from lit_ebm.modules.base import eval_mode
from lit_ebm.toy2d import log_partition_grid

TOY2D_GRID_BOUND = 8.0
TOY2D_GRID_RESOLUTION = 400


def epoch_due(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    """Whether the epoch that is ending is a multiple of ``every_n_epochs``, or the last."""
    epochs_done = trainer.current_epoch + 1
    last = trainer.max_epochs is not None and epochs_done >= trainer.max_epochs
    return epochs_done % every_n_epochs == 0 or last


class SampleFigures(Callback):
    """Save a figure of generator samples to ``folder`` every ``every_n_epochs`` epochs and
    after the last, and log it as an image to every logger that takes images."""

    def __init__(self, folder: Path, every_n_epochs: int, num_samples: int) -> None:
        self.folder = folder
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, GenerativeModule)
        if not trainer.is_global_zero or not epoch_due(trainer, self.every_n_epochs):
            return
        data = None
        if not pl_module.images:
            data = trainer.datamodule.val_set.tensors[0][: 4 * self.num_samples]  # type: ignore[attr-defined]
        figure = render_samples(pl_module, self.num_samples, data)
        self.folder.mkdir(parents=True, exist_ok=True)
        png = self.folder / f"epoch{trainer.current_epoch:04d}.png"
        save_image(figure, png)
        for logger in trainer.loggers:
            log_figure(logger, figure, png, trainer.global_step)


class Toy2dPartitionFunction(Callback):
    """Log ``val/log_z_true``: log Z of a 2-D energy by quadrature on a fine grid, the truth
    that the learned and estimated log Z are compared with."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, AdversarialEBM)
        log_z = log_partition_grid(pl_module.energy, TOY2D_GRID_BOUND, TOY2D_GRID_RESOLUTION,
                                   device=pl_module.device)
        pl_module.log("val/log_z_true", log_z, sync_dist=True)


class ConfiguredOptimizerSettings(Callback):
    """Apply the module's lr, betas and weight decay at the start of training, also over a
    resumed optimiser state, so a run can resume with new settings (a schedule keeps its
    position and scales the configured lr). Each parameter group is named by what it trains,
    which LearningRateMonitor's names end with (``lr-Adam/energy``, ``lr-Adam-1/generator``)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, GenerativeModule)
        schedulers = {id(c.scheduler.optimizer): c.scheduler for c in trainer.lr_scheduler_configs}
        configured = pl_module.optimizer_settings()
        for optimizer, (role, _, setting) in zip(trainer.optimizers, configured, strict=True):
            factor = 1.0
            if (scheduler := schedulers.get(id(optimizer))) is not None:
                scheduler.base_lrs = [setting["lr"]] * len(optimizer.param_groups)
                factor = scheduler.lr_lambdas[0](scheduler.last_epoch)  # type: ignore[attr-defined]
            for group in optimizer.param_groups:
                group.update(lr=setting["lr"] * factor, initial_lr=setting["lr"],
                             betas=tuple(setting["betas"]),
                             weight_decay=setting["weight_decay"], name=role)


class SampleQuality(Callback):
    """Log ``val/fid_<features>`` and ``val/kid_<features>`` (mean) every ``every_n_epochs``
    epochs, and after the last, from ``num_samples`` generator samples against the validation
    split (real features computed once per run).

    Under DDP each rank draws its share of the samples and features a shard of the
    validation split; every rank computes the synchronised metrics. Samples are drawn under a
    forked random state seeded by epoch and rank, so evaluation leaves training unchanged.
    """

    def __init__(self, extractor: FeatureExtractor, every_n_epochs: int, num_samples: int,
                 kid_subset_size: int, batch_size: int, seed: int = 0) -> None:
        self.extractor = extractor
        self.name = extractor.name
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.distances = FeatureDistances(extractor.num_features, kid_subset_size)
        self._real_done = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.extractor.to(pl_module.device)
        self.distances.to(pl_module.device)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, GenerativeModule)
        if trainer.sanity_checking or not epoch_due(trainer, self.every_n_epochs):
            return
        rank, world = trainer.global_rank, trainer.world_size
        if not self._real_done:
            shard = trainer.datamodule.val_set.images[rank::world]  # type: ignore[attr-defined]
            self.distances.update(image_features(self.extractor, shard), real=True)
            self._real_done = True
        share = self.num_samples // world + (rank < self.num_samples % world)
        with eval_mode(pl_module), torch.random.fork_rng(
                devices=_cuda_devices(pl_module.device)):
            torch.manual_seed(self.seed + 1000 * trainer.current_epoch + rank)
            levels = generated_levels(pl_module.generator.sample, pl_module.generator.discrete,
                                      share, self.batch_size)
        self.distances.update(image_features(self.extractor, levels), real=False)
        values = self.distances.compute(seed=self.seed + trainer.current_epoch)
        self.distances.reset_fake()
        # identical on every rank: torchmetrics gathered the features of all of them
        pl_module.log(f"val/fid_{self.name}", values["fid"], prog_bar=True, sync_dist=True)
        pl_module.log(f"val/kid_{self.name}", values["kid_mean"], sync_dist=True)


def _cuda_devices(device: torch.device) -> list[torch.device]:
    return [device] if device.type == "cuda" else []


class StepCheckpoint(Callback):
    """Write ``path`` (``last.ckpt``) whenever training passes a multiple of ``every_n_steps``
    optimiser steps, so that a run killed mid-epoch resumes from its last interval; the
    ``last.ckpt`` ModelCheckpoint still writes it after every epoch. (A ModelCheckpoint with a
    step interval skips its epoch-end save, and under manual optimisation warns about keeping
    pre-step states: lit_ebm saves the state after a step, which is where training resumes.)"""

    def __init__(self, path: Path, every_n_steps: int) -> None:
        self.path = path
        self.every_n_steps = every_n_steps
        self._previous_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._previous_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: object, batch: object, batch_idx: int) -> None:
        step, every = trainer.global_step, self.every_n_steps
        if step // every > self._previous_step // every:
            trainer.save_checkpoint(self.path, weights_only=False)  # all a resume needs
        self._previous_step = step

