"""The "sticking the landing" generator gradient (Roeder, Wu & Duvenaud 2017):
``Generator.log_prob_at_fixed_parameters`` is log q with the parameters detached, so a
reparameterised loss differentiates only along the sampling path."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from lit_ebm.energy import ResidualEnergy
from lit_ebm.generators.base import Generator
from lit_ebm.generators.flow2d import RealNVP2d
from lit_ebm.generators.mixture import GaussianMixture2d
from lit_ebm.generators.pixelcnn import PixelCNN
from lit_ebm.generators.realnvp import RealNVP
from tests.flow_helpers import perturb

pytestmark = pytest.mark.usefixtures("single_thread")


def flow_2d() -> Generator:
    torch.manual_seed(0)
    flow = RealNVP2d(num_couplings=2, hidden_features=8).double()
    perturb(flow, std=0.3)
    return flow


def mixture_2d() -> Generator:
    torch.manual_seed(0)
    return GaussianMixture2d(num_components=3).double()


def image_flow() -> Generator:
    torch.manual_seed(0)
    flow = RealNVP((1, 4, 4), num_scales=2, num_blocks=1, hidden_channels=4).double()
    perturb(flow, std=0.05)
    return flow


class ScaledGaussian(Generator):
    """A user generator with an arbitrary ``log_prob``: a parameter used twice, and a buffer."""

    offset: Tensor

    def __init__(self) -> None:
        super().__init__(event_shape=(3,))
        self.log_scale = nn.Parameter(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))
        self.register_buffer("offset", torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64))

    def log_prob(self, x: Tensor) -> Tensor:
        z = (x - self.offset) * (-self.log_scale).exp()
        return (-0.5 * z.square() - self.log_scale - 0.5 * math.log(2 * math.pi)).sum(1)

    def sample(self, num_samples: int) -> tuple[Tensor, Tensor]:
        x = self.offset + self.log_scale.exp() * torch.randn(num_samples, 3, dtype=torch.float64)
        return x, self.log_prob(x)


CONTINUOUS: dict[str, Callable[[], Generator]] = {
    "RealNVP2d": flow_2d, "GaussianMixture2d": mixture_2d, "RealNVP": image_flow,
    "user": ScaledGaussian,
}


def parameter_grads(loss: Tensor, generator: Generator) -> list[Tensor]:
    """d loss / d parameters, with zeros for parameters that the loss does not reach."""
    return list(torch.autograd.grad(loss, list(generator.parameters()), retain_graph=True,
                                    allow_unused=True, materialize_grads=True))


@pytest.mark.parametrize("name", CONTINUOUS)
def test_value_and_gradients(name: str) -> None:
    """The value is log q(x) exactly; the gradient reaches x, equal to that of log q, and no
    parameter receives any."""
    generator = CONTINUOUS[name]()
    torch.manual_seed(1)
    with torch.no_grad():
        x = generator.sample(8)[0]
    x.requires_grad_(True)
    log_q = generator.log_prob(x)
    (expected_x_grad,) = torch.autograd.grad(log_q.sum(), x)
    stopped = generator.log_prob_at_fixed_parameters(x)
    assert torch.equal(stopped, log_q)
    stopped.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, expected_x_grad)
    assert all(param.grad is None for param in generator.parameters())
    # The parameters themselves are untouched, and still the module's own.
    assert all(isinstance(param, nn.Parameter) for param in generator.parameters())


def test_discrete_generator_gets_no_gradient() -> None:
    """For a discrete generator x has no path: the method is log q, with no gradient at all."""
    torch.manual_seed(0)
    generator = PixelCNN((1, 3, 3), channels=8, dilations=(1,))
    x, log_q = generator.sample(4)
    stopped = generator.log_prob_at_fixed_parameters(x)
    assert torch.equal(stopped, generator.log_prob(x))
    torch.testing.assert_close(stopped, log_q)
    assert not stopped.requires_grad


class ZeroNet(nn.Module):
    """f(x) = w . x + b with w = 0 and b = 0: an energy network whose output is exactly zero."""

    def __init__(self, num_dims: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_dims, 1, dtype=torch.float64)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1)).squeeze(1)


@pytest.mark.parametrize("name", ["GaussianMixture2d", "RealNVP", "RealNVP2d"])
def test_residual_loss_has_no_gradient_at_its_base(name: str) -> None:
    """With E = f - log q0, f = 0 and q = q0, L_G = mean(E(x) + log q(x)) is KL(q || q0) = 0 at
    its minimum: the sticking-the-landing gradient is zero on every batch, the ordinary pathwise
    one (log q from ``sample``) is the batch's mean score, which is not.

    Exactly zero where x enters ``log_prob`` once (the mixture, the image flow's logit). The 2-D
    flow's first coupling uses x twice, and autograd sums the four uses of x (two from each
    density) in graph order, not in cancelling pairs: there the gradient is rounding, ~1e-17.
    """
    generator = CONTINUOUS[name]()
    energy = ResidualEnergy(ZeroNet(generator.num_dims), copy.deepcopy(generator))
    for seed in range(3):
        torch.manual_seed(seed)
        x, log_q = generator.sample(32)
        e = energy(x)
        stl_grads = parameter_grads((e + generator.log_prob_at_fixed_parameters(x)).mean(),
                                    generator)
        ordinary_grads = parameter_grads((e + log_q).mean(), generator)
        ordinary_size = max(grad.abs().max() for grad in ordinary_grads)
        assert ordinary_size > 1e-3
        if name == "RealNVP2d":
            assert max(grad.abs().max() for grad in stl_grads) <= 1e-14 * ordinary_size
        else:
            assert all(torch.equal(grad, torch.zeros_like(grad)) for grad in stl_grads)
        assert all(torch.count_nonzero(grad) > 0 for grad in ordinary_grads)


def batch_gradients(generator: Generator, centre: Tensor, num_batches: int,
                    batch_size: int) -> tuple[Tensor, Tensor]:
    """Per-batch gradients ``(num_batches, num_parameters)`` of L_G = mean(E(x) + log q(x)),
    E(x) = ||x - centre||^2 / 2: sticking the landing, then ordinary, on the same batches."""
    stl: list[Tensor] = []
    ordinary: list[Tensor] = []
    for _ in range(num_batches):
        x, log_q = generator.sample(batch_size)
        e = 0.5 * (x - centre).square().sum(1)
        for loss, out in (((e + generator.log_prob_at_fixed_parameters(x)).mean(), stl),
                          ((e + log_q).mean(), ordinary)):
            out.append(torch.cat([grad.flatten() for grad in parameter_grads(loss, generator)]))
    return torch.stack(stl), torch.stack(ordinary)


@pytest.mark.parametrize("name", ["RealNVP2d", "GaussianMixture2d"])
def test_unbiased_with_lower_variance(name: str) -> None:
    """Over 400 batches of 64 the two estimators agree in mean, coordinate by coordinate, within
    the standard error of their mean difference, and sticking the landing varies less."""
    generator = CONTINUOUS[name]()
    torch.manual_seed(123)
    num_batches = 400
    stl, ordinary = batch_gradients(generator, torch.tensor([0.5, -0.25], dtype=torch.float64),
                                    num_batches, batch_size=64)
    # Both use the same batches, so the error bar of the mean difference is the paired one.
    difference = stl - ordinary
    z = difference.mean(0) / (difference.std(0) / math.sqrt(num_batches))
    assert z.abs().max() <= 4.0
    assert (z.abs() > 3.0).sum() <= 2
    stl_variance, ordinary_variance = stl.var(0).sum(), ordinary.var(0).sum()
    print(f"{name}: trace of the per-batch gradient variance: sticking the landing "
          f"{stl_variance:.4g}, ordinary {ordinary_variance:.4g}; max |z| {z.abs().max():.3g}")
    assert stl_variance < 0.9 * ordinary_variance
