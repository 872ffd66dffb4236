"""Tests of the multi-scale RealNVP generator: its density, sampling and arguments. The shared
flow-layer check (tests/test_flows.py) covers the exactness of its bijection on small images."""

from __future__ import annotations

import math

import pytest
import torch

from lit_ebm.errors import InvalidArgument
from lit_ebm.generators.realnvp import RealNVP
from tests.flow_helpers import perturb

SMALL = {"num_blocks": 1, "hidden_channels": 8}


def make_flow(image_shape: tuple[int, int, int], num_scales: int, double: bool = False) -> RealNVP:
    torch.manual_seed(0)
    flow = perturb(RealNVP(image_shape, num_scales=num_scales, **SMALL))
    return flow.double() if double else flow


def images(image_shape: tuple[int, ...], batch: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.rand(batch, *image_shape, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize(
    ("image_shape", "num_scales"), [((1, 28, 28), 1), ((1, 28, 28), 3), ((3, 32, 32), 2)]
)
def test_full_size_round_trip_in_float32(image_shape, num_scales):
    flow = make_flow(image_shape, num_scales)
    x = images(image_shape, 2, torch.float32)
    with torch.no_grad():
        z, log_det_enc = flow(x)
        x_back, log_det_dec = flow.inverse(z)
    assert z.shape == (2, math.prod(image_shape))
    # The perturbation must make the couplings non-trivial for this test to mean anything.
    assert log_det_enc.abs().min() > 1.0
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(log_det_enc + log_det_dec, torch.zeros(2), atol=1e-3, rtol=0)


def test_fresh_couplings_are_identities():
    flow = RealNVP((1, 4, 4), num_scales=2, **SMALL).double()
    x = images((1, 4, 4), 3, torch.float64)
    alpha = flow.logit_alpha
    y = alpha + (1 - 2 * alpha) * x
    expected = 16 * math.log(1 - 2 * alpha) - torch.log(y * (1 - y)).flatten(1).sum(1)
    _, log_det = flow(x)
    torch.testing.assert_close(log_det.detach(), expected, rtol=1e-12, atol=1e-10)


def test_sample_log_q_equals_log_prob():
    flow = make_flow((1, 4, 4), 2, double=True)
    torch.manual_seed(2)
    x, log_q = flow.sample(5)
    assert x.shape == (5, 1, 4, 4) and log_q.shape == (5,)
    assert x.dtype == log_q.dtype == torch.float64
    torch.testing.assert_close(log_q, flow.log_prob(x), rtol=1e-10, atol=1e-9)


def test_sample_is_reparameterised():
    flow = make_flow((1, 8, 8), 2)
    x, log_q = flow.sample(4)
    params = list(flow.parameters())
    for output in (x.square().sum(), log_q.sum()):
        grads = torch.autograd.grad(output, params, retain_graph=True, allow_unused=True)
        missing = [
            p.shape
            for p, g in zip(params, grads, strict=True)
            if g is None or not g.abs().sum() > 0
        ]
        assert not missing, f"parameters without gradient: {missing}"


def test_log_prob_is_batch_independent_and_mode_independent():
    flow = make_flow((1, 8, 8), 2, double=True)
    x = images((1, 8, 8), 4, torch.float64)
    flow.train()
    batched = flow.log_prob(x)
    alone = torch.cat([flow.log_prob(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(alone, batched, rtol=1e-12, atol=1e-10)
    flow.eval()
    assert torch.equal(flow.log_prob(x), batched)


def test_log_prob_normalises_on_the_unit_interval():
    # One pixel, identity couplings: q is the pushforward of N(0, 1) under the preprocessing
    # inverse, so its integral over (-a/(1-2a), 1+a/(1-2a)) is 1.
    flow = RealNVP((1, 1, 1), num_scales=1, **SMALL).double()
    alpha = flow.logit_alpha
    low, high = -alpha / (1 - 2 * alpha), 1 + alpha / (1 - 2 * alpha)
    grid = torch.linspace(low, high, 20_001, dtype=torch.float64)[1:-1]
    with torch.no_grad():
        density = flow.log_prob(grid.reshape(-1, 1, 1, 1)).exp()
    integral = torch.trapezoid(density, grid)
    assert abs(integral.item() - 1.0) < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_shape": (28, 28)}, r"image_shape must be \(C, H, W\)"),
        ({"image_shape": (0, 28, 28)}, "image_shape must be a positive integer, got 0"),
        ({"num_scales": 0}, "num_scales must be a positive integer, got 0"),
        ({"num_scales": 4}, r"divisible by 8\); use num_scales <= 3"),
        ({"num_blocks": 0}, "num_blocks must be a positive integer, got 0"),
        ({"hidden_channels": 2.5}, "hidden_channels must be a positive integer, got 2.5"),
        ({"logit_alpha": 0.5}, r"logit_alpha must satisfy 0 < logit_alpha < 0.5, got 0.5"),
        ({"logit_alpha": 0.0}, "logit_alpha=0.05"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    arguments = {"image_shape": (1, 28, 28), **kwargs}
    with pytest.raises(InvalidArgument, match=match) as info:
        RealNVP(**arguments)
    assert info.value.argument == next(iter(kwargs)), "names the argument for the config key"


def test_wrong_input_shape_raises():
    flow = RealNVP((1, 4, 4), num_scales=2, **SMALL)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 4, 4\)"):
        flow.log_prob(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"expected latents of shape \(B, 16\)"):
        flow.inverse(torch.zeros(2, 15))


def test_samples_with_saturated_logits_keep_a_finite_density() -> None:
    flow = RealNVP((1, 4, 4), num_scales=1, num_blocks=1, hidden_channels=4)
    s = torch.full((2, 1, 4, 4), 40.0)  # sigmoid(40) rounds to 1 in float32
    s[1] = -40.0
    x, _ = flow.logit.inverse(s)
    assert torch.isfinite(flow.log_prob(x)).all()
