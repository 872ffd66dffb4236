"""Measuring a study's final checkpoints, each once, on the study's split (the test split):
bits/dim, and sample metrics with seconds per sample for every sampler of the grid (generator
temperatures; for an EBM, resampling and independence Metropolis-Hastings over M candidates and
MALA over K transitions), and an EBM's bits/dim under a log Z checked for reliability."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import save_image

from lit_ebm.evaluation.ebm import LogZEstimate, draw_ebm, estimate_log_z, estimate_log_z_annealed
from lit_ebm.evaluation.loading import LoadedCheckpoint, load_checkpoint
from lit_ebm.evaluation.measure import with_sample_metrics
from lit_ebm.evaluation.quality import generated_levels
from lit_ebm.evaluation.reference import Reference, load_reference, validation_bits
from lit_ebm.evaluation.results import Row
from lit_ebm.evaluation.settings import KID_SUBSET_SIZE, EvaluationSettings
from lit_ebm.generators import bits_per_dim, to_levels
from lit_ebm.generators.base import sampler_at
from lit_ebm.generators.flows import FlowGenerator
from lit_ebm.modules import AdversarialEBM
from lit_ebm.study.spec import EvaluationSpec

GRID_IMAGES = 64


@dataclass
class References:
    """The reference split and features of a data set, loaded once per study."""

    spec: EvaluationSpec
    device: torch.device
    loaded: Reference | None = None

    def of(self, checkpoint: LoadedCheckpoint) -> Reference:
        if self.loaded is None:
            n = self.spec.num_samples
            settings = EvaluationSettings(checkpoints=[checkpoint.path], split=self.spec.split,
                                          num_samples=n, batch_size=self.spec.batch_size,
                                          kid_subset_size=min(KID_SUBSET_SIZE, n))
            self.loaded = load_reference(checkpoint.data, None, settings, self.device)
        return self.loaded


def _timed_row(label: str, kind: Any, sampler: str, steps: int | None, images: torch.Tensor,
               seconds: float, **figures: Any) -> Row:
    row = Row(label=label, kind=kind, objective=sampler, data="", images=images,
              seconds_per_sample=seconds / len(images), **figures)
    row.chain_steps = steps
    return row


def generator_rows(checkpoint: LoadedCheckpoint, spec: EvaluationSpec) -> list[Row]:
    """The generator's samples at each temperature."""
    generator, rows = checkpoint.module.generator, []
    for temperature in spec.temperatures:
        start = time.perf_counter()
        images = generated_levels(sampler_at(generator, temperature), generator.discrete,
                                  spec.num_samples, spec.batch_size)
        rows.append(_timed_row(f"generator T={temperature:g}", "generator", "generator", None,
                               images, time.perf_counter() - start, temperature=temperature))
    return rows


def ebm_rows(module: AdversarialEBM, spec: EvaluationSpec, grid: bool) -> list[Row]:
    """The EBM's samples by resampling and IMH over M candidates (the same draws), and over a
    flow by MALA after ``mala_burn_in`` adapting transitions; seconds per sample include all.
    Every M and K of ``spec`` with ``grid``, else the headline sampler's alone."""
    rows, n = [], spec.num_samples
    head = spec.headline
    candidates = spec.candidates if grid else [head.steps] if head.method != "mala" else []
    mala_steps = spec.mala_steps if grid else [head.steps] if head.method == "mala" else []
    for m in candidates:
        start = time.perf_counter()
        draws = draw_ebm(module, n, m, spec.batch_size, f"M={m}")
        seconds = time.perf_counter() - start
        rows.append(_timed_row(f"SIR M={m}", "ebm_resampled", "sir", m, draws.resampled,
                               seconds, candidates=m))
        if m > 1:
            rows.append(_timed_row(f"IMH M={m}", "ebm_chain", "imh", m, draws.chained, seconds,
                                   candidates=m,
                                   acceptance_rate=draws.chain_accepted / (n * (m - 1))))
    if isinstance(module.generator, FlowGenerator):
        for k in mala_steps:
            drawn = module.sample(n, "mcmc", steps=k, burn_in=spec.mala_burn_in,
                                  batch_size=spec.batch_size)
            rows.append(_timed_row(f"MALA K={k}", "ebm_chain", "mala", k,
                                   to_levels(drawn.x, discrete=False), drawn.seconds,
                                   acceptance_rate=drawn.acceptance_rate,
                                   step_size=drawn.adapted_step_size))
    return rows


