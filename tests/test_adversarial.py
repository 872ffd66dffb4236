"""AdversarialEBM: logged quantities, log Z initialisation, n_critic, both L_G estimators,
generator checks, scoring, and generator initialisation from an ML checkpoint."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lit_ebm import objectives
from lit_ebm.build import build_energy, build_module, load_generator_weights
from lit_ebm.config import load_config
from lit_ebm.errors import ConfigError
from lit_ebm.fit import main
from lit_ebm.generators import Generator
from lit_ebm.modules import AdversarialEBM, MaximumLikelihood, adversarial
from lit_ebm.modules.training_stats import discriminator_stats
from lit_ebm.toy2d import sample_toy2d
from tests.tiny import logged_rows, quiet_trainer

TOY_RUN = [
    "--config", "configs/toy2d_adversarial.yaml",
    "data.batch_size=64", "data.toy_train_size=256", "data.toy_val_size=128",
    "model.generator.realnvp2d.num_couplings=2", "model.generator.realnvp2d.hidden_features=16",
    "model.energy.mlp.hidden_features=16", "model.energy.mlp.depth=2",
    "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
    "num_sample_images=64",
]
REQUIRED = ["train/loss_d", "train/loss_g", "train/log_z", "train/log_z_ld_optimal",
            "train/log_z_q", "train/ess_q", "train/log_z_gap", "train/d_acc_real",
            "train/d_acc_fake",
            "train/energy_real", "train/energy_fake", "train/entropy", "train/grad_norm_energy",
            "train/grad_norm_generator", "train/grad_x_energy_real", "train/grad_x_energy_fake",
            "val/log_z", "val/log_z_ld_optimal", "val/log_z_true", "val/nll"]


TOY_SIZES = [arg for arg in TOY_RUN if arg.startswith(("data.", "model."))]


def _toy_module(generator: Generator | None = None, **overrides: str) -> AdversarialEBM:
    """The toy run's module; a ``generator`` passed in replaces the configured one."""
    cfg = load_config(["configs/toy2d_adversarial.yaml"],
                      [*TOY_SIZES, *(f"{k}={v}" for k, v in overrides.items())])
    if generator is None:
        return build_module(cfg, (2,))
    model = cfg.model
    return AdversarialEBM(generator, build_energy(model.energy, (2,), generator),
                          generator_optim=asdict(model.generator_optim),
                          energy_optim=asdict(model.energy_optim), n_critic=model.n_critic)


def _fit(module: AdversarialEBM, steps: int, batch_size: int = 32) -> pl.Trainer:
    data = sample_toy2d("ring8", batch_size * steps, torch.Generator().manual_seed(0))
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(module, DataLoader(data, batch_size=batch_size))
    return trainer


@pytest.mark.slow
def test_toy_run_logs_every_required_quantity(tmp_path: Path) -> None:
    assert main([*TOY_RUN, f"output_dir={tmp_path}", "name=adv"]) == 0
    run_dir = tmp_path / "adv" / "version_0"
    rows = logged_rows(run_dir)
    for key in REQUIRED:
        values = [float(row[key]) for row in rows if row.get(key)]
        assert values and all(torch.isfinite(torch.tensor(values))), key
    log_z_true = [float(row["val/log_z_true"]) for row in rows if row.get("val/log_z_true")]
    assert len(log_z_true) == 2
    figures = sorted(p.name for p in (run_dir / "samples").glob("*.png"))
    assert figures == ["epoch0001.png"], "every 5 epochs (none here) and at the end"
    reloaded = AdversarialEBM.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt",
                                                   map_location="cpu")
    scored = reloaded.score(torch.zeros(3, 2))
    assert float(reloaded.log_z) == pytest.approx(float(rows[-1]["val/log_z"]), abs=1e-6)
    assert torch.allclose(scored["log_prob"], -scored["energy"] - reloaded.log_z)


