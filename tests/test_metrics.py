"""Sample-quality and EBM-evaluation metrics: manifold metrics against a hand-computed case,
the proposal-only log Z estimate and its standard error, sampling-importance-resampling, the
8-bit levels of samples, and FID/KID through torchmetrics against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from lit_ebm.errors import ConfigError
from lit_ebm.evaluation.quality import FeatureDistances, check_sample_counts
from lit_ebm.generators import to_levels
from lit_ebm.metrics import (
    equal_counts,
    log_partition_proposal,
    precision_recall_density_coverage,
)


def _points(*values: float) -> torch.Tensor:
    """1-D positions as 2-D features (second coordinate 0)."""
    return torch.tensor([[v, 0.0] for v in values], dtype=torch.float64)


def test_manifold_metrics_match_a_hand_computed_case() -> None:
    # k = 1: real radii 1, 1, 1, 8; fake radii 1.4, 3.1, 5.5, 1.4.
    # Fakes inside real balls: 0.5 -> {0, 1}, 5 -> {10}, -5 -> none, 1.9 -> {1, 2}.
    real = _points(0.0, 1.0, 2.0, 10.0)
    fake = _points(0.5, 5.0, -5.0, 1.9)
    values = precision_recall_density_coverage(real, fake, k=1)
    assert values["precision"] == pytest.approx(3 / 4)  # all fakes but -5
    assert values["density"] == pytest.approx((2 + 1 + 0 + 2) / 4)
    assert values["coverage"] == pytest.approx(4 / 4)  # every real ball holds a fake
    assert values["recall"] == pytest.approx(3 / 4)  # 0, 1 and 2 lie in fake balls, 10 not


def test_manifold_metrics_of_a_set_against_itself_are_perfect() -> None:
    features = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    values = precision_recall_density_coverage(features, features.clone(), k=5)
    assert values["precision"] == values["recall"] == values["coverage"] == 1.0
    assert values["density"] >= 1.0
    with pytest.raises(ValueError, match="nearest neighbours need more than 5"):
        precision_recall_density_coverage(features[:5], features, k=5)


def test_proposal_log_z_is_exact_when_the_energy_is_minus_log_q() -> None:
    log_q = torch.randn(100, dtype=torch.float64)
    estimate = log_partition_proposal(-log_q - 2.5, log_q)  # exp(-E) = q exp(2.5)
    assert float(estimate["log_z"]) == pytest.approx(2.5, abs=1e-12)
    assert float(estimate["stderr"]) == pytest.approx(0.0, abs=1e-12)
    assert float(estimate["ess"]) == pytest.approx(100.0)


def test_proposal_log_z_and_its_standard_error_on_a_gaussian() -> None:
    """q = N(0, 1), E(x) = x^2 / (2 s^2): Z = sqrt(2 pi) s. The delta-method standard error
    matches the spread of the estimate over independent repetitions."""
    s, n, repeats = 0.8, 2000, 300
    generator = torch.Generator().manual_seed(0)
    normal = torch.distributions.Normal(0.0, 1.0)
    estimates, stderrs = [], []
    for _ in range(repeats):
        x = torch.randn(n, generator=generator, dtype=torch.float64)
        result = log_partition_proposal(x.square() / (2 * s**2), normal.log_prob(x))
        estimates.append(float(result["log_z"]))
        stderrs.append(float(result["stderr"]))
    log_z = math.log(math.sqrt(2 * math.pi) * s)
    assert np.mean(estimates) == pytest.approx(log_z, abs=4 * np.std(estimates) / repeats**0.5)
    assert np.mean(stderrs) == pytest.approx(np.std(estimates), rel=0.15)


def test_manifold_metrics_compare_equal_numbers_of_real_and_generated_features() -> None:
    """Both sets from one distribution, five generated features to each real one: cut to equal
    counts, precision and recall agree on average and coverage stays below 1 (with all the
    generated features the fake balls shrink and the real balls fill: coverage 1.0)."""
    generator = torch.Generator().manual_seed(0)
    results = [precision_recall_density_coverage(torch.randn(200, 8, generator=generator),
                                                 torch.randn(1000, 8, generator=generator),
                                                 seed=seed) for seed in range(10)]
    gap = np.mean([r["precision"] - r["recall"] for r in results])
    assert abs(gap) < 0.02 and np.mean([r["coverage"] for r in results]) < 0.985
    real, fake = torch.arange(6.0)[:, None], torch.arange(20.0)[:, None]
    cut_real, cut_fake = equal_counts(real, fake, seed=3)
    assert torch.equal(cut_real, real) and len(cut_fake) == 6
    assert len(set(cut_fake.flatten().tolist())) == 6


def test_levels_of_continuous_and_discrete_samples() -> None:
    k = torch.arange(256, dtype=torch.float64).repeat(50)
    u = torch.rand(len(k), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(to_levels((k + u) / 256, discrete=False).long(), k.long())
    assert torch.equal(to_levels(k / 255, discrete=True).long(), k.long())
    assert to_levels(torch.tensor([-0.1, 1.2]), discrete=False).tolist() == [0, 255]


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_feature_distances_agree_with_a_direct_frechet_distance() -> None:
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(400, 6, generator=generator, dtype=torch.float64)
    fake = 1.3 * torch.randn(300, 6, generator=generator, dtype=torch.float64) + 0.4
    distances = FeatureDistances(num_features=6, kid_subset_size=100)
    distances.update(real, real=True)
    distances.update(fake, real=False)
    first = distances.compute(seed=3)
    assert first["fid"] == pytest.approx(_frechet(real.numpy(), fake.numpy()), rel=1e-6)
    assert first == distances.compute(seed=3)  # KID subsets drawn from the seed
    distances.reset_fake()  # the real features stay
    distances.update(real[:300].clone(), real=False)
    same = distances.compute()
    assert same["fid"] < 0.2 * first["fid"] and same["kid_mean"] < 0.2 * first["kid_mean"]


def test_sample_counts_that_fid_and_kid_cannot_use_are_named() -> None:
    with pytest.raises(ConfigError, match=r"'eval.num_samples'.*eval.num_samples>=129"):
        check_sample_counts(128, 500, 128, 100, "eval.num_samples", "eval.kid_subset_size")
    with pytest.raises(ConfigError, match=r"'eval.kid_subset_size'.*<=300"):
        check_sample_counts(300, 500, 128, 400, "eval.num_samples", "eval.kid_subset_size")
    check_sample_counts(129, 500, 128, 129, "eval.num_samples", "eval.kid_subset_size")
