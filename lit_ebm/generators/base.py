"""The generator protocol: a sampler whose density can be evaluated where the energy looks."""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lit_ebm.errors import NonFiniteSamplesError, require


def bits_per_dim(log_q: Tensor, num_dims: int, discrete: bool) -> Tensor:
    """Bits per dimension of 8-bit data from log-densities in the energy's input space.

    Continuous models see x = (k + u) / 256 in [0, 1]^D, so the density of the discrete
    image k is approximated by q(x) / 256^D: bpd = (-log q(x) + D log 256) / (D ln 2).
    Discrete models give the probability mass of k directly: bpd = -log q(k) / (D ln 2).
    """
    nats = -log_q
    if not discrete:
        nats = nats + num_dims * math.log(256.0)
    return nats / (num_dims * math.log(2.0))


def check_temperature(temperature: float) -> None:
    """Refuse a sampling temperature that is not a finite positive number."""
    require(isinstance(temperature, int | float) and math.isfinite(temperature)
            and temperature > 0, "temperature", f"temperature must be a finite positive number, "
            f"got {temperature!r}; pass e.g. temperature=0.9 (1 samples the model itself)")


def sampler_at(generator: Generator, temperature: float) -> Callable[[int],
                                                                      tuple[Tensor, Tensor]]:
    """``n -> (x, log_q)``: ``generator``'s draws at ``temperature`` T (flows: latent
    N(0, T^2 I); PixelCNN: logits / T), the baseline that trades recall for precision. T = 1
    needs nothing of the generator; another T needs a ``sample`` that takes ``temperature``."""
    if temperature == 1.0:
        return generator.sample
    require("temperature" in inspect.signature(generator.sample).parameters, "temperature",
            f"{type(generator).__name__}.sample takes no temperature: leave it at 1")
    return partial(generator.sample, temperature=temperature)  # type: ignore[call-arg]


def to_levels(x: Tensor, discrete: bool) -> Tensor:
    """The 8-bit images (uint8 levels k) that samples in the energy's input space stand for.

    Discrete models give k / 255, so k = round(255 x); continuous ones give x = (k + u) / 256,
    so k = floor(256 x), clamped to [0, 255] (flow samples may overshoot the unit interval).
    """
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteSamplesError(
            f"{int((~torch.isfinite(x)).sum())} of {x.numel()} sample values are NaN or infinite: "
            "the generator's weights or its input are not finite")
    levels = torch.round(x * 255) if discrete else torch.floor(x * 256)
    return levels.clamp(0, 255).to(torch.uint8)


class Generator(nn.Module, ABC):
    """A generator q whose log-density is exact and lives in the energy's input space.

    Subclasses set ``discrete``: ``False`` means ``sample`` is reparameterised (gradients flow
    through the samples and their log-density), ``True`` means samples are discrete and the
    generator is trained with the score-function estimator.
    """

    discrete: bool = False

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)

    @property
    def num_dims(self) -> int:
        """Number of scalar dimensions D of one sample."""
        return math.prod(self.event_shape)

    @abstractmethod
    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log q(x) of a batch ``x`` of shape ``(B, *event_shape)``; returns ``(B,)``."""

    @abstractmethod
    def sample(self, num_samples: int) -> tuple[Tensor, Tensor]:
        """Draw ``(x, log_q)`` with ``x`` of shape ``(n, *event_shape)`` and ``log_q`` of ``(n,)``.

        For continuous generators both outputs carry gradients to the parameters.
        """

    def log_prob_at_fixed_parameters(self, x: Tensor) -> Tensor:
        """``log q(x)`` with every parameter detached: gradients reach ``x``, never the parameters.

        The "sticking the landing" estimator (Roeder, Wu & Duvenaud 2017). For a reparameterised
        sample x = g(z) the total derivative of log q(g(z)) in the parameters is the path term
        grad_x log q(x) . dx/dparams plus the score, the derivative of log q at fixed x. The score
        has mean zero under q (E_q[grad log q] = grad of the integral of q = 0), so dropping it
        leaves the gradient of E_q[E(x) + log q(x)] unbiased, and its variance vanishes where
        q matches the target. Meant for continuous (reparameterised) generators; for discrete
        ones x has no path to the parameters and this is log q with no parameter gradient.
        """
        params = {f"generator.{name}": param.detach() for name, param in self.named_parameters()}
        buffers = {f"generator.{name}": buffer for name, buffer in self.named_buffers()}
        return functional_call(_LogProb(self), {**params, **buffers}, (x,))

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """Bits per dimension of each image in ``x`` (see :func:`bits_per_dim`)."""
        return bits_per_dim(self.log_prob(x), self.num_dims, self.discrete)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class _LogProb(nn.Module):
    """``generator.log_prob`` as a module's ``forward``, so that ``functional_call`` can run it."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return self.generator.log_prob(x)
