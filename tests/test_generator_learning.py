"""The adversarial module's means of making the generator learn: an energy that starts at
zero, log Z held at the discriminator's optimum, sticking the landing, the R1 penalty, the
generator objectives, and what is logged about them."""

from __future__ import annotations

import copy
from dataclasses import asdict

import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lit_ebm import objectives
from lit_ebm.build import build_energy, build_module
from lit_ebm.config import load_config
from lit_ebm.energy import ConvEnergy, MLPEnergy, ResidualEnergy
from lit_ebm.generators import RealNVP, RealNVP2d
from lit_ebm.modules import AdversarialEBM
from lit_ebm.modules.training_stats import discriminator_stats, generator_stats
from lit_ebm.toy2d import sample_toy2d
from tests.flow_helpers import perturb
from tests.tiny import quiet_trainer

TOY = ["data.name=toy2d", "model.objective=adversarial", "model.generator.name=realnvp2d",
       "model.energy.name=mlp", "model.generator.realnvp2d.num_couplings=2",
       "model.generator.realnvp2d.hidden_features=16", "model.energy.mlp.hidden_features=16",
       "model.energy.mlp.depth=2"]


def toy_module(*overrides: str) -> AdversarialEBM:
    return build_module(load_config([], [*TOY, *overrides]), (2,))  # type: ignore[return-value]


def fit(module: AdversarialEBM, steps: int, batch_size: int = 32) -> None:
    data = sample_toy2d("ring8", batch_size * steps, torch.Generator().manual_seed(0))
    quiet_trainer(max_epochs=1).fit(module, DataLoader(data, batch_size=batch_size))


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_a_zero_initialised_residual_energy_is_exactly_its_base(spectral_norm: bool) -> None:
    torch.manual_seed(0)
    flow = perturb(RealNVP((1, 8, 8), num_scales=1, num_blocks=1, hidden_channels=4))
    net = ConvEnergy((1, 8, 8), channels=4, depth=2, spectral_norm=spectral_norm, zero_init=True)
    energy = ResidualEnergy(net, copy.deepcopy(flow))
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(energy(x), -flow.log_prob(x))
    random_start = ConvEnergy((1, 8, 8), channels=4, depth=2, spectral_norm=spectral_norm)
    assert not torch.equal(random_start(x), torch.zeros(5))
    mlp = MLPEnergy(2, hidden_features=8, depth=2, confinement=0.1, zero_init=True)
    points = torch.randn(4, 2)
    assert torch.equal(mlp(points), 0.1 * points.pow(2).sum(1))


def test_log_z_tracking_keeps_the_energy_step_at_the_optimum_in_log_z() -> None:
    """With log_z_tracking = 1 the L_D gradient in log Z vanishes at every energy step (fact 1);
    with log Z left to Adam it does not."""
    gradients: dict[float, list[float]] = {}
    for tracking in (1.0, 0.0):
        torch.manual_seed(0)
        module = toy_module(f"model.log_z_tracking={tracking}", "model.energy_optim.lr=0.01")
        seen = gradients.setdefault(tracking, [])
        original = module.clip

        def record(optimizer, *args, module=module, seen=seen, original=original) -> None:
            if module.log_z.grad is not None and any(
                    p is module.log_z for g in optimizer.param_groups for p in g["params"]):
                seen.append(abs(float(module.log_z.grad)))
            original(optimizer, *args)

        module.clip = record  # type: ignore[method-assign]
        fit(module, steps=6)
    assert len(gradients[1.0]) == 6 and max(gradients[1.0]) < 1e-5
    assert max(gradients[0.0][1:]) > 1e-3