def test_log_z_starts_at_the_first_batch_fixed_point(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _toy_module(**{"model.energy_optim.lr": "1e-12"})
    seen: list[tuple[float, float]] = []

    def record(energy_real: Tensor, energy_fake: Tensor, log_q_real: Tensor, log_q_fake: Tensor,
               log_z: Tensor) -> dict[str, Tensor]:
        fixed_point = objectives.log_partition_is(torch.cat([energy_real, energy_fake]),
                                                  torch.cat([log_q_real, log_q_fake]), log_z)
        seen.append((float(log_z), float(fixed_point)))
        return discriminator_stats(energy_real, energy_fake, log_q_real, log_q_fake, log_z)

    monkeypatch.setattr(adversarial, "discriminator_stats", record)
    _fit(module, steps=1)
    (log_z, estimate), = seen
    assert log_z != 0.0 and bool(module.log_z_initialised)
    assert abs(log_z - estimate) < 1e-4


@pytest.mark.parametrize(("n_critic", "steps", "expected_global_step"), [(1, 4, 8), (2, 4, 6)])
def test_n_critic_energy_steps_per_generator_step(n_critic: int, steps: int,
                                                  expected_global_step: int) -> None:
    module = _toy_module(**{"model.n_critic": str(n_critic)})
    trainer = _fit(module, steps=steps)
    assert trainer.global_step == expected_global_step


def test_generator_step_leaves_energy_alone_and_moves_generator() -> None:
    module = _toy_module(**{"model.energy_optim.lr": "1e-12"})
    energy_before = [p.detach().clone() for p in module.energy.parameters()]
    generator_before = [p.detach().clone() for p in module.generator.parameters()]
    _fit(module, steps=2)
    assert all(torch.allclose(a, b, atol=1e-8)
               for a, b in zip(energy_before, module.energy.parameters(), strict=True))
    assert any(not torch.equal(a, b)
               for a, b in zip(generator_before, module.generator.parameters(), strict=True))


def test_energy_alone_learns_over_a_fixed_generator() -> None:
    trained = _toy_module()
    model = load_config(["configs/toy2d_adversarial.yaml"], TOY_SIZES).model
    module = AdversarialEBM(trained.generator, build_energy(model.energy, (2,), trained.generator),
                            energy_optim=asdict(model.energy_optim), train_generator=False)
    generator_before = [p.detach().clone() for p in module.generator.parameters()]
    energy_before = [p.detach().clone() for p in module.energy.parameters()]
    trainer = _fit(module, steps=3)
    assert trainer.global_step == 3, "energy steps only"
    assert all(torch.equal(a, b)
               for a, b in zip(generator_before, module.generator.parameters(), strict=True))
    assert any(not torch.equal(a, b)
               for a, b in zip(energy_before, module.energy.parameters(), strict=True))


@pytest.mark.parametrize("overrides", [["model.objective=mle"], []])
def test_fixed_generator_needs_an_adversarial_run_started_from_a_checkpoint(
    overrides: list[str]
) -> None:
    with pytest.raises(ConfigError, match="model.train_generator.*model.generator_init"):
        load_config(["configs/toy2d_adversarial.yaml"],
                    ["model.train_generator=false", *overrides])


class CategoricalPoints(Generator):
    """A discrete generator over 8 fixed points: trained with the score-function estimator."""

    discrete = True

    def __init__(self) -> None:
        super().__init__((2,))
        angles = torch.arange(8) * (2 * torch.pi / 8)
        self.register_buffer("points", 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1))
        self.logits = nn.Parameter(torch.zeros(8))

    def _index(self, x: Tensor) -> Tensor:
        return torch.cdist(x, self.points).argmin(dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.logits, 0)[self._index(x)]

    def sample(self, num_samples: int) -> tuple[Tensor, Tensor]:
        index = torch.multinomial(torch.softmax(self.logits, 0), num_samples, replacement=True)
        return self.points[index], torch.log_softmax(self.logits, 0)[index]


def test_discrete_generator_trains_by_score_function() -> None:
    generator = CategoricalPoints()
    module = _toy_module(generator)
    _fit(module, steps=3)
    assert generator.logits.grad is not None
    assert not torch.equal(generator.logits.detach(), torch.zeros(8))


