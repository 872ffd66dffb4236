"""One check applied to every flow layer: exact inverse, cancelling log-determinants, and the
forward log-determinant against the autograd Jacobian (float64, small shapes)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from lit_ebm.generators.flow2d import AffineCoupling2d, RealNVP2d
from lit_ebm.generators.flows import (
    FlowLayer,
    LogitTransform,
    MaskedAffineCoupling,
    Squeeze,
    standard_normal_log_prob,
)
from lit_ebm.generators.realnvp import (
    RealNVP,
    _AffineCoupling,
    _channel_mask,
    _checkerboard,
    _Scale,
)
from tests.flow_helpers import check_flow_layer, perturb

SMALL = {"num_blocks": 1, "hidden_channels": 8}


def normal(*shape: int) -> Tensor:
    return torch.randn(2, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def unit(*shape: int) -> Tensor:
    return torch.rand(2, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# id: (the layer, a batch of two inputs in its domain)
LAYERS: dict[str, tuple[Callable[[], FlowLayer], Callable[[], Tensor]]] = {
    "checkerboard-coupling": (lambda: _AffineCoupling(_checkerboard(4, 4, 0), 1, **SMALL),
                              lambda: normal(1, 4, 4)),
    "checkerboard-coupling-odd": (lambda: _AffineCoupling(_checkerboard(4, 4, 1), 2, **SMALL),
                                  lambda: normal(2, 4, 4)),
    "channel-coupling": (lambda: _AffineCoupling(_channel_mask(4, 0), 4, **SMALL),
                         lambda: normal(4, 2, 2)),
    "channel-coupling-odd": (lambda: _AffineCoupling(_channel_mask(4, 1), 4, **SMALL),
                             lambda: normal(4, 2, 2)),
    "squeeze": (Squeeze, lambda: normal(2, 4, 4)),
    "logit": (lambda: LogitTransform(0.05), lambda: unit(1, 4, 4)),
    "coupling-2d": (lambda: AffineCoupling2d(0, 16), lambda: normal(2)),
    "coupling-2d-odd": (lambda: AffineCoupling2d(1, 16), lambda: normal(2)),
    "scale": (lambda: _Scale((1, 4, 4), False, **SMALL), lambda: normal(1, 4, 4)),
    "last-scale": (lambda: _Scale((2, 4, 4), True, **SMALL), lambda: normal(2, 4, 4)),
    "realnvp2d": (lambda: RealNVP2d(num_couplings=4, hidden_features=16), lambda: normal(2)),
    "realnvp-1-scale": (lambda: RealNVP((1, 4, 4), num_scales=1, **SMALL),
                        lambda: unit(1, 4, 4)),
    "realnvp-2-scales": (lambda: RealNVP((1, 4, 4), num_scales=2, **SMALL),
                         lambda: unit(1, 4, 4)),
    "realnvp-2-scales-2-channels": (lambda: RealNVP((2, 4, 4), num_scales=2, **SMALL),
                                    lambda: unit(2, 4, 4)),
    "realnvp-3-scales": (lambda: RealNVP((1, 8, 8), num_scales=3, **SMALL),
                         lambda: unit(1, 8, 8)),
}


def make_layer(name: str) -> FlowLayer:
    torch.manual_seed(0)
    return perturb(LAYERS[name][0]().double(), std=0.1)


@pytest.mark.parametrize("name", list(LAYERS))
def test_flow_layer_inverts_with_the_autograd_log_det(name: str) -> None:
    check_flow_layer(make_layer(name), LAYERS[name][1]())


@pytest.mark.parametrize("name", [name for name in LAYERS if "coupling" in name])
def test_coupling_passes_its_conditioning_entries_through(name: str) -> None:
    coupling = make_layer(name)
    assert isinstance(coupling, MaskedAffineCoupling)
    x = LAYERS[name][1]()
    with torch.no_grad():
        z, _ = coupling(x)
    torch.testing.assert_close(z * coupling.mask, x * coupling.mask, rtol=0, atol=0)
    assert not torch.allclose(z * coupling.free, x * coupling.free)


def test_standard_normal_log_prob_sums_over_all_but_the_batch() -> None:
    z = normal(3, 2, 2)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(dim=(1, 2, 3))
    torch.testing.assert_close(standard_normal_log_prob(z), expected)
