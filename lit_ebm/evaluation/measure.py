"""Measuring checkpoints: every figure of every row, returned as typed results.

For every checkpoint (``MaximumLikelihood`` or ``AdversarialEBM``, image data), on fixed
features (:mod:`lit_ebm.features`) against the reference split (docs/evaluation.md): the
validation split the run was trained with (``split="val"``), or the official test set
(``split="test"``, the only way lit_ebm reads it):

- the generator: FID, KID (mean and std over subsets), precision, recall, density and
  coverage of ``num_samples`` samples, and its bits/dim on the reference split;
- for an ``AdversarialEBM``, also the EBM itself: its bits/dim from log p(x) = -E(x) - log Z
  with the learned log Z (under ``log_z_tracking`` = 1 one batch's estimate, else a learned
  offset) and with a fresh importance-sampling estimate (:mod:`lit_ebm.evaluation.ebm`: its
  standard error, effective sample size and Pareto k-hat, marked unreliable above 0.7), and
  the same sample metrics for EBM samples drawn by sampling-importance-resampling from
  ``candidates`` generator samples each. The ``num_samples x candidates`` draws serve all
  three: the first candidate of each group is the generator's sample, the resampled one the
  EBM's, and they estimate log Z (with proposal q; a residual energy's proposal, the base q0
  or the mixture of q and q0, takes as many draws, some or all of them fresh from q0).

A real-versus-real row (as many training images against the same reference split) gives the
floor of every figure. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_ebm.compilation import compile_networks
from lit_ebm.errors import ConfigError, InvalidArgument, NonFiniteSamplesError
from lit_ebm.evaluation.ebm import draw_ebm, estimate_log_z, estimate_log_z_annealed
from lit_ebm.evaluation.loading import LoadedCheckpoint, check_same_data, load_checkpoint
from lit_ebm.evaluation.quality import FeatureDistances, generated_levels, image_features
from lit_ebm.evaluation.reference import (
    Reference,
    ValidationBits,
    load_reference,
    validation_bits,
)
from lit_ebm.evaluation.report import prepare_out, write_report
from lit_ebm.evaluation.results import EvaluationResults, Row, SampleMetrics
from lit_ebm.evaluation.settings import EvaluationSettings, default_device, flag
from lit_ebm.features import WEIGHTS_DIR
from lit_ebm.generators import bits_per_dim, to_levels
from lit_ebm.generators.base import sampler_at
from lit_ebm.generators.flows import FlowGenerator
from lit_ebm.metrics import precision_recall_density_coverage
from lit_ebm.modules import AdversarialEBM
from lit_ebm.progress import Progress

NEAREST_NEIGHBOURS = 5  # k of precision/recall/density/coverage, as in both papers


def _ebm_rows(checkpoint: LoadedCheckpoint, module: AdversarialEBM, settings: EvaluationSettings,
              bits: ValidationBits, start: float) -> list[Row]:
    """An EBM's generator row, with its own bits/dim and log Z, and its rows of EBM samples:
    resampled, by IMH through the same candidates, and for a flow by MALA; ``module`` is
    ``checkpoint.module``."""
    m = settings.candidates
    assert bits.energies is not None  # validation_bits keeps an EBM's energies
    g = module.generator
    if settings.log_z_annealing and not isinstance(g, FlowGenerator):
        raise ConfigError(f"{flag('log_z_annealing')} runs MALA in a flow's latent space, and "
                          f"'{checkpoint.path}' holds a {checkpoint.generator}: leave it at 0 "
                          "(importance sampling) for this checkpoint")
    draws = draw_ebm(module, settings.num_samples, m, settings.batch_size, checkpoint.label)
    if settings.log_z_annealing:
        estimate = estimate_log_z_annealed(module, settings.num_samples,
                                           settings.log_z_annealing, settings.batch_size)
    else:
        estimate = estimate_log_z(module, draws, settings.log_z_proposal, settings.batch_size)
    ebm_bpd = bits_per_dim(-bits.energies - estimate.log_z, g.num_dims, g.discrete).mean()
    common = {"path": str(checkpoint.path), "generator": checkpoint.generator,
              "data": checkpoint.data["name"], "candidates": m}
    generator = Row(
        label=checkpoint.label, kind="generator", objective=checkpoint.objective, **common,
        bpd=bits.bpd, log_z_learned=bits.log_z_learned, log_z_tracking=module.log_z_tracking,
        ebm_bpd_learned_log_z=bits.ebm_bpd_learned_log_z, log_z_proposal=estimate.proposal,
        log_z_q=estimate.log_z, log_z_q_stderr=estimate.stderr, log_z_q_ess=estimate.ess,
        log_z_q_pareto_k=estimate.pareto_k, log_z_q_samples=estimate.samples,
        ebm_bpd_is_log_z=float(ebm_bpd), ebm_bpd_is_reliable=estimate.reliable,
        seconds_sampling=time.perf_counter() - start, images=draws.generator)
    resampled = Row(label=f"{checkpoint.label} EBM (SIR, M={m})", kind="ebm_resampled",
                    objective="ebm (resampled)", **common, images=draws.resampled)
    rows = [generator, resampled]
    if m > 1:
        acceptance = draws.chain_accepted / (settings.num_samples * (m - 1))
        rows.append(Row(label=f"{checkpoint.label} EBM (IMH, M={m}, acceptance "
                              f"{acceptance:.2f})", kind="ebm_chain", objective="ebm (IMH)",
                        **common, chain_steps=m - 1, acceptance_rate=acceptance,
                        images=draws.chained))
    if settings.mcmc_steps > 0 and isinstance(g, FlowGenerator):
        rows.append(_mala_row(checkpoint, module, settings, common))
    return rows


def _mala_row(checkpoint: LoadedCheckpoint, module: AdversarialEBM,
              settings: EvaluationSettings, common: dict[str, Any]) -> Row:
    """The EBM's samples by MALA in its flow's latent space (:mod:`lit_ebm.sampling`), chains
    started at the generator's draws."""
    steps, burn_in = settings.mcmc_steps, settings.mcmc_burn_in
    with Progress(settings.num_samples, f"{checkpoint.label}: MALA") as progress:
        drawn = module.sample(settings.num_samples, "mcmc", steps=steps, burn_in=burn_in,
                              batch_size=settings.batch_size, progress=progress.update)
    per_sample = drawn.seconds / settings.num_samples
    label = (f"{checkpoint.label} EBM (MALA, {steps} steps after {burn_in}, acceptance "
             f"{drawn.acceptance_rate or 0:.2f}, step size {drawn.adapted_step_size or 0:.3g})")
    return Row(label=label, kind="ebm_chain", objective="ebm (MALA)", **common,
               chain_steps=steps, chain_burn_in=burn_in, acceptance_rate=drawn.acceptance_rate,
               step_size=drawn.adapted_step_size, seconds_per_sample=per_sample,
               images=to_levels(drawn.x, discrete=False))


