"""LightningModules: maximum-likelihood training of a generator, and the adversarial EBM.

``AdversarialEBM`` is Finn et al. (2016), section 3: a GAN whose discriminator is
D(x) = sigmoid(-E(x) - log Z - log q(x)). Its energy step minimises L_D over (E, log Z), its
generator step minimises L_G = E_q[E(x) + log q(x)]; the mathematics is in
:mod:`lit_ebm.objectives`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from lit_ebm import objectives
from lit_ebm.checkpoints import (
    check_compatible,
    check_generator_name,
    read_checkpoint,
    sub_state_dict,
)
from lit_ebm.config import OptimConfig, model_config_from_dict
from lit_ebm.energy import ResidualEnergy, build_energy
from lit_ebm.figures import image_grid, toy2d_figure
from lit_ebm.generators import Generator, bits_per_dim, build_generator
from lit_ebm.metrics import LogMeanExp, log_partition_proposal
from lit_ebm.toy2d import log_partition_grid

TOY2D_GRID_BOUND = 8.0
TOY2D_GRID_RESOLUTION = 400


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops before the bad update is applied."""


def _adam(params: Any, config: OptimConfig) -> Adam:
    return Adam(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)


def cosine_factor(epoch: int, total_epochs: int) -> float:
    """Learning-rate factor of cosine annealing from 1 at epoch 0 to 0 at ``total_epochs``."""
    return 0.5 * (1.0 + math.cos(math.pi * min(epoch, total_epochs) / total_epochs))


def check_generator(generator: nn.Module) -> Generator:
    """Refuse a generator whose density cannot be evaluated, naming what it lacks."""
    missing = [name for name in ("log_prob", "sample") if not callable(getattr(generator, name,
                                                                               None))]
    if missing or not isinstance(getattr(generator, "discrete", None), bool):
        lacks = ", ".join(missing) if missing else "a boolean `discrete` attribute"
        raise TypeError(
            f"{type(generator).__name__} cannot be the generator: it lacks {lacks}. The paper's "
            "discriminator needs exact log-densities: subclass lit_ebm.generators.Generator "
            "(log_prob(x) -> (B,), sample(n) -> (x, log_q), discrete: bool)."
        )
    return generator


@dataclass
class GeneratedBatch:
    """One generated batch serving both steps of a training batch.

    On a batch that ends with a generator step, ``log_q`` carries gradients to the generator
    (through the sampling path if continuous), and so do ``x`` and ``log_q_base`` = log q0(x),
    the frozen base density of a residual energy (None without one): the energy step uses them
    detached, the generator step with their graphs, so each is computed once.
    """

    x: Tensor
    log_q: Tensor
    log_q_base: Tensor | None


