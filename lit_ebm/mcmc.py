"""Markov chain mathematics on batches of independent chains, as pure functions.

Every function here acts on a batch of chains at once, each chain deciding its own move, and
takes its randomness as arguments (Gaussian noise, uniforms), so that a transition is a
deterministic function of what it is given. :mod:`lit_ebm.sampling` applies them to an EBM
(docs/mathematics.md, "Sampling the EBM").

A log-density or log-weight that is not finite (NaN, +-inf) counts as impossible: a proposal
there is rejected, a chain that starts there leaves at its first finite proposal, and
resampling never picks it while its group holds a finite one. Chains so stay at finite states.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

LogDensityAndGradient = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``z (B, D) -> (log pi(z) (B,), grad_z log pi(z) (B, D))``, log pi up to a constant."""


@dataclass
class ChainState:
    """States ``z (B, D)`` of B chains, with log pi(z) ``(B,)`` and its gradient ``(B, D)``."""

    z: Tensor
    log_density: Tensor
    grad: Tensor


def evaluate_state(z: Tensor, log_density_and_grad: LogDensityAndGradient) -> ChainState:
    """The state at ``z``, with log pi = -inf and a zero gradient where either is not finite."""
    log_density, grad = log_density_and_grad(z)
    finite = torch.isfinite(log_density) & torch.isfinite(grad).all(dim=1)
    return ChainState(z, torch.where(finite, log_density, -math.inf),
                      torch.where(finite[:, None], grad, 0.0))


def langevin_log_kernel(z_to: Tensor, z_from: Tensor, grad_from: Tensor,
                        step_size: float) -> Tensor:
    """log k(z_to | z_from) of the Langevin proposal N(z_from + (h^2 / 2) grad_from, h^2 I), up to
    the normalising constant, which is the same in both directions and cancels in MALA's ratio:
    -||z_to - z_from - (h^2 / 2) grad_from||^2 / (2 h^2). One Euler-Maruyama step of the
    Langevin diffusion dz = (1/2) grad log pi(z) dt + dW with dt = h^2 (Roberts & Tweedie
    1996, "Exponential convergence of Langevin distributions and their discrete
    approximations", Bernoulli 2(4))."""
    drift = z_from + 0.5 * step_size**2 * grad_from
    return -(z_to - drift).square().sum(dim=1) / (2.0 * step_size**2)


def mala_step(state: ChainState, log_density_and_grad: LogDensityAndGradient, step_size: float,
              noise: Tensor, uniform: Tensor) -> tuple[ChainState, Tensor, Tensor]:
    """One Metropolis-adjusted Langevin transition of every chain (Roberts & Tweedie 1996).

    Propose z' = z + (h^2 / 2) grad log pi(z) + h ``noise`` (``noise`` ~ N(0, I)) and accept it
    with probability alpha = min(1, pi(z') k(z | z') / (pi(z) k(z' | z))), i.e. where
    ``uniform`` (U[0, 1)) < alpha. The Metropolis-Hastings correction makes pi exactly
    invariant whatever h: the kernel satisfies detailed balance
    pi(z) k(z' | z) alpha(z, z') = pi(z') k(z | z') alpha(z', z).

    Returns the new states, alpha ``(B,)`` and which chains moved ``(B,)``.
    """
    proposal = evaluate_state(
        state.z + 0.5 * step_size**2 * state.grad + step_size * noise, log_density_and_grad)
    log_alpha = (proposal.log_density
                 + langevin_log_kernel(state.z, proposal.z, proposal.grad, step_size)
                 - state.log_density
                 - langevin_log_kernel(proposal.z, state.z, state.grad, step_size))
    log_alpha = torch.nan_to_num(log_alpha.clamp(max=0.0), nan=-math.inf)  # -inf - -inf: stay
    accepted = torch.isfinite(proposal.log_density) & (uniform.log() < log_alpha)
    moved = accepted[:, None]
    new = ChainState(torch.where(moved, proposal.z, state.z),
                     torch.where(accepted, proposal.log_density, state.log_density),
                     torch.where(moved, proposal.grad, state.grad))
    return new, log_alpha.exp(), accepted


def imh_accept(log_weight: Tensor, proposed_log_weight: Tensor, uniform: Tensor) -> Tensor:
    """Which chains of an independence Metropolis-Hastings sampler move (Tierney 1994, "Markov
    chains for exploring posterior distributions", Ann. Statist. 22(4)).

    With proposals x' ~ q drawn independently of the current state x and importance weights
    w = pi / q, accept where ``uniform`` (U[0, 1)) < min(1, w(x') / w(x)); pi is invariant, and
    only ratios of weights enter, so pi need not be normalised. Log-weights ``(B,)``.
    """
    stuck = ~torch.isfinite(log_weight)  # an impossible state: any finite proposal is taken
    return torch.isfinite(proposed_log_weight) & (
        stuck | (uniform.log() < proposed_log_weight - log_weight))


def sampling_importance_resampling(log_weights: Tensor,
                                   generator: torch.Generator | None = None) -> Tensor:
    """Pick one candidate per row of ``log_weights`` ``(N, M)`` with probability proportional to
    exp(log_weights); returns the picked column of each row, ``(N,)`` (Rubin 1988).

    With log_weights = -E(x) - log q(x) for M candidates x ~ q, the picks approach samples of
    p = exp(-E) / Z as M grows; at M = 1 they are the generator's samples. Non-finite weights
    count as zero; a row with no finite weight keeps its first candidate.
    """
    if log_weights.ndim != 2:
        raise ValueError(f"expected log-weights of shape (N, M), got {tuple(log_weights.shape)}")
    log_w = log_weights.detach().double()
    finite = torch.isfinite(log_w)
    log_w = torch.where(finite, log_w, -math.inf)
    log_w[~finite.any(dim=1), 0] = 0.0
    probabilities = torch.softmax(log_w, dim=1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)


def imh_over_candidates(log_weights: Tensor, uniform: Tensor) -> tuple[Tensor, Tensor]:
    """Independence Metropolis-Hastings along each row of ``log_weights`` ``(B, M)``: a chain
    starts at the row's first candidate and is offered the others in turn (:func:`imh_accept`,
    ``uniform`` ``(B, M - 1)``). Returns where each chain ends ``(B,)`` and how many of its
    M - 1 proposals it accepted ``(B,)``. Candidates drawn i.i.d. from the proposal make this
    the IMH chain itself, so the same draws serve sampling-importance-resampling too."""
    current, index = log_weights[:, 0], torch.zeros_like(log_weights[:, 0], dtype=torch.long)
    accepted = torch.zeros_like(index)
    for j in range(1, log_weights.shape[1]):
        move = imh_accept(current, log_weights[:, j], uniform[:, j - 1])
        current = torch.where(move, log_weights[:, j], current)
        index = torch.where(move, j, index)
        accepted += move.long()
    return index, accepted


def adapt_log_step_size(log_step_size: float, acceptance: float, target: float,
                        iteration: int, decay: float = 0.6) -> float:
    """One Robbins-Monro step on the log step size toward an acceptance rate of ``target``:
    log h <- log h + (t + 1)^(-decay) (acceptance - target), at iteration t = 0, 1, ...

    The gains sum to infinity and their squares do not (1/2 < ``decay`` <= 1), so h settles
    where the expected acceptance equals ``target``; raising h lowers acceptance (the
    stochastic-approximation rule of Andrieu & Thoms 2008, "A tutorial on adaptive MCMC",
    Statist. Comput. 18).
    Used during burn-in only: the chain is a valid Markov chain once h is frozen.
    """
    return log_step_size + (iteration + 1) ** -decay * (acceptance - target)