@pytest.mark.parametrize("discrete", [False, True])
def test_one_generated_batch_gives_the_losses_and_gradients_of_separate_passes(
    discrete: bool,
) -> None:
    """The shared batch (one draw, one pass of q0 over it) changes no loss and no gradient:
    compare with each step recomputing the samples' energy and log-densities from scratch."""
    torch.manual_seed(0)
    generator = CategoricalPoints() if discrete else None
    module = _toy_module(generator, **{"model.energy.residual": "true"})
    with torch.no_grad():
        module.log_z.fill_(0.3)
        if discrete:  # the generator moves away from the residual energy's base
            generator.logits.normal_()
    x_real = sample_toy2d("ring8", 32, torch.Generator().manual_seed(1))
    log_q_real = module.generator.log_prob(x_real).detach()
    energy_params = [p for p in module.energy.parameters() if p.requires_grad] + [module.log_z]
    generator_params = list(module.generator.parameters())

    def grads(loss: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
        return list(torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True))

    torch.manual_seed(5)
    fake = module.generate(32, keep_graph=True)
    loss_d = objectives.discriminator_loss(module.energy(x_real),
                                           fake.energy(module.energy, detach=True),
                                           module.log_z, log_q_real, fake.log_q.detach())
    if discrete:
        energy_fake = fake.energy(module.energy, detach=True).detach()
        surrogate = objectives.generator_loss_score_function(energy_fake, fake.log_q)
        loss_g = objectives.generator_loss_reparameterised(energy_fake, fake.log_q.detach())
    else:
        surrogate = objectives.generator_loss_reparameterised(fake.energy(module.energy),
                                                              fake.log_q)
        loss_g = surrogate.detach()

    torch.manual_seed(5)
    x, log_q = module.generator.sample(32)
    if discrete:
        log_q = module.generator.log_prob(x)
    reference_d = objectives.discriminator_loss(module.energy(x_real), module.energy(x.detach()),
                                                module.log_z, log_q_real, log_q.detach())
    if discrete:
        energy = module.energy(x).detach()
        reference_surrogate = objectives.generator_loss_score_function(energy, log_q)
        reference_g = (energy + log_q).mean().detach()
    else:
        reference_surrogate = objectives.generator_loss_reparameterised(module.energy(x), log_q)
        reference_g = reference_surrogate.detach()

    assert torch.equal(fake.x, x)
    assert torch.allclose(loss_d, reference_d, rtol=1e-6, atol=0)
    assert torch.allclose(loss_g, reference_g, rtol=1e-6, atol=0)
    for new, old in ((grads(loss_d, energy_params), grads(reference_d, energy_params)),
                     (grads(surrogate, generator_params),
                      grads(reference_surrogate, generator_params))):
        assert all(g is not None for g in new + old)
        assert sum(float(g.abs().sum()) for g in old) > 0
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(new, old,
                                                                              strict=True))


def test_generator_without_log_densities_is_refused() -> None:
    with pytest.raises(TypeError, match="lacks log_prob, sample.*exact log-densities"):
        _toy_module(nn.Linear(2, 2))


class WrongSize(CategoricalPoints):
    def sample(self, num_samples: int) -> tuple[Tensor, Tensor]:
        return super().sample(num_samples + 1)


def test_the_generated_batch_has_its_own_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """model.generated_batch_size=5 beside data batches of 32: both steps see 5 samples."""
    module = _toy_module(**{"model.generated_batch_size": "5", "model.log_z_tracking": "1"})
    sizes: list[tuple[int, int]] = []

    def record(energy_real: Tensor, energy_fake: Tensor, *rest: Tensor) -> dict[str, Tensor]:
        sizes.append((len(energy_real), len(energy_fake)))
        return discriminator_stats(energy_real, energy_fake, *rest)

    monkeypatch.setattr(adversarial, "discriminator_stats", record)
    _fit(module, steps=2)
    assert sizes == [(32, 5), (32, 5)] and torch.isfinite(module.log_z)


def test_generated_batch_of_the_wrong_size_names_the_shapes() -> None:
    module = _toy_module(WrongSize())
    with pytest.raises(ValueError, match=r"generator.sample\(32\) returned .* \(33, 2\)"):
        _fit(module, steps=1)


def test_score_returns_energy_and_normalised_log_density() -> None:
    module = _toy_module()
    with torch.no_grad():
        module.log_z.fill_(1.5)
    points = torch.randn(5, 2)
    scored = module.score(points)
    assert torch.allclose(scored["energy"], module.energy(points))
    assert torch.allclose(scored["log_prob"], -module.energy(points) - 1.5)