class GenerativeModule(pl.LightningModule):
    """What both objectives share: the generator, its validation likelihood and sample figures.

    Hyperparameters are the plain ``model`` dict and the data's ``event_shape``, so
    checkpoints load with ``torch.load(weights_only=True)`` and ``load_from_checkpoint(path)``
    needs no config file. A ``generator`` instance may be passed instead of the configured one
    (pass it again to ``load_from_checkpoint``).
    """

    def __init__(self, model: dict[str, Any], event_shape: list[int],
                 generator: Generator | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "energy"])
        self.config = model_config_from_dict(model)
        self.event_shape = tuple(event_shape)
        if generator is None:
            generator = build_generator(self.config.generator, self.event_shape)
        self.generator = check_generator(generator)
        self.val_nll = MeanMetric()
        self.val_bpd = MeanMetric()

    @property
    def is_image(self) -> bool:
        return len(self.event_shape) == 3

    def _log_train_likelihood(self, log_q: Tensor) -> None:
        """Log train/nll (nats per example) and, for images, train/bpd of a data batch."""
        self.log("train/nll", -log_q.mean(), batch_size=len(log_q))
        if self.is_image:
            bpd = bits_per_dim(log_q, self.generator.num_dims, self.generator.discrete)
            self.log("train/bpd", bpd.mean(), prog_bar=True, batch_size=len(log_q))

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        log_q = self.generator.log_prob(batch)
        self.val_nll.update(-log_q)
        self.log("val/nll", self.val_nll, prog_bar=not self.is_image)
        if self.is_image:
            self.val_bpd.update(bits_per_dim(log_q, self.generator.num_dims,
                                             self.generator.discrete))
            self.log("val/bpd", self.val_bpd, prog_bar=True)

    def optimizer_specs(self) -> list[tuple[list[nn.Parameter], OptimConfig]]:
        """The parameters and config of each optimiser, in ``configure_optimizers`` order."""
        return [(list(self.generator.parameters()), self.config.generator_optim)]

    def configure_optimizers(self) -> dict[str, Any] | list[dict[str, Any]]:
        """One Adam per entry of :meth:`optimizer_specs`, each with its schedule if any."""
        configured = []
        for params, config in self.optimizer_specs():
            optimizer = _adam(params, config)
            entry: dict[str, Any] = {"optimizer": optimizer}
            if self.config.lr_schedule == "cosine":
                factor = partial(cosine_factor, total_epochs=self.trainer.max_epochs)
                entry["lr_scheduler"] = LambdaLR(optimizer, factor)
            configured.append(entry)
        return configured[0] if len(configured) == 1 else configured

    def on_train_start(self) -> None:
        """Apply the configured lr, betas and weight decay, also over a resumed optimiser state
        (a schedule keeps its position and scales the configured lr)."""
        schedulers = {id(c.scheduler.optimizer): c.scheduler
                      for c in self.trainer.lr_scheduler_configs}
        configs = [config for _, config in self.optimizer_specs()]
        for optimizer, config in zip(self.trainer.optimizers, configs, strict=True):
            factor = 1.0
            if (scheduler := schedulers.get(id(optimizer))) is not None:
                scheduler.base_lrs = [config.lr] * len(optimizer.param_groups)
                factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
            for group in optimizer.param_groups:
                group.update(lr=config.lr * factor, initial_lr=config.lr,
                             betas=tuple(config.betas), weight_decay=config.weight_decay)

    def clip(self, optimizer: Optimizer) -> None:
        """Clip ``optimizer``'s gradient norm to ``model.grad_clip_norm`` when it is set."""
        if self.config.grad_clip_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.config.grad_clip_norm,
                                gradient_clip_algorithm="norm")

    def check_finite(self, name: str, value: Tensor) -> None:
        """Stop with :class:`NonFiniteLossError` if ``value`` is NaN or infinite on any rank."""
        finite = bool(torch.isfinite(value.detach()).all())
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            raise NonFiniteLossError(
                f"{name} is not finite ({value.detach().cpu().tolist()}) at global step "
                f"{self.global_step}, epoch {self.current_epoch}. Training stopped before the "
                "update; the last checkpoint is intact. Lower the learning rate or set "
                "model.grad_clip_norm / model.energy_reg, then resume with ckpt_path=last."
            )

    @torch.no_grad()
    def render_samples(self, num_samples: int, data: Tensor | None = None) -> Tensor:
        """A figure of generator samples as a ``(3, H, W)`` image in [0, 1]."""
        was_training = self.training
        self.eval()
        samples, _ = self.generator.sample(num_samples)
        if self.is_image:
            figure = image_grid(samples)
        else:
            figure = toy2d_figure(self.toy2d_log_density, samples, data)
        self.train(was_training)
        return figure

    def toy2d_log_density(self, points: Tensor) -> Tensor:
        """The log-density shown behind toy2d figures (the generator's here)."""
        return self.generator.log_prob(points)


