"""Log-densities and energies in float32 or wider, whatever autocast the Trainer runs under.

Discriminator logits are differences of log-densities of thousands of nats, where float16's
spacing is 2 nats and bfloat16's 16 (docs/mathematics.md, "Precision"). A network runs under
the Trainer's autocast only if its class declares ``autocast_safe = True``, a promise that its
outputs are computed in float32 whatever precision its layers use. The shipped networks keep
that promise the same way: their hidden layers run in the run's precision (bf16 under
``bf16-mixed``), their output layer runs in float32 (:func:`float32_layer`), and everything
after it (a flow's affine maps, log-determinants and sums over dimensions, the PixelCNN's
log-softmax, an energy's scalar) is float32 arithmetic. Every other network, any network of
your own that makes no such promise, is evaluated with autocast disabled, in its parameters'
precision. Outputs are promoted to at least float32 either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


def at_least_float32(value: Tensor) -> Tensor:
    """``value`` promoted to float32 if it is narrower (float64 stays float64)."""
    return value.to(torch.promote_types(value.dtype, torch.float32))


def float32_layer(layer: nn.Module, h: Tensor) -> Tensor:
    """``layer(h)`` with autocast disabled on ``h``'s device, ``h`` promoted to at least
    float32: the output layer of an autocast-safe network."""
    with torch.autocast(h.device.type, enabled=False):
        return layer(at_least_float32(h))


def bf16_supported(device_type: str) -> bool:
    """Whether ``device_type`` computes bf16 natively (a CPU with AVX-512 BF16 or AMX, a GPU
    that torch reports bf16 support for): where ``bf16-mixed`` can pay. Elsewhere bf16 is
    emulated and slower than float32."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def autocast_safe(network: nn.Module) -> bool:
    """Whether ``network`` declares float32 outputs under autocast (``autocast_safe = True``)."""
    return bool(getattr(network, "autocast_safe", False))


@contextmanager
def density_precision(network: nn.Module, device_type: str) -> Iterator[None]:
    """The block as it is for an autocast-safe ``network``; with autocast disabled on
    ``device_type`` for any other."""
    if autocast_safe(network):
        yield
    else:
        with torch.autocast(device_type, enabled=False):
            yield


def density_call(network: nn.Module, device_type: str, method: Callable[..., Any],
                 *args: Any, **kwargs: Any) -> Any:
    """``method(*args, **kwargs)``, a method of ``network`` returning a tensor or a tuple of
    tensors, under :func:`density_precision`, with floating outputs at least float32."""
    with density_precision(network, device_type):
        out = method(*args, **kwargs)
    if isinstance(out, tuple):
        return tuple(at_least_float32(o) if o.is_floating_point() else o for o in out)
    return at_least_float32(out)
