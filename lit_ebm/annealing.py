"""Annealed importance sampling of an EBM's partition function over a flow (Neal 2001), the
log Z estimate :func:`lit_ebm.evaluation.ebm.estimate_log_z_annealed` reports (docs/mathematics.md,
"Annealed importance sampling")."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_ebm.generators.base import Generator
from lit_ebm.generators.flows import standard_normal_log_prob
from lit_ebm.mcmc import LogDensityAndGradient, evaluate_state, mala_step
from lit_ebm.sampling import latent_target


def _known(log_density: Tensor, grad: Tensor) -> LogDensityAndGradient:
    """A target that returns values already computed, to make a state of them."""
    return lambda _: (log_density, grad)


@torch.no_grad()
def annealed_log_weights(generator: Generator, energy: nn.Module, num_chains: int,
                         temperatures: int, step_size: float) -> tuple[Tensor, float]:
    """Annealed importance sampling of the EBM's Z over a flow (Neal 2001, "Annealed importance
    sampling", Statist. Comput. 11): ``num_chains`` log-weights whose exp has mean Z exactly, and
    the MALA acceptance rate along the way.

    In the flow's latent (:func:`latent_target`) the EBM is pi_1(z) = N(z) exp(l(z)) with
    l = log pi_1 - log N, whose normaliser is Z itself: the change of variables keeps mass, and for
    a residual energy l(z) = -f(g0(z)). The path pi_b(z) = N(z) exp(b l(z)) runs from the
    normalised N(0, I) at b = 0 to pi_1 at b = 1 over ``temperatures`` equal steps. Each chain
    starts at z_0 ~ N(0, I) (x ~ the flow's density) and, for k = 1..K, adds
    (b_k - b_{k-1}) l(z_{k-1}) to its log-weight, then makes one MALA transition (step size
    ``step_size``, fixed) that leaves pi_{b_k} invariant. E[exp(log-weight)] = Z for any K and
    any mixing; more temperatures only shrink the weights' spread. K = 1 is importance sampling
    from the flow's own density."""
    flow, target = latent_target(generator, energy)
    last: dict[str, Tensor] = {}

    def ratio(z: Tensor) -> tuple[Tensor, Tensor]:  # l(z) and its gradient, remembered
        value, grad = target(z)
        last["log_ratio"], last["grad"] = value - standard_normal_log_prob(z), grad + z
        return last["log_ratio"], last["grad"]

    def tempered_at(beta: float) -> LogDensityAndGradient:
        def tempered(z: Tensor) -> tuple[Tensor, Tensor]:
            value, grad = ratio(z)
            return standard_normal_log_prob(z) + beta * value, beta * grad - z
        return tempered

    z = torch.randn(num_chains, flow.num_dims, device=flow.device,
                    dtype=next(flow.parameters()).dtype)
    log_ratio, grad = ratio(z)
    log_weights = torch.zeros(num_chains, dtype=torch.float64, device=z.device)
    accepted = 0
    for k in range(1, temperatures + 1):
        log_weights += log_ratio.double() / temperatures
        if k == temperatures:
            break  # a last transition would change no weight
        beta = k / temperatures
        state = evaluate_state(z, _known(standard_normal_log_prob(z) + beta * log_ratio,
                                         beta * grad - z))
        state, _, moved = mala_step(state, tempered_at(beta), step_size, torch.randn_like(z),
                                    torch.rand_like(log_ratio))
        z = state.z
        log_ratio = torch.where(moved, last["log_ratio"], log_ratio)
        grad = torch.where(moved[:, None], last["grad"], grad)
        accepted += int(moved.sum())
    log_weights = torch.where(torch.isfinite(log_weights), log_weights, -math.inf)
    return log_weights.cpu(), accepted / max(1, num_chains * (temperatures - 1))