class MaximumLikelihood(GenerativeModule):
    """Fit the generator by maximum likelihood: minimise -log q(x) per dimension."""

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        log_q = self.generator.log_prob(batch)
        loss = -log_q.mean() / self.generator.num_dims
        self.check_finite("train/loss (negative log-likelihood per dimension)", loss)
        self._log_train_likelihood(log_q)
        return loss

    def configure_gradient_clipping(self, optimizer: Optimizer, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        self.clip(optimizer)


class AdversarialEBM(GenerativeModule):
    """Energy E, learnable log Z and generator q trained as in Finn et al. (2016), section 3.

    Each batch draws one generated batch (:class:`GeneratedBatch`) for two steps: an energy step
    on L_D (the samples detached) and, every ``n_critic``-th batch, a generator step on L_G
    with the energy frozen as that energy step left it, reparameterised for continuous
    generators and score-function for discrete ones.
    """

    def __init__(self, model: dict[str, Any], event_shape: list[int],
                 generator: Generator | None = None, energy: nn.Module | None = None) -> None:
        super().__init__(model, event_shape, generator)
        self.automatic_optimization = False
        if energy is None:
            energy = build_energy(self.config.energy, self.event_shape)
            if self.config.energy.residual:
                energy = ResidualEnergy(energy, copy.deepcopy(self.generator))
        self.energy = energy
        self.log_z = nn.Parameter(torch.zeros(()))
        self.register_buffer("log_z_initialised", torch.tensor(False))
        self.val_log_z_is = LogMeanExp()

    def load_generator(self, path: str) -> None:
        """Load the generator from a ``MaximumLikelihood`` checkpoint (model.generator_init),
        and the frozen base density of a residual energy with it."""
        checkpoint = read_checkpoint(path, "model.generator_init")
        source = f"model.generator_init checkpoint '{path}'"
        check_generator_name(checkpoint, self.config.generator.name, source)
        weights = sub_state_dict(checkpoint["state_dict"], "generator")
        check_compatible(self.generator.state_dict(), weights, source)
        self.generator.load_state_dict(weights)
        if isinstance(self.energy, ResidualEnergy):
            self.energy.base.load_state_dict(weights)

    def score(self, x: Tensor) -> dict[str, Tensor]:
        """Score images or points with the learned EBM p_theta(x) = exp(-E(x)) / Z.

        Returns ``energy`` E(x) and ``log_prob`` = -E(x) - log Z, the normalised log-density
        under the learned log Z, each of shape ``(B,)``; in the same space as the training data.
        """
        energy = self.energy(x)
        return {"energy": energy, "log_prob": -energy - self.log_z}

    def optimizer_specs(self) -> list[tuple[list[nn.Parameter], OptimConfig]]:
        trainable = [p for p in self.energy.parameters() if p.requires_grad]
        return [([*trainable, self.log_z], self.config.energy_optim),
                (list(self.generator.parameters()), self.config.generator_optim)]

    def on_train_epoch_end(self) -> None:
        for config in self.trainer.lr_scheduler_configs:  # manual optimisation steps them
            config.scheduler.step()

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.global_rank:  # every rank draws its own generator samples
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def on_train_end(self) -> None:
        """Check that every rank ends with the same log Z (DDP keeps replicas in step)."""
        values = self.all_gather(self.log_z.detach())
        if values.numel() > 1 and not torch.all(values == values.flatten()[0]):
            raise RuntimeError(f"log_z differs across ranks at the end of training: "
                               f"{values.flatten().tolist()}")

    def _init_log_z(self, energy: Tensor, log_q: Tensor) -> None:
        """Set log Z to the first batch's importance-sampling fixed point, mean over ranks."""
        value = objectives.initial_log_z(energy.detach(), log_q)
        value = self.trainer.strategy.reduce(value, reduce_op="mean")
        with torch.no_grad():
            self.log_z.fill_(float(value))
            self.log_z_initialised.fill_(True)

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        energy_opt, generator_opt = self.optimizers()
        generator_step = (batch_idx + 1) % self.config.n_critic == 0
        x_real = batch
        with torch.no_grad():
            log_q_real = self.generator.log_prob(x_real)
        fake = self._generate(len(x_real), with_graph=generator_step)
        log_q_fake = fake.log_q.detach()
        energy_real, energy_fake = self.energy(x_real), self._fake_energy(fake, detach=True)
        if not self.log_z_initialised:
            self._init_log_z(torch.cat([energy_real, energy_fake]),
                             torch.cat([log_q_real, log_q_fake]))

        loss_d = objectives.discriminator_loss(energy_real, energy_fake, self.log_z,
                                               log_q_real, log_q_fake)
        loss = loss_d
        if self.config.energy_reg > 0:
            loss = loss + self.config.energy_reg * objectives.energy_magnitude_penalty(
                energy_real, energy_fake)
        self.check_finite("train/loss_d (energy/discriminator loss)", loss)
        self._step(energy_opt, loss)
        self._log_energy_stats(energy_real.detach(), energy_fake.detach(), log_q_real,
                               log_q_fake, loss_d.detach())

        if generator_step:
            with self.toggled_optimizer(generator_opt):
                surrogate, loss_g = self._generator_loss(fake)
                self.check_finite("train/loss_g (generator loss)", loss_g)
                self._step(generator_opt, surrogate)
            self.log("train/loss_g", loss_g, prog_bar=True)
        self._log_train_likelihood(log_q_real)

    def _sample(self, num_samples: int) -> tuple[Tensor, Tensor]:
        """``generator.sample`` with its contract checked: the union must be a sample of mu."""
        x, log_q = self.generator.sample(num_samples)
        expected = (num_samples, *self.event_shape)
        if tuple(x.shape) != expected or tuple(log_q.shape) != (num_samples,):
            raise ValueError(
                f"generator.sample({num_samples}) at global step {self.global_step} returned x of "
                f"shape {tuple(x.shape)} and log_q of shape {tuple(log_q.shape)}; expected "
                f"{expected} and ({num_samples},): the generated batch must be as large as the "
                "data batch (DESIGN.md section 2)"
            )
        return x, log_q

    def _generate(self, num_samples: int, with_graph: bool) -> GeneratedBatch:
        """Draw the generated batch, with the graphs a generator step needs if ``with_graph``.

        A discrete sample has no path to the parameters: its log q is recomputed with gradient
        for the score-function estimator.
        """
        with torch.set_grad_enabled(with_graph):
            x, log_q = self._sample(num_samples)
            if self.generator.discrete:
                x = x.detach()
                log_q = self.generator.log_prob(x) if with_graph else log_q
            log_q_base = (self.energy.base.log_prob(x)
                          if isinstance(self.energy, ResidualEnergy) else None)
        return GeneratedBatch(x, log_q, log_q_base)

    def _fake_energy(self, fake: GeneratedBatch, detach: bool) -> Tensor:
        """E of the generated batch, reusing its log q0; ``detach`` cuts the path to the
        generator (energy step)."""
        x = fake.x.detach() if detach else fake.x
        if fake.log_q_base is None:
            return self.energy(x)
        base = fake.log_q_base.detach() if detach else fake.log_q_base
        return self.energy(x, base_log_prob=base)

    def _generator_loss(self, fake: GeneratedBatch) -> tuple[Tensor, Tensor]:
        """The loss to differentiate and the value of L_G = mean(E + log q) (detached), with the
        energy as the energy step left it.

        Continuous generators differentiate L_G itself (reparameterised); discrete ones a
        score-function surrogate whose value means nothing, so L_G is returned beside it.
        """
        if self.generator.discrete:
            with torch.no_grad():
                energy = self._fake_energy(fake, detach=True)
            value = objectives.generator_loss_reparameterised(energy, fake.log_q.detach())
            return objectives.generator_loss_score_function(energy, fake.log_q), value
        loss = objectives.generator_loss_reparameterised(self._fake_energy(fake, detach=False),
                                                         fake.log_q)
        return loss, loss.detach()

    def _step(self, optimizer: Optimizer, loss: Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        self.clip(optimizer)
        optimizer.step()

    def _log_energy_stats(self, energy_real: Tensor, energy_fake: Tensor, log_q_real: Tensor,
                          log_q_fake: Tensor, loss_d: Tensor) -> None:
        log_z = self.log_z.detach()
        logits_real = objectives.discriminator_logits(energy_real, log_z, log_q_real)
        logits_fake = objectives.discriminator_logits(energy_fake, log_z, log_q_fake)
        log_z_is = objectives.log_partition_is(torch.cat([energy_real, energy_fake]),
                                               torch.cat([log_q_real, log_q_fake]), log_z)
        stats = {
            "train/loss_d": loss_d,
            "train/log_z_is": log_z_is,
            "train/log_z_q": log_partition_proposal(energy_fake, log_q_fake)["log_z"].float(),
            "train/energy_real": energy_real.mean(),
            "train/energy_fake": energy_fake.mean(),
            "train/entropy": -log_q_fake.mean(),
            **{f"train/{k}": v for k, v in
               objectives.discriminator_stats(logits_real, logits_fake).items()},
        }
        self.log_dict(stats, batch_size=len(energy_real))
        self.log("train/log_z", log_z, prog_bar=True)

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        x_fake, log_q_fake = self._sample(len(batch))
        energy = torch.cat([self.energy(batch), self.energy(x_fake)])
        log_q = torch.cat([self.generator.log_prob(batch), log_q_fake])
        log_mu = objectives.log_mu(energy, self.log_z, log_q)
        self.val_log_z_is.update(-energy - log_mu)
        self.log("val/log_z_is", self.val_log_z_is)
        self.log("val/log_z", self.log_z.detach(), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if not self.is_image:
            log_z_true = log_partition_grid(self.energy, TOY2D_GRID_BOUND, TOY2D_GRID_RESOLUTION,
                                            device=self.log_z.device)
            self.log("val/log_z_true", log_z_true, sync_dist=True)

    def toy2d_log_density(self, points: Tensor) -> Tensor:
        """The learned normalised log-density -E(x) - log Z behind toy2d figures."""
        return self.score(points)["log_prob"]


MODULES: dict[str, Callable[..., GenerativeModule]] = {
    "mle": MaximumLikelihood,
    "adversarial": AdversarialEBM,
}
