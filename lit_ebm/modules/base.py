"""What both LightningModules share: the generator, its optimiser settings, validation
likelihood, clipping and the finite-loss guard.

Every log-density is computed in float32 or wider whatever the Trainer's precision: the
generator is evaluated through :meth:`GenerativeModule.log_q`, and draws through
:func:`lit_ebm.generated_batch.draw_generated_batch` (:mod:`lit_ebm.precision`).

Modules receive built networks and plain hyperparameters. Hyperparameters are saved as plain
containers, networks as their registry descriptions (:mod:`lit_ebm.registry`), so checkpoints
load with ``torch.load(weights_only=True)`` and ``load_from_checkpoint(path)`` needs no config.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from lit_ebm.errors import NonFiniteLossError
from lit_ebm.generators.base import Generator, bits_per_dim
from lit_ebm.precision import density_call
from lit_ebm.registry import NetworkSpec, as_network, describe

AdamSettings = Mapping[str, Any]
"""``{"lr": float, "betas": [float, float], "weight_decay": float, "grad_clip_norm": float |
None}``: one optimiser's Adam settings and the norm its gradients are clipped to (None: off)."""
ADAM_DEFAULTS: AdamSettings = {"lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.0,
                               "grad_clip_norm": None}
LR_SCHEDULES = ("constant", "cosine")


def adam(params: Any, settings: AdamSettings) -> Adam:
    return Adam(params, lr=settings["lr"], betas=tuple(settings["betas"]),
                weight_decay=settings["weight_decay"])


def cosine_factor(epoch: int, total_epochs: int) -> float:
    """Learning-rate factor of cosine annealing from 1 at epoch 0 to 0 at ``total_epochs``."""
    return 0.5 * (1.0 + math.cos(math.pi * min(epoch, total_epochs) / total_epochs))


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def check_generator(generator: nn.Module) -> Generator:
    """Refuse a generator whose density cannot be evaluated, naming what it lacks."""
    missing = [name for name in ("log_prob", "sample")
               if not callable(getattr(generator, name, None))]
    if missing or not isinstance(getattr(generator, "discrete", None), bool):
        lacks = ", ".join(missing) if missing else "a boolean `discrete` attribute"
        raise TypeError(
            f"{type(generator).__name__} cannot be the generator: it lacks {lacks}. The paper's "
            "discriminator needs exact log-densities: subclass lit_ebm.generators.Generator "
            "(log_prob(x) -> (B,), sample(n) -> (x, log_q), discrete: bool)."
        )
    return generator  # type: ignore[return-value]