class ZeroNet(torch.nn.Module):
    """f = 0 for every input."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1).sum(1) * 0.0


def test_sticking_the_landing_gives_a_zero_generator_gradient_at_the_base() -> None:
    """q = q_init and f = 0: the generator's true gradient is 0; sticking the landing gives
    exactly 0 on every batch, the plain pathwise estimator does not."""
    for stl in (True, False):
        torch.manual_seed(0)
        generator = perturb(RealNVP((1, 4, 4), num_scales=2, num_blocks=1, hidden_channels=4))
        module = AdversarialEBM(generator, ResidualEnergy(ZeroNet(), copy.deepcopy(generator)),
                                sticking_the_landing=stl)
        params = list(module.generator.parameters())
        for _ in range(3):
            fake = module.generate(64, keep_graph=True)
            surrogate, _ = module.generator_loss(fake, torch.rand(64, 1, 4, 4))
            grads = torch.autograd.grad(surrogate, params)
            total = sum(float(g.abs().sum()) for g in grads)
            assert (total == 0.0) == stl, (stl, total)


def test_hybrid_at_zero_weight_is_the_reverse_kl_and_forward_kl_trains() -> None:
    torch.manual_seed(0)
    module = toy_module("model.generator_objective=hybrid", "model.nll_weight=0.0")
    x_real = sample_toy2d("ring8", 32, torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    hybrid, value = module.generator_loss(module.generate(32, keep_graph=True), x_real)
    module.generator_objective = "reverse_kl"
    torch.manual_seed(3)
    reverse, reverse_value = module.generator_loss(module.generate(32, keep_graph=True), x_real)
    assert torch.equal(hybrid, reverse) and torch.equal(value, reverse_value)
    module.nll_weight, module.generator_objective = 2.0, "hybrid"
    torch.manual_seed(3)
    weighted, _ = module.generator_loss(module.generate(32, keep_graph=True), x_real)
    nll = -module.generator.log_prob(x_real).mean()
    assert torch.allclose(weighted, reverse + 2.0 * nll)
    forward = toy_module("model.generator_objective=forward_kl")
    before = [p.detach().clone() for p in forward.generator.parameters()]
    fit(forward, steps=3)
    assert any(not torch.equal(a, b) for a, b in zip(before, forward.generator.parameters(),
                                                      strict=True))


def test_r1_penalty_reaches_the_energy_only_when_on() -> None:
    x_real = sample_toy2d("ring8", 32, torch.Generator().manual_seed(1))
    off = toy_module("model.r1_gamma=0.0")
    grad_real, grad_fake = off.energy_input_gradients(x_real, torch.randn(32, 2))
    assert grad_real.grad_fn is None and grad_fake.grad_fn is None  # no graph kept when off
    on = toy_module("model.r1_gamma=10.0")
    grad_real, _ = on.energy_input_gradients(x_real, torch.randn(32, 2))
    penalty = on.r1_gamma * objectives.r1_penalty(grad_real)
    first = next(on.energy.parameters())
    assert float(torch.autograd.grad(penalty, first)[0].abs().sum()) > 0
    expected = 0.5 * grad_real.detach().square().sum(1).mean()
    assert torch.allclose(objectives.r1_penalty(grad_real.detach()), expected)


def test_generator_stats_measure_the_drift_from_q_init_and_the_range() -> None:
    x = torch.tensor([[[[-0.01, 0.5], [0.99, 1.0]]]])
    stats = generator_stats(x, torch.tensor([2.0]), torch.tensor([0.5]), continuous_images=True)
    assert float(stats["kl_q_q_init"]) == 1.5
    assert float(stats["out_of_range"]) == 0.5
    assert generator_stats(x, torch.tensor([2.0]), None, continuous_images=False) == {}


def test_the_weights_effective_sample_size_runs_from_one_to_the_batch() -> None:
    zeros, log_q = torch.zeros(4), torch.tensor([-1.0, -2.0, -3.0, -4.0])
    even = discriminator_stats(zeros, -log_q, zeros, log_q, torch.tensor(0.0))  # -E - log q = 0
    assert abs(float(even["ess_q"]) - 4.0) < 1e-6
    one = discriminator_stats(zeros, torch.tensor([0.0, 50.0, 50.0, 50.0]), zeros, zeros,
                              torch.tensor(0.0))
    assert abs(float(one["ess_q"]) - 1.0) < 1e-6


def test_the_discriminator_accuracy_counts_each_batch_by_the_sign_of_its_logits() -> None:
    """With log q = 0 and log Z = 0 the logits are -E: 3 of 4 data above 0, 1 of 2 fakes below."""
    stats = discriminator_stats(torch.tensor([-1.0, 1.0, -2.0, -3.0]), torch.tensor([1.0, -1.0]),
                                torch.zeros(4), torch.zeros(2), torch.tensor(0.0))
    assert stats["d_acc_real"].item() == 0.75 and stats["d_acc_fake"].item() == 0.5


def test_the_builder_passes_every_generator_setting(tmp_path) -> None:
    module = toy_module("model.r1_gamma=2.0", "model.log_z_tracking=0.5",
                        "model.generator_objective=forward_kl", "model.nll_weight=3.0",
                        "model.sticking_the_landing=true", "model.energy.mlp.zero_init=true",
                        "model.generated_batch_size=5")
    assert (module.r1_gamma, module.log_z_tracking, module.generator_objective,
            module.nll_weight, module.sticking_the_landing,
            module.generated_batch_size) == (2.0, 0.5, "forward_kl", 3.0, True, 5)
    assert torch.equal(module.energy(torch.zeros(3, 2)), torch.zeros(3))
    cfg = load_config([], TOY)
    generator = RealNVP2d(num_couplings=2, hidden_features=8)
    plain = AdversarialEBM(generator, build_energy(cfg.model.energy, (2,), generator),
                           generator_optim=asdict(cfg.model.generator_optim))
    assert plain.generator_objective == "reverse_kl" and plain.log_z_tracking == 0.0