def checkpoint_rows(checkpoint: LoadedCheckpoint, settings: EvaluationSettings) -> list[Row]:
    """The generator row of one checkpoint, for an EBM its rows of EBM samples, and a row per
    temperature besides 1; sample metrics come from :func:`with_sample_metrics`."""
    start = time.perf_counter()
    bits = validation_bits(checkpoint, settings.data_root, settings.batch_size, settings.split)
    torch.manual_seed(settings.seed)
    generator = checkpoint.module.generator
    common = {"path": str(checkpoint.path), "objective": checkpoint.objective,
              "generator": checkpoint.generator, "data": checkpoint.data["name"]}
    try:
        if isinstance(checkpoint.module, AdversarialEBM):
            rows = _ebm_rows(checkpoint, checkpoint.module, settings, bits, start)
        else:
            images = generated_levels(generator.sample, generator.discrete,
                                      settings.num_samples, settings.batch_size)
            rows = [Row(label=checkpoint.label, kind="generator", **common, bpd=bits.bpd,
                        seconds_sampling=time.perf_counter() - start, images=images)]
        for temperature in settings.temperatures:
            if temperature == 1.0:
                continue
            start = time.perf_counter()
            try:
                sample = sampler_at(generator, temperature)
            except InvalidArgument as err:
                raise ConfigError(f"{flag('temperatures')}: {err}") from None
            images = generated_levels(sample, generator.discrete, settings.num_samples,
                                      settings.batch_size)
            rows.append(Row(label=f"{checkpoint.label} at T={temperature:g}", kind="generator",
                            **common, temperature=temperature,
                            seconds_sampling=time.perf_counter() - start, images=images))
    except NonFiniteSamplesError as err:
        raise ConfigError(f"{flag('checkpoints')} '{checkpoint.path}': {err}") from None
    return rows