def log_z_pair(module: AdversarialEBM, spec: EvaluationSpec) -> tuple[LogZEstimate, LogZEstimate]:
    """Two estimates of log Z, the second with four times the work: annealed importance
    sampling over K and 4K temperatures for a flow, importance sampling (the defensive mixture
    proposal) from N and 4N draws otherwise."""
    n, k = spec.log_z_samples, spec.log_z_temperatures
    if isinstance(module.generator, FlowGenerator):
        return (estimate_log_z_annealed(module, n, k, spec.batch_size),
                estimate_log_z_annealed(module, n, 4 * k, spec.batch_size))
    return tuple(estimate_log_z(module, draw_ebm(module, size, 1, spec.batch_size), "mixture",
                                spec.batch_size) for size in (n, 4 * n))  # type: ignore[return-value]


def reliable(small: LogZEstimate, large: LogZEstimate) -> bool:
    """k-hat at most 0.7 for both, and the two within their joint 95% interval."""
    spread = 1.96 * math.hypot(small.stderr, large.stderr)
    return small.reliable and large.reliable and abs(small.log_z - large.log_z) <= spread


def ebm_likelihood(module: AdversarialEBM, energies: torch.Tensor,
                   spec: EvaluationSpec) -> dict[str, Any]:
    """The EBM's bits/dim on the split under the larger log Z estimate (biased low, so these
    bits/dim are optimistic), with both estimates and whether they count as reliable."""
    small, large = log_z_pair(module, spec)
    g = module.generator
    bpd = float(bits_per_dim(-energies - large.log_z, g.num_dims, g.discrete).mean())
    return {"ebm_bpd": bpd, "log_z": large.log_z, "log_z_stderr": large.stderr,
            "log_z_pareto_k": large.pareto_k, "log_z_small": small.log_z,
            "log_z_small_stderr": small.stderr, "log_z_small_pareto_k": small.pareto_k,
            "log_z_proposal": large.proposal, "log_z_reliable": reliable(small, large)}


def measure_run(path: Path, ebm: bool, spec: EvaluationSpec, seed: int, references: References,
                figure: Path | None, grid: bool = True) -> dict[str, Any]:
    """Every figure of one final checkpoint for sampling seed ``seed``: the generator's rows
    (or, with ``ebm``, the EBM's rows, the whole sampler grid or the headline sampler's, and
    likelihood) with their sample metrics against the split; a sample figure of the row at
    temperature 1 (or of the first EBM row) saved to ``figure`` when given."""
    start = time.perf_counter()
    checkpoint = load_checkpoint(path, None, references.device)
    module = checkpoint.module
    bits = validation_bits(checkpoint, None, spec.batch_size, spec.split)
    torch.manual_seed(seed)
    figures: dict[str, Any] = {"bpd": bits.bpd}
    if ebm:
        assert isinstance(module, AdversarialEBM) and bits.energies is not None
        rows = ebm_rows(module, spec, grid)
        figures.update(ebm_likelihood(module, bits.energies, spec))
    else:
        rows = generator_rows(checkpoint, spec)
    reference = references.of(checkpoint)
    rows = with_sample_metrics(rows, reference, seed)
    if figure is not None:
        shown = next((row for row in rows if row.temperature in (None, 1.0)), rows[0])
        figure.parent.mkdir(parents=True, exist_ok=True)
        save_image(shown.images[:GRID_IMAGES].float() / 255, figure, nrow=8)
    keep = ("label", "objective", "temperature", "candidates", "chain_steps", "acceptance_rate",
            "step_size", "seconds_per_sample")
    return {**figures, "features": reference.extractor.name,
            "rows": [{**{key: value for key, value in row.to_dict().items() if key in keep},
                      **({} if row.metrics is None else vars(row.metrics))} for row in rows],
            "seconds": time.perf_counter() - start}
