"""A deliberately limited 2-D generator: a uniform mixture of a few diagonal Gaussians."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_ebm.errors import require, require_positive_int
from lit_ebm.generators.base import Generator
from lit_ebm.registry import register


@register
class GaussianMixture2d(Generator):
    """``q(x) = (1/K) sum_k N(x; mu_k, diag(sigma_k^2))`` with learnable means and log-scales.

    Meant to have fewer components than the data has modes, so that it must choose between
    covering modes (maximum likelihood) and seeking them (adversarial training).

    Samples are reparameterised as ``x = mu_k + sigma_k * eps`` with ``k ~ Uniform{1..K}`` and
    ``eps ~ N(0, I)``: the discrete draw of ``k`` does not depend on any parameter, so
    differentiating through ``x`` gives an unbiased gradient of ``E_q[f(x)]``. The weights are
    fixed on purpose: with learnable weights ``w`` the draw ``k ~ Categorical(w)`` would carry a
    dependence on ``w`` that no path through ``x`` sees, and the pathwise gradient would be
    biased (it would need a score-function term for ``k``).

    Means start uniformly in ``[-init_scale, init_scale]^2`` (drawn from torch's global RNG, so
    ``torch.manual_seed`` fixes them) and log-scales at 0.
    """

    discrete = False

    def __init__(self, num_components: int = 4, init_scale: float = 2.0) -> None:
        super().__init__(event_shape=(2,))
        require_positive_int("num_components", num_components, "num_components=4")
        require(init_scale > 0, "init_scale", f"init_scale must be > 0, got {init_scale}")
        self.means = nn.Parameter(init_scale * (2.0 * torch.rand(num_components, 2) - 1.0))
        self.log_scales = nn.Parameter(torch.zeros(num_components, 2))

    @property
    def num_components(self) -> int:
        return len(self.means)

    def log_prob(self, x: Tensor) -> Tensor:
        standardised = (x[:, None, :] - self.means) / self.log_scales.exp()
        component_log_probs = (
            -0.5 * standardised.pow(2) - self.log_scales - 0.5 * math.log(2.0 * math.pi)
        ).sum(dim=-1)
        return torch.logsumexp(component_log_probs, dim=1) - math.log(self.num_components)

    def sample(self, num_samples: int) -> tuple[Tensor, Tensor]:
        """Reparameterised ``(x, log q(x))``; ``log q`` is evaluated on the sampling path."""
        components = torch.randint(self.num_components, (num_samples,), device=self.means.device)
        eps = torch.randn(num_samples, 2, device=self.means.device, dtype=self.means.dtype)
        x = self.means[components] + self.log_scales[components].exp() * eps
        return x, self.log_prob(x)