def with_sample_metrics(rows: list[Row], reference: Reference, seed: int) -> list[Row]:
    """``rows`` with FID, KID, precision, recall, density and coverage against the reference
    split (KID subsets drawn with ``seed``)."""
    extractor = reference.extractor
    real = image_features(extractor, reference.images)
    distances = FeatureDistances(extractor.num_features, reference.kid_subset_size)
    distances = distances.to(real.device)
    distances.update(real, real=True)
    measured = []
    with Progress(len(rows), "metrics", unit="rows") as progress:
        for row in rows:
            measured.append(_measured(row, extractor, real, distances, seed))
            progress.update(1)
    return measured


def _measured(row: Row, extractor: Any, real: Tensor, distances: FeatureDistances,
              seed: int) -> Row:
    """``row`` with its sample metrics against the real features ``real``."""
    fake = image_features(extractor, row.images)
    distances.update(fake, real=False)
    values = {**distances.compute(seed=seed),
              **precision_recall_density_coverage(real, fake, NEAREST_NEIGHBOURS, seed)}
    distances.reset_fake()
    return replace(row, features=extractor.name, num_samples=len(row.images),
                   metrics=SampleMetrics(**values))


def _classifier_accuracy(features_name: str) -> dict[str, Any] | None:
    report = WEIGHTS_DIR / f"{features_name}.json"
    return json.loads(report.read_text()) if report.is_file() else None


def evaluate(settings: EvaluationSettings) -> EvaluationResults:
    """Measure the checkpoints of ``settings`` beside a real-versus-real row, and write the
    report to ``settings.out`` when it is set. Bad input raises
    :class:`~lit_ebm.errors.ConfigError` (naming the flag) before anything is measured."""
    settings.check()
    start = time.perf_counter()
    device = torch.device(settings.device or default_device())
    checkpoints = [load_checkpoint(path, settings.data, device) for path in settings.checkpoints]
    if settings.compile:
        compile_networks([net for c in checkpoints for net in c.module.networks()], device.type)
    data_name = check_same_data(checkpoints)
    root = settings.data_root or checkpoints[0].data.get("root")
    reference = load_reference({**checkpoints[0].data, "name": data_name}, root, settings,
                               device)
    if settings.out is not None:
        prepare_out(Path(settings.out))
    torch.manual_seed(settings.seed)
    train_images = reference.train_images
    baseline = train_images[torch.randperm(len(train_images))[:settings.num_samples]]
    rows = [Row(label="real: training split", kind="real", objective="real", data=data_name,
                images=baseline)]
    for checkpoint in checkpoints:
        rows += checkpoint_rows(checkpoint, settings)
    rows = with_sample_metrics(rows, reference, settings.seed)
    features = reference.extractor.name
    results = EvaluationResults(
        command=settings.command_line(), data=reference.name, features=features,
        features_classifier=_classifier_accuracy(features), num_samples=settings.num_samples,
        num_real=len(reference.images), kid_subset_size=reference.kid_subset_size,
        reference="validation split" if reference.split == "val" else "test split",
        nearest_neighbours=NEAREST_NEIGHBOURS, candidates=settings.candidates,
        seed=settings.seed, device=str(device), rows=rows, seconds=time.perf_counter() - start)
    if settings.out is not None:
        write_report(results, settings.out)
    return results
