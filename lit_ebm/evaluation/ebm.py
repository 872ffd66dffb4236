"""An EBM's draws for evaluation: samples by sampling-importance-resampling from its generator,
and log Z by importance sampling with the proposal its energy calls for, with the Pareto
diagnostic that says whether to trust it (docs/evaluation.md, "EBMs").

For a residual energy E = f - log q0 (:class:`~lit_ebm.energy.ResidualEnergy`) the default
proposal is the defensive mixture of the generator q and the frozen base q0 (Hesterberg 1995),
half the draws from each, weighted by the balance heuristic exp(-E) / (q/2 + q0/2):

- q0 alone gives weights exp(-f), free of the ratio q0 / q whose tails collapse the effective
  sample size once q has drifted from q0, but a poor proposal where p = q0 exp(-f) / Z has moved
  mass to where q0 has little and q much;
- each mixture weight is at most twice the weight q0 alone gives the point (and twice the one q
  alone gives it), so its second moment is at most twice the smaller of the two: it is never
  much worse than the better proposal, and its weights are bounded wherever exp(-f) is.

Energies without a base density use q alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lit_ebm.annealing import annealed_log_weights
from lit_ebm.energy import base_of
from lit_ebm.evaluation.quality import batches
from lit_ebm.generated_batch import draw_candidates
from lit_ebm.generators import to_levels
from lit_ebm.mcmc import imh_over_candidates, sampling_importance_resampling
from lit_ebm.metrics import (
    PARETO_K_RELIABLE,
    log_mixture,
    log_partition_proposal,
    log_partition_weights,
)
from lit_ebm.modules import AdversarialEBM
from lit_ebm.precision import density_call
from lit_ebm.progress import Progress


@dataclass
class EBMDraws:
    """``num_samples`` groups of generator samples as uint8 images: the first of each group,
    the one resampled by weight exp(-E - log q), and the one an independence
    Metropolis-Hastings chain through the group ends at (``chain_accepted`` of its
    ``num_samples x (candidates - 1)`` proposals accepted); and the energies and log q of all
    (and log q0, for a residual energy), float64 on the CPU."""

    generator: Tensor
    resampled: Tensor
    chained: Tensor
    chain_accepted: int
    energy: Tensor
    log_q: Tensor
    log_q_base: Tensor | None = None


@dataclass(frozen=True)
class LogZEstimate:
    """An importance-sampling estimate of log Z from ``samples`` draws of ``proposal`` ("q",
    "base" or "mixture", or "annealed, K temperatures, ..." for annealed importance
    sampling's chains): the interval it reports is log_z +- 1.96 stderr, which only holds when
    ``pareto_k`` <= ``PARETO_K_RELIABLE``."""

    proposal: str
    log_z: float
    stderr: float
    ess: float
    pareto_k: float
    samples: int

    @property
    def reliable(self) -> bool:
        """Pareto k-hat at most 0.7 (Vehtari et al. 2024); NaN (too few draws) is not."""
        return self.pareto_k <= PARETO_K_RELIABLE


@torch.no_grad()
def draw_ebm(module: AdversarialEBM, num_samples: int, candidates: int, batch_size: int = 256,
             label: str = "EBM") -> EBMDraws:
    """EBM samples from ``num_samples`` groups of ``candidates`` generator samples: by
    sampling-importance-resampling (one of each group drawn with probability proportional to
    exp(-E - log q)) and by an independence Metropolis-Hastings chain through each group
    (:func:`lit_ebm.mcmc.imh_over_candidates`). ``label`` names the progress bar."""
    discrete = module.generator.discrete
    groups_per_batch = max(1, batch_size // candidates)
    first, resampled, chained, energy, log_q, log_q_base = [], [], [], [], [], []
    accepted = 0
    with Progress(num_samples * candidates, f"{label}: samples") as progress:
        for n in batches(num_samples, groups_per_batch):
            drawn = draw_candidates(module.generator, module.energy, n, candidates)
            rows = torch.arange(n, device=drawn.x.device)
            pick = sampling_importance_resampling(drawn.log_weights).to(rows.device)
            end, moves = imh_over_candidates(
                drawn.log_weights, torch.rand(n, candidates - 1, device=rows.device))
            first.append(to_levels(drawn.x[:, 0], discrete).cpu())
            resampled.append(to_levels(drawn.x[rows, pick], discrete).cpu())
            chained.append(to_levels(drawn.x[rows, end], discrete).cpu())
            accepted += int(moves.sum())
            energy.append(drawn.energy.double().cpu())
            log_q.append(drawn.log_q.double().cpu())
            if drawn.log_q_base is not None:
                log_q_base.append(drawn.log_q_base.double().cpu())
            progress.update(n * candidates)
    base = torch.cat(log_q_base) if log_q_base else None
    return EBMDraws(torch.cat(first), torch.cat(resampled), torch.cat(chained), accepted,
                    torch.cat(energy), torch.cat(log_q), base)


def proposal_for(module: AdversarialEBM, requested: str) -> str:
    """``requested`` ("q", "base" or "mixture") for a residual energy, "q" for any other."""
    return requested if base_of(module.energy) is not None else "q"


@torch.no_grad()
def draw_base(module: AdversarialEBM, num_samples: int, batch_size: int,
              with_log_q: bool) -> dict[str, Tensor]:
    """``num_samples`` fresh draws x ~ q0 from a residual energy's frozen base: their
    ``energy`` E(x), ``log_q_base`` log q0(x) and, ``with_log_q``, the generator's ``log_q``,
    float64 on the CPU."""
    energy, base = module.energy, base_of(module.energy)
    if base is None:
        raise TypeError(f"only a residual energy has a base density to draw from, not "
                        f"{type(energy).__name__}")
    device = module.device.type
    columns: dict[str, list[Tensor]] = {"energy": [], "log_q_base": [], "log_q": []}
    for n in batches(num_samples, batch_size):
        x, log_q_base = density_call(base, device, base.sample, n)
        columns["energy"].append(module.energy_of(x, base_log_prob=log_q_base))
        columns["log_q_base"].append(log_q_base)
        if with_log_q:
            columns["log_q"].append(module.log_q(x))
    return {key: torch.cat(values).double().cpu() for key, values in columns.items() if values}


def estimate_log_z(module: AdversarialEBM, draws: EBMDraws, requested: str,
                   batch_size: int = 256) -> LogZEstimate:
    """log Z by importance sampling from as many draws as ``draws`` holds, with the proposal
    :func:`proposal_for` picks: "q" reuses the generator's draws, "base" draws afresh from
    q0, and "mixture" weights the first half of the generator's draws and as many fresh draws
    from q0 by the balance heuristic (:func:`lit_ebm.metrics.log_mixture`). Its standard error
    treats the draws as independent from the mixture: the fixed split removes the variance
    between the two halves, so the error bar is, if anything, too wide."""
    proposal, n = proposal_for(module, requested), len(draws.energy)
    if proposal == "q":
        energy, log_proposal = draws.energy, draws.log_q
    elif proposal == "base":
        fresh = draw_base(module, n, batch_size, with_log_q=False)
        energy, log_proposal = fresh["energy"], fresh["log_q_base"]
    else:
        assert draws.log_q_base is not None  # draw_ebm keeps a residual energy's log q0
        half = n // 2
        fresh = draw_base(module, n - half, batch_size, with_log_q=True)
        energy = torch.cat([draws.energy[:half], fresh["energy"]])
        log_proposal = log_mixture(torch.cat([draws.log_q[:half], fresh["log_q"]]),
                                   torch.cat([draws.log_q_base[:half], fresh["log_q_base"]]),
                                   half / n)
    estimate = log_partition_proposal(energy, log_proposal)
    return LogZEstimate(proposal, float(estimate["log_z"]), float(estimate["stderr"]),
                        float(estimate["ess"]), float(estimate["pareto_k"]), n)


def estimate_log_z_annealed(module: AdversarialEBM, chains: int, temperatures: int,
                            batch_size: int = 256, pilot_steps: int = 50) -> LogZEstimate:
    """log Z of an EBM over a flow by annealed importance sampling
    (:func:`lit_ebm.annealing.annealed_log_weights`): ``chains`` chains over ``temperatures``
    temperatures, ``batch_size`` at a time, at the MALA step size that ``pilot_steps`` steps of
    adaptation toward the default acceptance rate reach on the EBM itself (a separate pilot run,
    so that the annealing's transitions are fixed and its weights unbiased). The proposal's name
    carries that step size and the transitions' acceptance rate."""
    pilot = module.sample(min(chains, batch_size), "mcmc", steps=0, burn_in=pilot_steps)
    step_size = pilot.adapted_step_size
    assert step_size is not None  # method "mcmc" reports it
    log_weights, accepted = [], 0.0
    for n in batches(chains, batch_size):
        weights, acceptance = annealed_log_weights(module.generator, module.energy, n,
                                                   temperatures, step_size)
        log_weights.append(weights)
        accepted += acceptance * n
    estimate = log_partition_weights(torch.cat(log_weights))
    return LogZEstimate(f"annealed, {temperatures} temperatures, MALA step size {step_size:.3g},"
                        f" acceptance {accepted / chains:.2f}", float(estimate["log_z"]),
                        float(estimate["stderr"]), float(estimate["ess"]),
                        float(estimate["pareto_k"]), chains)
