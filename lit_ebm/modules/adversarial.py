"""The adversarial EBM of Finn, Christiano, Abbeel & Levine (2016), section 3: a GAN whose
discriminator is D(x) = sigmoid(-E(x) - log Z - log q(x)). The mathematics is in
:mod:`lit_ebm.objectives`; docs/mathematics.md reads it next to the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch import Tensor, nn

from lit_ebm import objectives
from lit_ebm.energy import ResidualEnergy
from lit_ebm.generators.base import Generator
from lit_ebm.metrics import LogMeanExp, log_partition_proposal
from lit_ebm.modules.base import ADAM_DEFAULTS, AdamSettings, GenerativeModule
from lit_ebm.registry import NetworkSpec, as_network

ENERGY_ADAM: AdamSettings = {"lr": 1e-4, "betas": [0.5, 0.999], "weight_decay": 0.0}


@dataclass
class GeneratedBatch:
    """One generated batch x- ~ q serving both steps of a training batch.

    ``log_q`` (and ``x``, for continuous generators) carry gradients to the generator when the
    batch was drawn for a generator step; ``log_q_base`` = log q0(x) is the frozen base density
    of a residual energy, computed once for both steps (None without one).
    """

    x: Tensor
    log_q: Tensor
    log_q_base: Tensor | None

    def energy(self, energy: nn.Module, detach: bool = False) -> Tensor:
        """E(x-); ``detach`` cuts every path to the generator (the energy step)."""
        x = self.x.detach() if detach else self.x
        if self.log_q_base is None:
            return energy(x)
        base = self.log_q_base.detach() if detach else self.log_q_base
        return energy(x, base_log_prob=base)


class AdversarialEBM(GenerativeModule):
    """Energy E, learnable log Z and generator q trained as in Finn et al. (2016), section 3.

    Each batch draws one generated batch for an energy step on L_D and, every ``n_critic``-th
    batch, a generator step on L_G with the energy as that energy step left it:
    reparameterised for continuous generators, score-function for discrete ones.
    """

    def __init__(self, generator: Generator | NetworkSpec, energy: nn.Module | NetworkSpec,
                 generator_optim: AdamSettings = ADAM_DEFAULTS,
                 energy_optim: AdamSettings = ENERGY_ADAM, n_critic: int = 1,
                 energy_reg: float = 0.0, lr_schedule: str = "constant",
                 grad_clip_norm: float | None = None) -> None:
        super().__init__(generator, lr_schedule, grad_clip_norm)
        self.automatic_optimization = False
        self.energy = as_network(energy, "energy")
        self.generator_optim, self.energy_optim = dict(generator_optim), dict(energy_optim)
        self.n_critic, self.energy_reg = n_critic, energy_reg
        self.log_z = nn.Parameter(torch.zeros(()))
        self.log_z_initialised: Tensor
        self.register_buffer("log_z_initialised", torch.tensor(False))
        self.val_log_z_is = LogMeanExp()
        self.save_networks_and_hyperparameters(generator=self.generator, energy=self.energy)

    def training_step(self, x_real: Tensor, batch_idx: int) -> None:
        energy_opt, generator_opt = self.optimizers()  # type: ignore[attr-defined]
        generator_turn = (batch_idx + 1) % self.n_critic == 0
        fake = self.generate(len(x_real), keep_graph=generator_turn)
        with torch.no_grad():
            log_q_real = self.generator.log_prob(x_real)
        log_q_fake = fake.log_q.detach()

        # Energy step: minimise L_D over E and log Z, with samples and log q held fixed.
        energy_real, energy_fake = self.energy(x_real), fake.energy(self.energy, detach=True)
        if not self.log_z_initialised:
            self.initialise_log_z(torch.cat([energy_real, energy_fake]).detach(),
                                  torch.cat([log_q_real, log_q_fake]))
        loss_d = objectives.discriminator_loss(energy_real, energy_fake, self.log_z,
                                               log_q_real, log_q_fake)
        penalty = objectives.energy_magnitude_penalty(energy_real, energy_fake)
        self.optimise(energy_opt, loss_d + self.energy_reg * penalty, "train/loss_d")

        # Generator step: minimise L_G = E_q[E(x) + log q(x)] (eq. 2) under the new energy.
        if generator_turn:
            with self.toggled_optimizer(generator_opt):
                if self.generator.discrete:  # score function with a leave-one-out baseline
                    with torch.no_grad():
                        energy_new = fake.energy(self.energy, detach=True)
                    surrogate = objectives.generator_loss_score_function(energy_new, fake.log_q)
                    loss_g = objectives.generator_loss_reparameterised(energy_new, log_q_fake)
                else:  # reparameterised: through x- and log q(x-)
                    surrogate = loss_g = objectives.generator_loss_reparameterised(
                        fake.energy(self.energy), fake.log_q)
                self.optimise(generator_opt, surrogate, "train/loss_g", value=loss_g)
            self.log("train/loss_g", loss_g.detach(), prog_bar=True)
        self.log_energy_stats(energy_real.detach(), energy_fake.detach(), log_q_real,
                              log_q_fake, loss_d.detach())
        self.log_train_likelihood(log_q_real)

    def generate(self, num_samples: int, keep_graph: bool) -> GeneratedBatch:
        """Draw x- ~ q with log q(x-) (and log q0(x-) for a residual energy), with the graphs
        a generator step needs if ``keep_graph``. A discrete sample has no path to the
        parameters: its log q is recomputed with gradient for the score-function estimator."""
        with torch.set_grad_enabled(keep_graph):
            x, log_q = self.generator.sample(num_samples)
            expected = (num_samples, *self.generator.event_shape)
            if tuple(x.shape) != expected or tuple(log_q.shape) != (num_samples,):
                raise ValueError(
                    f"generator.sample({num_samples}) at global step {self.global_step} returned "
                    f"x of shape {tuple(x.shape)} and log_q of shape {tuple(log_q.shape)}; "
                    f"expected {expected} and ({num_samples},): the generated batch must be as "
                    "large as the data batch (docs/mathematics.md, the paper's setting)")
            if self.generator.discrete:
                x = x.detach()
                log_q = self.generator.log_prob(x) if keep_graph else log_q
            energy = self.energy
            base = energy.base.log_prob(x) if isinstance(energy, ResidualEnergy) else None
        return GeneratedBatch(x, log_q, base)

    def optimise(self, optimizer: LightningOptimizer, loss: Tensor, name: str,
                 value: Tensor | None = None) -> None:
        """One step of ``optimizer`` on ``loss``, refused if ``value`` (the loss) is not
        finite."""
        self.check_finite(name, loss if value is None else value)
        optimizer.zero_grad()
        self.manual_backward(loss)
        self.clip(optimizer)
        optimizer.step()

    def initialise_log_z(self, energy: Tensor, log_q: Tensor) -> None:
        """Set log Z to the first batch's importance-sampling fixed point, mean over ranks."""
        value = self.trainer.strategy.reduce(objectives.initial_log_z(energy, log_q),
                                             reduce_op="mean")
        with torch.no_grad():
            self.log_z.fill_(float(value))
            self.log_z_initialised.fill_(True)

    def score(self, x: Tensor) -> dict[str, Tensor]:
        """The learned EBM p_theta(x) = exp(-E(x)) / Z at ``x``: ``energy`` E(x) and
        ``log_prob`` = -E(x) - log Z under the learned log Z, each of shape ``(B,)``."""
        energy = self.energy(x)
        return {"energy": energy, "log_prob": -energy - self.log_z}

    def log_density(self, x: Tensor) -> Tensor:
        """The learned normalised log-density -E(x) - log Z."""
        return self.score(x)["log_prob"]

    def optimizer_settings(self) -> list[tuple[list[nn.Parameter], AdamSettings]]:
        trainable = [p for p in self.energy.parameters() if p.requires_grad]
        return [([*trainable, self.log_z], self.energy_optim),
                (list(self.generator.parameters()), self.generator_optim)]

    def on_train_start(self) -> None:
        if self.global_rank:  # every rank draws its own generator samples
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def on_train_epoch_end(self) -> None:
        for config in self.trainer.lr_scheduler_configs:  # manual optimisation steps them
            config.scheduler.step()  # type: ignore[call-arg]

    def on_train_end(self) -> None:
        """Check that every rank ends with the same log Z (DDP keeps replicas in step)."""
        values = torch.as_tensor(self.all_gather(self.log_z.detach()))
        if values.numel() > 1 and not torch.all(values == values.flatten()[0]):
            raise RuntimeError(f"log_z differs across ranks at the end of training: "
                               f"{values.flatten().tolist()}")

    def log_energy_stats(self, energy_real: Tensor, energy_fake: Tensor, log_q_real: Tensor,
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
        fake = self.generate(len(batch), keep_graph=False)
        energy = torch.cat([self.energy(batch), fake.energy(self.energy)])
        log_q = torch.cat([self.generator.log_prob(batch), fake.log_q])
        self.val_log_z_is.update(-energy - objectives.log_mu(energy, self.log_z, log_q))
        self.log("val/log_z_is", self.val_log_z_is)
        self.log("val/log_z", self.log_z.detach(), sync_dist=True)