@pytest.mark.slow
def test_generator_init_loads_ml_weights_under_either_objective_and_refuses_others(
    tiny_run: list[str], tmp_path: Path
) -> None:
    assert main(tiny_run) == 0
    ml_ckpt = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    cfg = load_config([], [*tiny_run, "model.objective=adversarial"])
    module = build_module(cfg, (1, 28, 28))
    load_generator_weights(module.generator, str(ml_ckpt), "realnvp")
    saved = torch.load(ml_ckpt, weights_only=True)["state_dict"]
    for name, tensor in module.generator.state_dict().items():
        assert torch.equal(tensor, saved[f"generator.{name}"])
    # maximum likelihood starts from it too (fine-tuning under other optimiser settings)
    fine_tune = build_module(load_config([], [*tiny_run, f"model.generator_init={ml_ckpt}"]),
                             (1, 28, 28))
    assert isinstance(fine_tune, MaximumLikelihood)
    for name, tensor in fine_tune.generator.state_dict().items():
        assert torch.equal(tensor, saved[f"generator.{name}"])

    other = load_config([], [*tiny_run, "model.objective=adversarial",
                             "model.generator.realnvp.hidden_channels=4"])
    mismatched = build_module(other, (1, 28, 28))
    with pytest.raises(ConfigError, match=r"parameter '[\w.]+' has shape"):
        load_generator_weights(mismatched.generator, str(ml_ckpt), "realnvp")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ml_ckpt.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="truncated or corrupted"):
        load_generator_weights(module.generator, str(truncated), "realnvp")


def test_residual_energy_starts_as_the_generator_density_and_keeps_its_base_frozen() -> None:
    module = _toy_module(**{"model.energy.residual": "true"})
    points = torch.randn(16, 2)
    with torch.no_grad():
        expected = module.energy.net(points) - module.generator.log_prob(points)
        assert torch.allclose(module.energy(points), expected, atol=1e-5)
    trainable = {id(p) for p in module.optimizer_settings()[0][1]}
    assert not any(id(p) in trainable for p in module.energy.base.parameters())
    base_before = [p.detach().clone() for p in module.energy.base.parameters()]
    net_before = [p.detach().clone() for p in module.energy.net.parameters()]
    _fit(module, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(base_before, module.energy.base.parameters(),
                                                  strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(net_before, module.energy.net.parameters(),
                                                      strict=True))
    assert not module.energy.base.training


def test_residual_energy_refuses_the_magnitude_penalty() -> None:
    with pytest.raises(ConfigError, match="model.energy_reg.*residual"):
        load_config([], ["model.energy.residual=true", "model.energy_reg=0.1"])


def test_energy_step_minimises_l_d_per_dimension(monkeypatch: pytest.MonkeyPatch) -> None:
    """The energy optimiser steps on L_D / D (D = 2 on toy2d) and train/loss_d logs L_D / D."""
    module = _toy_module()
    trainable = [*(p for p in module.energy.parameters() if p.requires_grad), module.log_z]
    seen: dict[str, float] = {}
    loss = objectives.discriminator_loss

    def recording(*args: Tensor) -> Tensor:
        value = loss(*args)
        grads = torch.autograd.grad(value / 2, trainable, retain_graph=True)
        seen["loss_d"] = float(value)
        seen["norm"] = float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads])))
        return value

    monkeypatch.setattr(objectives, "discriminator_loss", recording)
    trainer = _fit(module, steps=1)
    metrics = trainer.callback_metrics
    assert float(metrics["train/loss_d"]) == pytest.approx(seen["loss_d"] / 2, rel=1e-6)
    assert float(metrics["train/grad_norm_energy"]) == pytest.approx(seen["norm"], rel=1e-5)


def test_an_unconverged_log_z_optimum_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module checks dL_D/dlog Z at the optimum the solver returns; a search that stopped
    short (here: one step on separated batches) is said in a warning, not passed on silently."""
    solve = objectives.ld_optimal_log_z
    monkeypatch.setattr(objectives, "ld_optimal_log_z",
                        lambda energy, log_q, num_real: solve(energy, log_q, num_real, max_iter=0))
    pl.seed_everything(0, verbose=False)
    cfg = load_config(["configs/toy2d_adversarial.yaml"], [
        "model.generator.realnvp2d.num_couplings=2", "model.generator.realnvp2d.hidden_features=8",
        "model.energy.mlp.hidden_features=8", "model.energy.mlp.depth=1"])
    module = build_module(cfg, (2,))
    trainer = quiet_trainer(max_steps=1)
    points = sample_toy2d("ring8", 64, torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match=r"this batch's L_D-optimal log Z did not converge"):
        trainer.fit(module, DataLoader(points, batch_size=64))