class GenerativeModule(pl.LightningModule):
    """The generator q, its validation likelihood, and one Adam per optimiser setting."""

    def __init__(self, generator: Generator | NetworkSpec, lr_schedule: str = "constant") -> None:
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        self.generator = check_generator(as_network(generator, "generator"))
        self.lr_schedule = lr_schedule
        self.val_nll = MeanMetric()
        self.val_bpd = MeanMetric()

    def save_networks_and_hyperparameters(self, **networks: nn.Module) -> None:
        """Save the calling ``__init__``'s plain arguments, and each network as its
        description."""
        caller = inspect.currentframe().f_back  # type: ignore[union-attr]
        self.save_hyperparameters(ignore=list(networks), frame=caller)
        self.hparams.update({name: describe(net) for name, net in networks.items()})

    @property
    def images(self) -> bool:
        """Whether examples are images (bits/dim apply) rather than points."""
        return len(self.generator.event_shape) == 3

    @property
    def checkpoint_monitor(self) -> str | None:
        """The validation figure (lower is better) that ranks this module's checkpoints and
        stops a plateaued run; None: none ranks them, and ``last.ckpt`` is the result."""
        return "val/bpd" if self.images else "val/nll"

    def likelihood_stats(self, log_q: Tensor) -> dict[str, Tensor]:
        """Per-example nll (nats) and, for images, bits/dim of log-densities ``log_q``."""
        stats = {"nll": -log_q}
        if self.images:
            stats["bpd"] = bits_per_dim(log_q, self.generator.num_dims, self.generator.discrete)
        return stats

    def log_q(self, x: Tensor) -> Tensor:
        """log q(x), shape ``(B,)``, in float32 or wider under any autocast setting."""
        return density_call(self.generator, x.device.type, self.generator.log_prob, x)

    def log_train_likelihood(self, log_q: Tensor) -> None:
        for name, values in self.likelihood_stats(log_q.detach()).items():
            self.log(f"train/{name}", values.mean(), prog_bar=name == "bpd",
                     batch_size=len(log_q))

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        """Validation likelihood in the parameters' precision (float32) whatever the
        Trainer's: the figure that ranks checkpoints is the one ``lit_ebm.evaluate`` reports."""
        with torch.autocast(batch.device.type, enabled=False):
            stats = self.likelihood_stats(self.log_q(batch))
        self.val_nll.update(stats["nll"])
        self.log("val/nll", self.val_nll, prog_bar=not self.images)
        if self.images:
            self.val_bpd.update(stats["bpd"])
            self.log("val/bpd", self.val_bpd, prog_bar=True)

    def networks(self) -> list[nn.Module]:
        """The networks whose ``forward`` the training step runs (what ``model.compile``
        compiles): here the generator."""
        return [self.generator]

    def log_density(self, x: Tensor) -> Tensor:
        """The trained model's normalised log-density (here the generator's)."""
        return self.log_q(x)

    def optimizer_settings(self) -> list[tuple[str, list[nn.Parameter], AdamSettings]]:
        """Each optimiser's role (what it trains: ``"generator"``, ``"energy"``), parameters
        and Adam settings, in ``configure_optimizers`` order."""
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        """One Adam per entry of :meth:`optimizer_settings`, each with its schedule if any."""
        configured = []
        for _, params, settings in self.optimizer_settings():
            optimizer = adam(params, settings)
            entry: dict[str, Any] = {"optimizer": optimizer}
            if self.lr_schedule == "cosine":
                factor = partial(cosine_factor, total_epochs=self.trainer.max_epochs or 1)
                entry["lr_scheduler"] = LambdaLR(optimizer, factor)
            configured.append(entry)
        return configured[0] if len(configured) == 1 else configured

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Clip ``optimizer``'s gradients to its own settings' norm (:meth:`clip`), for every
        module and optimiser. Lightning calls this inside ``optimizer.step()``, after a
        16-mixed run's grad scaler has unscaled the gradients: clipping before ``step()`` would
        act on gradients multiplied by the loss scale."""
        configured = self.optimizers()
        wrapped = configured if isinstance(configured, list) else [configured]
        index = [getattr(o, "optimizer", o) for o in wrapped].index(optimizer)
        role, _, settings = self.optimizer_settings()[index]
        self.clip(optimizer, settings, role)

    def clip(self, optimizer: Optimizer | LightningOptimizer, settings: AdamSettings,
             role: str) -> None:
        """Clip ``optimizer``'s gradient norm to its ``settings["grad_clip_norm"]`` when that is
        set; log the norm before clipping as ``train/grad_norm_<role>`` and, with clipping on,
        ``train/clipped_<role>`` (1 on a clipped step, so its epoch mean is how often)."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                     for g in grads])) if grads else torch.zeros(())
        self.log(f"train/grad_norm_{role}", norm.detach())
        max_norm = settings.get("grad_clip_norm")
        if max_norm is not None:
            self.clip_gradients(optimizer,  # type: ignore[arg-type]
                                gradient_clip_val=max_norm, gradient_clip_algorithm="norm")
            self.log(f"train/clipped_{role}", (norm.detach() > max_norm).float())

    def check_finite(self, name: str, value: Tensor) -> None:
        """Stop with :class:`NonFiniteLossError` if ``value`` is NaN or infinite on any rank."""
        finite = bool(torch.isfinite(value.detach()).all())
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            raise NonFiniteLossError(
                f"{name} is not finite ({value.detach().cpu().tolist()}) at global step "
                f"{self.global_step}, epoch {self.current_epoch}. Training stopped before the "
                "update; the last checkpoint is intact. Lower the learning rate or set "
                "model.generator_optim.grad_clip_norm (model.energy_optim.grad_clip_norm, "
                "model.energy_reg), then resume with ckpt_path=last."
            )
