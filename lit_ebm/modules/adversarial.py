"""The adversarial EBM of Finn, Christiano, Abbeel & Levine (2016), section 3: a GAN whose
discriminator is D(x) = sigmoid(-E(x) - log Z - log q(x)). The mathematics is in
:mod:`lit_ebm.objectives`; docs/mathematics.md reads it next to the paper. Everything passed
to the objectives is float32 or wider under any Trainer precision (:mod:`lit_ebm.precision`).
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torchmetrics import CatMetric

from lit_ebm import generator_objectives, objectives
from lit_ebm.energy import base_of, learnable_part
from lit_ebm.generated_batch import GeneratedBatch, draw_generated_batch, energy_at
from lit_ebm.generators.base import Generator
from lit_ebm.modules.base import ADAM_DEFAULTS, AdamSettings, GenerativeModule, eval_mode
from lit_ebm.modules.log_z import LogZTracking
from lit_ebm.modules.training_stats import (
    discriminator_stats,
    generator_stats,
    input_gradient_norms,
)
from lit_ebm.objective_names import GENERATOR_OBJECTIVES
from lit_ebm.precision import density_call
from lit_ebm.registry import NetworkSpec, as_network
from lit_ebm.sampling import EBMSamples, sample_ebm

LOSS_NAMES = {"energy": "train/loss_d", "generator": "train/loss_g"}
ENERGY_ADAM: AdamSettings = {**ADAM_DEFAULTS, "lr": 1e-4, "betas": [0.5, 0.999]}


class AdversarialEBM(LogZTracking, GenerativeModule):
    """Energy E, learnable log Z and generator q trained as in Finn et al. (2016), section 3.

    Each batch draws one generated batch for an energy step on L_D and, every ``n_critic``-th
    batch, a generator step with the energy as that energy step left it. The generator's
    objective is the paper's reverse KL (``"reverse_kl"``: L_G, reparameterised for continuous
    generators, by the score function for discrete ones), ``"hybrid"`` (L_G plus ``nll_weight``
    times the data's negative log-likelihood) or ``"forward_kl"`` (KL(p || q) by
    self-normalised importance weights); see docs/mathematics.md.

    ``sticking_the_landing`` evaluates L_G's log q at fixed generator parameters (continuous
    generators); ``r1_gamma`` adds gamma/2 E_data ||grad_x f||^2 to the energy loss;
    ``log_z_tracking`` = m moves log Z a fraction m of the way to the batch's L_D-optimal value
    before every energy step (m = 1: the energy step is then the paper's IRL gradient exactly).
    ``generated_batch_size`` sets the size of the generated batch (default: the data batch's);
    the objectives weight each batch one half whatever their sizes (docs/mathematics.md).
    Without ``train_generator`` the generator is never stepped: only the energy and log Z learn,
    an EBM fitted over a fixed base (discriminator-driven sampling's setting, Azadi et al. 2019;
    the second stage of VAEBM, Xiao et al. 2021).

    Both steps minimise their loss per dimension (divided by D, like the maximum-likelihood
    loss), and ``train/loss_d`` and ``train/loss_g`` are logged in those units; each optimiser's
    settings carry their own ``grad_clip_norm``.
    """

    def __init__(self, generator: Generator | NetworkSpec, energy: nn.Module | NetworkSpec,
                 generator_optim: AdamSettings = ADAM_DEFAULTS,
                 energy_optim: AdamSettings = ENERGY_ADAM, n_critic: int = 1,
                 energy_reg: float = 0.0, lr_schedule: str = "constant", r1_gamma: float = 0.0,
                 log_z_tracking: float = 0.0, generator_objective: str = "reverse_kl",
                 nll_weight: float = 1.0, sticking_the_landing: bool = False,
                 train_generator: bool = True, generated_batch_size: int | None = None) -> None:
        super().__init__(generator, lr_schedule)
        if generator_objective not in GENERATOR_OBJECTIVES:
            raise ValueError(f"generator_objective must be one of {GENERATOR_OBJECTIVES}, got "
                             f"{generator_objective!r}")
        self.automatic_optimization = False
        self.energy = as_network(energy, "energy")
        self.generator_optim = {**ADAM_DEFAULTS, **generator_optim}
        self.energy_optim = {**ADAM_DEFAULTS, **energy_optim}
        self.n_critic, self.energy_reg, self.r1_gamma = n_critic, energy_reg, r1_gamma
        self.log_z_tracking = log_z_tracking
        self.generator_objective, self.nll_weight = generator_objective, nll_weight
        self.sticking_the_landing = sticking_the_landing
        self.train_generator = train_generator
        if generated_batch_size is not None and generated_batch_size < 2:
            raise ValueError(f"generated_batch_size: None or >= 2, got {generated_batch_size}")
        self.generated_batch_size = generated_batch_size
        self.log_z = nn.Parameter(torch.zeros(()))
        self.log_z_initialised: Tensor
        self.register_buffer("log_z_initialised", torch.tensor(False))
        self.val_real, self.val_fake = CatMetric(), CatMetric()  # -E - log q of each set
        self.save_networks_and_hyperparameters(generator=self.generator, energy=self.energy)

    def training_step(self, x_real: Tensor, batch_idx: int) -> None:
        """The paper's two steps on one batch: draw a generated batch, an energy step on L_D,
        then, every ``n_critic``-th batch, a generator step under the new energy; one log."""
        energy_opt, generator_opt = self.optimizers()  # type: ignore[attr-defined]
        generator_turn = self.train_generator and (batch_idx + 1) % self.n_critic == 0
        logging = (batch_idx + 1) % self.trainer.log_every_n_steps == 0  # type: ignore[attr-defined]
        fake = self.generate(self.generated_batch_size or len(x_real), keep_graph=generator_turn)
        with torch.no_grad():
            log_q_real = self.log_q(x_real)
        stats = self.energy_step(energy_opt, x_real, log_q_real, fake, logging)
        if generator_turn:
            stats["loss_g"] = self.generator_step(generator_opt, fake, x_real)
        self.log_training(stats, log_q_real, fake, len(x_real))

    def energy_step(self, optimizer: LightningOptimizer, x_real: Tensor, log_q_real: Tensor,
                    fake: GeneratedBatch, logging: bool) -> dict[str, Tensor]:
        """Minimise L_D over E and log Z, with the samples and log q held fixed (log Z first
        moved toward the batch's L_D optimum, :meth:`track_log_z`); returns L_D per dimension,
        the energies, and on ``logging`` steps the input gradients' norms."""
        energy_real = self.energy_of(x_real)
        energy_fake = fake.energy(self.energy_of, detach=True)
        log_q_fake = fake.log_q.detach()
        self.track_log_z(torch.cat([energy_real, energy_fake]).detach(),
                         torch.cat([log_q_real, log_q_fake]), len(x_real), logging)
        loss_d = objectives.discriminator_loss(energy_real, energy_fake, self.log_z,
                                               log_q_real, log_q_fake)
        penalty = self.energy_reg * objectives.energy_magnitude_penalty(energy_real, energy_fake)
        stats: dict[str, Tensor] = {}
        if self.r1_gamma > 0 or logging:
            grad_real, grad_fake = self.energy_input_gradients(x_real, fake.x)
            penalty = penalty + self.r1_gamma * objectives.r1_penalty(grad_real)
            stats = {"grad_x_energy_real": input_gradient_norms(grad_real.detach()),
                     "grad_x_energy_fake": input_gradient_norms(grad_fake)}
        dims = self.generator.num_dims
        self.optimise(optimizer, (loss_d + penalty) / dims, "energy", loss_d)
        return {**stats, "loss_d": loss_d.detach() / dims, "energy_real": energy_real.detach(),
                "energy_fake": energy_fake.detach()}

    def generator_step(self, optimizer: LightningOptimizer, fake: GeneratedBatch,
                       x_real: Tensor) -> Tensor:
        """One step of the generator objective (the paper's L_G, eq. 2, or its variants) under
        the energy as the energy step left it; returns L_G per dimension."""
        dims = self.generator.num_dims
        with self.toggled_optimizer(optimizer):
            surrogate, loss_g = self.generator_loss(fake, x_real)
            self.optimise(optimizer, surrogate / dims, "generator", loss_g)
        return loss_g / dims

    def log_training(self, stats: dict[str, Tensor], log_q_real: Tensor, fake: GeneratedBatch,
                     batch_size: int) -> None:
        """Log a training batch: the losses and input gradients of the steps, what the
        discriminator and the generated batch look like (:mod:`training_stats`), log Z."""
        energy_real, energy_fake = stats.pop("energy_real"), stats.pop("energy_fake")
        log_q_fake = fake.log_q.detach()
        stats |= {**discriminator_stats(energy_real, energy_fake, log_q_real, log_q_fake,
                                        self.log_z.detach()),
                  **generator_stats(fake.x.detach(), log_q_fake, fake.log_q_base,
                                    self.continuous_images)}
        shown = {key: stats.pop(key) for key in ("loss_g",) if key in stats}
        self.log_dict({f"train/{key}": value for key, value in stats.items()},
                      batch_size=batch_size)
        self.log_dict({f"train/{key}": value for key, value in
                       {**shown, "log_z": self.log_z.detach()}.items()}, prog_bar=True)
        self.log_train_likelihood(log_q_real)

    def generator_loss(self, fake: GeneratedBatch, x_real: Tensor) -> tuple[Tensor, Tensor]:
        """The loss to differentiate for the generator objective, and the value of
        L_G = mean(E + log q) under the current energy (detached, for monitoring)."""
        with torch.set_grad_enabled(not self.generator.discrete):
            energy = fake.energy(self.energy_of, detach=self.generator.discrete)
        value = (energy + fake.log_q).detach().mean()
        if self.generator_objective == "forward_kl":  # log q at the samples, no score term
            log_q = fake.log_q if self.generator.discrete else self.log_q(fake.x.detach())
            return generator_objectives.generator_loss_forward_kl(energy.detach(), log_q), value
        log_q = fake.log_q  # reparameterised: carries the path through x- unless discrete
        if self.sticking_the_landing and not self.generator.discrete:
            log_q = density_call(self.generator, self.device.type,
                                 self.generator.log_prob_at_fixed_parameters, fake.x)
        if self.generator_objective == "hybrid":
            loss = generator_objectives.generator_loss_hybrid(
                energy, log_q, self.log_q(x_real), self.nll_weight,
                score_function=self.generator.discrete)
        elif self.generator.discrete:  # score function with a leave-one-out baseline
            loss = objectives.generator_loss_score_function(energy, log_q)
        else:
            loss = objectives.generator_loss_reparameterised(energy, log_q)
        return loss, value

    @property
    def learnable_energy(self) -> nn.Module:
        """f, the energy's learnable part: a residual energy's net, else the energy itself."""
        return learnable_part(self.energy)

    def networks(self) -> list[nn.Module]:
        """The generator, the energy's learnable part and a residual energy's base."""
        base = base_of(self.energy)
        return [*super().networks(), self.learnable_energy, *([base] if base is not None else [])]

    @property
    def continuous_images(self) -> bool:
        return self.images and not self.generator.discrete

    def energy_input_gradients(self, x_real: Tensor, x_fake: Tensor) -> tuple[Tensor, Tensor]:
        """grad_x f on both batches, f the energy's learnable part (a residual energy's net):
        with a graph on the data batch when the R1 penalty needs one."""
        learnable = self.learnable_energy
        grads = []
        for x, graph in ((x_real, self.r1_gamma > 0), (x_fake, False)):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                f = density_call(learnable, x.device.type, learnable, x)
                (grad,) = torch.autograd.grad(f.sum(), x, create_graph=graph)
            grads.append(grad)
        return grads[0], grads[1]

    def generate(self, num_samples: int, keep_graph: bool) -> GeneratedBatch:
        """A generated batch of ``num_samples`` (:func:`draw_generated_batch`)."""
        return draw_generated_batch(self.generator, self.energy, num_samples, keep_graph,
                                    self.device.type)

    def optimise(self, optimizer: LightningOptimizer, loss: Tensor, role: str,
                 value: Tensor) -> None:
        """One step of ``optimizer`` on ``loss``, refused if ``value`` (the objective being
        optimised) is not finite; clipped in :meth:`on_before_optimizer_step`."""
        self.check_finite(f"{LOSS_NAMES[role]} ({role} objective)", value)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def energy_of(self, x: Tensor, base_log_prob: Tensor | None = None) -> Tensor:
        """E(x), shape ``(B,)``, float32 or wider under any autocast setting; ``base_log_prob``
        is a residual energy's log q0(x) where it is already computed."""
        return energy_at(self.energy, x, base_log_prob)

    def score(self, x: Tensor) -> dict[str, Tensor]:
        """The learned EBM at ``x``: ``energy`` E(x) and ``log_prob`` = -E(x) - log Z under the
        learned log Z, each of shape ``(B,)``. With ``log_z_tracking`` = 1 the learned log Z is
        the last training batch's L_D-optimal value, an importance-sampling estimate over one
        batch that can be far off; otherwise it is a learned offset that Adam moves slowly.
        Either way ``log_prob`` is not a trustworthy normalised log-density: for that, use a
        fresh estimate of log Z (``lit_ebm.evaluation.estimate_log_z``) and its k-hat."""
        energy = self.energy_of(x)
        return {"energy": energy, "log_prob": -energy - self.log_z}

    def log_density(self, x: Tensor) -> Tensor:
        """-E(x) - log Z under the learned log Z (see :meth:`score` for what that log Z is)."""
        return self.score(x)["log_prob"]

    @property
    def checkpoint_monitor(self) -> None:
        """None: the generator's likelihood is meant to give way to the energy, the learned
        log Z is no normaliser, and FID on the validation split is what evaluation measures, so
        no validation figure ranks an adversarial run's checkpoints without bias."""
        return None

    def sample(self, num_samples: int, method: str = "generator", **options: Any) -> EBMSamples:
        """Samples of the EBM exp(-E) / Z by ``method``: ``"sir"``, ``"mcmc"`` (MALA in a flow's
        latent), ``"imh"`` (independence Metropolis-Hastings), or ``"generator"`` (q's own);
        ``options`` and the returned fields: :func:`lit_ebm.sampling.sample_ebm`. In eval mode."""
        with eval_mode(self):
            return sample_ebm(self.generator, self.energy, num_samples, method, **options)

    def optimizer_settings(self) -> list[tuple[str, list[nn.Parameter], AdamSettings]]:
        trainable = [p for p in self.energy.parameters() if p.requires_grad]
        return [("energy", [*trainable, self.log_z], self.energy_optim),
                ("generator", list(self.generator.parameters()), self.generator_optim)]

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

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        fake = self.generate(len(batch), keep_graph=False)
        self.val_real.update(-self.energy_of(batch) - self.log_q(batch))
        self.val_fake.update(-fake.energy(self.energy_of) - fake.log_q)
        self.log("val/log_z", self.log_z.detach(), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Log ``val/log_z_ld_optimal``, the L_D-optimal offset of the whole validation split
        and as many generated samples (an estimate of log Z where the EBM fits the data)."""
        real, fake = self.val_real.compute().double(), self.val_fake.compute().double()
        scores = torch.cat([real, fake])
        offset = objectives.ld_optimal_log_z(-scores, torch.zeros_like(scores), len(real))
        self.log("val/log_z_ld_optimal", offset.float())
        self.val_real.reset()
        self.val_fake.reset()
