"""An exponential moving average (EMA) of the generator's weights, used for sampling and
evaluation while training continues from the raw weights.

Averaging a generator's iterates smooths out the oscillations of adversarial training
(Yazıcı et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training", ICLR; Karras et
al. 2018, "Progressive Growing of GANs", ICLR, sample from such an average). Only the generator
is averaged: an averaged energy or log Z would be another density than the one trained.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn

from lit_ebm.checkpoints import sub_state_dict
from lit_ebm.errors import require
from lit_ebm.generators.base import Generator
from lit_ebm.modules.base import GenerativeModule

EMA_KEY = "generator_ema"
"""The checkpoint entry ``{"decay": float, "raw": generator state dict}`` of an EMA run."""


def ema_update(average: list[Tensor], current: list[Tensor], decay: float) -> None:
    """In place, ``average <- decay * average + (1 - decay) * current`` per tensor: after t
    updates from w_0 the average is decay^t w_0 + (1 - decay) sum_s decay^(t-s) w_s, a mean of
    the iterates over about 1 / (1 - decay) recent updates (Polyak & Juditsky 1992, "Acceleration
    of stochastic approximation by averaging", SIAM J. Control Optim. 30(4), for iterate
    averaging; exponential weights as in Yazıcı et al. 2019)."""
    get_ema_multi_avg_fn(decay)(average, current, None)


def _generator(pl_module: pl.LightningModule) -> Generator:
    assert isinstance(pl_module, GenerativeModule)
    return pl_module.generator


class GeneratorEMA(Callback):
    """Keep an EMA of the generator's weights (parameters and buffers), updated with
    :func:`ema_update` after every training batch, starting from the weights training starts
    with (or resumes with).

    The module holds its raw weights during training batches and the average from the start of
    validation, and from the end of each training epoch, until the next training batch, and
    after training: validation metrics, FID/KID and sample figures see the average (place this
    callback before :class:`~lit_ebm.callbacks.SampleFigures`). Checkpoints hold the average in
    ``state_dict``, so ``load_from_checkpoint`` gives the averaged generator, and the raw
    generator under :data:`EMA_KEY`, from which a resumed run trains on.
    """

    def __init__(self, decay: float) -> None:
        require(0.0 < decay < 1.0, "decay",
                f"decay must be in (0, 1), got {decay!r}; pass e.g. decay=0.999")
        self.decay = decay
        self.average: dict[str, Tensor] | None = None
        self.raw: dict[str, Tensor] | None = None  # the raw weights while the average is in
        self._resumed_average: dict[str, Tensor] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the average on the module's device, from the resumed average if any."""
        self.average = {k: v.detach().clone() for k, v in _generator(pl_module).state_dict()
                        .items()}
        if self._resumed_average is not None:
            for name, tensor in self.average.items():
                tensor.copy_(self._resumed_average[name])
            self._resumed_average = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self._hold_raw(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        assert self.average is not None
        current = _generator(pl_module).state_dict()
        ema_update(list(self.average.values()), [current[k] for k in self.average], self.decay)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._hold_average(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._hold_average(pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self.average is None:  # outside fit: the module's weights are what it holds
            return
        raw = self.raw if self.raw is not None else _generator(pl_module).state_dict()
        checkpoint["state_dict"].update({f"generator.{k}": v for k, v in self.average.items()})
        checkpoint[EMA_KEY] = {"decay": self.decay,
                               "raw": {k: v.detach().clone() for k, v in raw.items()}}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Resuming: the generator trains on from the raw weights, the average continues from
        the saved one. A checkpoint without an average starts it from its weights."""
        saved = checkpoint.get(EMA_KEY)
        if saved is None:
            return
        self._resumed_average = sub_state_dict(checkpoint["state_dict"], "generator")
        _generator(pl_module).load_state_dict(saved["raw"])

    def _hold_average(self, pl_module: pl.LightningModule) -> None:
        """Put the average into the module, keeping its raw weights aside (once)."""
        if self.average is None or self.raw is not None:
            return
        generator = _generator(pl_module)
        self.raw = {k: v.detach().clone() for k, v in generator.state_dict().items()}
        generator.load_state_dict(self.average)

    def _hold_raw(self, pl_module: pl.LightningModule) -> None:
        """Put the raw weights back into the module if the average is in it."""
        if self.raw is not None:
            _generator(pl_module).load_state_dict(self.raw)
            self.raw = None
