"""Training compute as a budget: the seconds training steps take (not validation, evaluation or
checkpointing) and the network passes they count, so that runs of different objectives are
compared at equal compute rather than equal epochs (docs/training.md, "A compute budget").

A pass is the floating-point work of one forward evaluation of the generator's log-density on
one image, measured by torch's FLOP counter (``torch.utils.flop_counter``); a backward pass
counts about two. The work of a training step is measured on two steps (the second and third
batches: the first starts log Z and warms caches) and taken as the mean, and the run's passes
are that times the steps taken, over every process. ``budget/passes_per_image`` divides them by
the training split's size: an epoch of maximum likelihood costs about 3 (forward, backward).
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

MEASURED_BATCHES = (1, 2)  # the batches whose work is counted


class FlopCount(TorchDispatchMode):
    """Sums the FLOPs of the operations run inside it by torch's own formulas
    (``torch.utils.flop_counter``; matrix products and convolutions, forward and backward).
    Unlike ``FlopCounterMode`` it tracks no modules, so ``torch.autograd.grad`` inside it
    works."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def forward_flops_per_image(module: Any, batch: torch.Tensor) -> float:
    """The FLOPs of the generator's log-density on one image of ``batch`` (forward only)."""
    with torch.no_grad(), FlopCount() as counter:
        module.log_q(batch)
    return counter.flops / len(batch)


class ComputeBudget(Callback):
    """Log ``budget/train_seconds`` (wall-clock inside training steps) on every step and, with
    ``count_passes``, ``budget/passes_per_image``; stop training once ``train_seconds`` (None:
    never) have been spent. The totals survive a resume (they are the callback's state)."""

    def __init__(self, train_seconds: float | None, count_passes: bool) -> None:
        self.train_seconds = train_seconds
        self.count_passes = count_passes
        self.spent = 0.0
        self.steps = 0
        self.flops_per_step: list[float] = []
        self.pass_flops: float | None = None
        self._counter: FlopCount | None = None
        self._started = 0.0
        self.train_size, self.world_size = 1, 1

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self.count_passes and self.pass_flops is None:
            self.pass_flops = forward_flops_per_image(pl_module, batch)
        if self.count_passes and batch_idx in MEASURED_BATCHES and len(
                self.flops_per_step) < len(MEASURED_BATCHES):
            self._counter = FlopCount()
            self._counter.__enter__()
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        seconds = time.perf_counter() - self._started
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops_per_step.append(float(self._counter.flops))
            self._counter = None
        else:  # a measured step runs slower under the counter: its time is not counted
            self.spent += seconds
        self.steps += 1
        self.train_size = len(trainer.datamodule.train_set)  # type: ignore[attr-defined]
        self.world_size = trainer.world_size
        figures = {"budget/train_seconds": self.spent}
        passes = self.passes_per_image()
        if passes is not None:
            figures["budget/passes_per_image"] = passes
        pl_module.log_dict(figures, on_step=True, on_epoch=False, sync_dist=False)
        if self.train_seconds is not None:
            over = trainer.strategy.reduce_boolean_decision(self.spent >= self.train_seconds,
                                                            all=False)
            trainer.should_stop = trainer.should_stop or over

    def passes_per_image(self) -> float | None:
        """The steps' passes so far over every process, per image of the training split; None
        before any step was measured."""
        if not self.flops_per_step or not self.pass_flops:
            return None
        per_step = sum(self.flops_per_step) / len(self.flops_per_step)
        return per_step * self.steps * self.world_size / self.pass_flops / self.train_size

    def state_dict(self) -> dict[str, Any]:
        return {"spent": self.spent, "steps": self.steps, "flops_per_step": self.flops_per_step,
                "pass_flops": self.pass_flops, "passes_per_image": self.passes_per_image()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.spent, self.steps = state_dict["spent"], state_dict["steps"]
        self.flops_per_step = list(state_dict["flops_per_step"])
        self.pass_flops = state_dict["pass_flops"]  # passes_per_image is recomputed
