"""Tests of the 2-D generators, the RealNVP2d flow and the Gaussian mixture: densities, sampling,
gradients and arguments (tests/test_flows.py checks the flow's bijection)."""

import math

import pytest
import torch

from lit_ebm.generators.base import Generator
from lit_ebm.generators.flow2d import RealNVP2d
from lit_ebm.generators.flows import standard_normal_log_prob
from lit_ebm.generators.mixture import GaussianMixture2d
from lit_ebm.toy2d import log_partition_grid


def random_flow(seed: int = 0) -> RealNVP2d:
    """A float64 flow whose zero-initialised output layers have been randomised."""
    torch.manual_seed(seed)
    flow = RealNVP2d(num_couplings=4, hidden_features=16).double()
    with torch.no_grad():
        for coupling in flow.couplings:
            coupling.conditioner[-1].weight.normal_(0.0, 0.2)
            coupling.conditioner[-1].bias.normal_(0.0, 0.2)
    return flow


def test_generators_follow_protocol():
    for generator in (RealNVP2d(), GaussianMixture2d()):
        assert isinstance(generator, Generator)
        assert generator.event_shape == (2,) and generator.num_dims == 2
        assert generator.discrete is False
        x, log_q = generator.sample(5)
        assert x.shape == (5, 2) and log_q.shape == (5,)
        assert generator.log_prob(x).shape == (5,)


def test_new_flow_is_the_identity():
    x = torch.randn(10, 2)
    flow = RealNVP2d()
    z, log_det = flow(x)
    torch.testing.assert_close(z, x)
    torch.testing.assert_close(log_det, torch.zeros(10))
    torch.testing.assert_close(flow.log_prob(x), standard_normal_log_prob(x))


def test_flow_density_integrates_to_one():
    flow = random_flow()
    log_mass = log_partition_grid(
        lambda x: -flow.log_prob(x), bound=12.0, resolution=480, dtype=torch.float64
    )
    assert log_mass == pytest.approx(0.0, abs=1e-3)


def test_flow_sample_log_q_matches_log_prob():
    flow = random_flow()
    x, log_q = flow.sample(256)
    assert x.dtype == torch.float64
    torch.testing.assert_close(log_q, flow.log_prob(x))


@pytest.mark.parametrize("make", [random_flow, lambda: GaussianMixture2d(num_components=3)])
def test_gradients_flow_through_samples_and_log_q(make):
    torch.manual_seed(0)
    generator = make()
    x, log_q = generator.sample(32)
    parameters = list(generator.parameters())
    for output in (x.square().sum(), log_q.sum()):
        grads = torch.autograd.grad(output, parameters, allow_unused=True, retain_graph=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_mixture_initialisation_is_seeded_and_within_scale():
    torch.manual_seed(7)
    first = GaussianMixture2d(num_components=5, init_scale=1.5)
    torch.manual_seed(7)
    second = GaussianMixture2d(num_components=5, init_scale=1.5)
    torch.testing.assert_close(first.means, second.means)
    assert first.means.shape == (5, 2) and first.means.abs().max() <= 1.5
    torch.testing.assert_close(first.log_scales, torch.zeros(5, 2))


def random_mixture(seed: int = 0) -> GaussianMixture2d:
    torch.manual_seed(seed)
    mixture = GaussianMixture2d(num_components=4).double()
    with torch.no_grad():
        mixture.log_scales.uniform_(-1.0, 0.5)
    return mixture


def test_mixture_density_integrates_to_one_and_matches_sample_log_q():
    mixture = random_mixture()
    log_mass = log_partition_grid(
        lambda x: -mixture.log_prob(x), bound=10.0, resolution=400, dtype=torch.float64
    )
    assert log_mass == pytest.approx(0.0, abs=1e-6)
    x, log_q = mixture.sample(256)
    torch.testing.assert_close(log_q, mixture.log_prob(x))


def test_mixture_log_prob_matches_torch_distributions():
    mixture = random_mixture()
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.zeros(4, dtype=torch.float64)),
        torch.distributions.Independent(
            torch.distributions.Normal(mixture.means, mixture.log_scales.exp()), 1
        ),
    )
    x = 3.0 * torch.randn(50, 2, dtype=torch.float64)
    torch.testing.assert_close(mixture.log_prob(x), reference.log_prob(x))


def test_mixture_sample_moments_match_parameters():
    mixture = random_mixture()
    with torch.no_grad():
        x, _ = mixture.sample(200_000)
        means, variances = mixture.means, mixture.log_scales.exp().square()
        expected_mean = means.mean(dim=0)
        outer = means[:, :, None] * means[:, None, :]
        second_moment = (torch.diag_embed(variances) + outer).mean(dim=0)
        expected_cov = second_moment - expected_mean[:, None] * expected_mean[None, :]
    torch.testing.assert_close(x.mean(dim=0), expected_mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), expected_cov, atol=0.05, rtol=0)


def test_mixture_reparameterised_gradient_is_unbiased():
    mixture = random_mixture()
    centre = torch.tensor([0.5, -1.0], dtype=torch.float64)
    x, _ = mixture.sample(400_000)
    mean_grad, log_scale_grad = torch.autograd.grad(
        (x - centre).square().sum(dim=1).mean(), [mixture.means, mixture.log_scales]
    )
    # E_q ||x - c||^2 = (1/K) sum_k (||mu_k - c||^2 + sum_d sigma_kd^2).
    k = mixture.num_components
    with torch.no_grad():
        expected_mean_grad = 2.0 * (mixture.means - centre) / k
        expected_log_scale_grad = 2.0 * mixture.log_scales.exp().square() / k
    torch.testing.assert_close(mean_grad, expected_mean_grad, atol=0.03, rtol=0)
    torch.testing.assert_close(log_scale_grad, expected_log_scale_grad, atol=0.03, rtol=0)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RealNVP2d(num_couplings=0), "num_couplings"),
        (lambda: RealNVP2d(hidden_features=0), "hidden_features"),
        (lambda: GaussianMixture2d(num_components=0), "num_components"),
        (lambda: GaussianMixture2d(init_scale=0.0), "init_scale"),
    ],
)
def test_invalid_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_mixture_log_prob_of_single_standard_component():
    torch.manual_seed(0)
    mixture = GaussianMixture2d(num_components=1)
    with torch.no_grad():
        mixture.means.zero_()
    x = torch.randn(10, 2)
    torch.testing.assert_close(mixture.log_prob(x), standard_normal_log_prob(x))
    log_density_at_origin = standard_normal_log_prob(torch.zeros(1, 2)).item()
    assert log_density_at_origin == pytest.approx(-math.log(2 * math.pi))
