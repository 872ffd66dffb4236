"""Checks that every flow layer must pass (the protocol of :mod:`lit_ebm.generators.flows`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_ebm.generators.flows import FlowLayer


def perturb(model: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Add small noise to every parameter, so the zero-initialised couplings are not identities."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.add_(std * noise)
    return model


def check_flow_layer(layer: FlowLayer, x: Tensor, tolerance: float = 1e-10) -> None:
    """``layer`` (float64) inverts exactly, its two log-determinants cancel, and its forward
    log-determinant is log|det J| of the autograd Jacobian, sample by sample."""
    assert isinstance(layer, FlowLayer)
    with torch.no_grad():
        z, forward_log_det = layer(x)
        x_back, inverse_log_det = layer.inverse(z)
    assert forward_log_det.shape == inverse_log_det.shape == (len(x),)
    assert z.shape[0] == len(x) and z[0].numel() == x[0].numel()
    # An identity would pass everything below: the layer must move its input.
    assert z.shape != x.shape or not torch.allclose(z, x)
    torch.testing.assert_close(x_back, x, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(forward_log_det + inverse_log_det,
                               torch.zeros_like(forward_log_det), rtol=0, atol=tolerance)
    for sample, expected in zip(x, forward_log_det, strict=True):
        jacobian = torch.autograd.functional.jacobian(
            lambda flat: layer(flat.reshape(1, *x.shape[1:]))[0].reshape(-1),
            sample.reshape(-1), vectorize=True)
        sign, log_abs_det = torch.linalg.slogdet(jacobian)
        assert sign != 0
        torch.testing.assert_close(log_abs_det, expected, rtol=1e-8, atol=1e-8)
