"""log Z that can be trusted: the Pareto k-hat diagnostic against known generalised Pareto
tails and scipy's fit, the defensive mixture of q and q0, coverage of the reported interval on
a 2-D energy whose log Z is known by quadrature (importance sampling and annealed importance
sampling), and the labels of the evaluation report."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from scipy import stats

from lit_ebm.annealing import annealed_log_weights
from lit_ebm.energy import MLPEnergy, ResidualEnergy
from lit_ebm.errors import ConfigError
from lit_ebm.evaluation import (
    EvaluationResults,
    EvaluationSettings,
    Row,
    draw_ebm,
    estimate_log_z,
    markdown_table,
)
from lit_ebm.evaluation.ebm import estimate_log_z_annealed, proposal_for
from lit_ebm.generators.mixture import GaussianMixture2d
from lit_ebm.metrics import (
    generalized_pareto_fit,
    log_mixture,
    log_partition_proposal,
    log_partition_weights,
    pareto_k_hat,
)
from lit_ebm.modules import AdversarialEBM
from lit_ebm.toy2d import log_partition_grid
from tests.test_sampling import toy_energy, toy_flow

SEEDS = 100  # of the coverage test, each a fresh set of draws
DRAWS = 500  # per estimate


def generalized_pareto_log_draws(k: float, n: int, seed: int) -> torch.Tensor:
    """log x for x ~ GPD(k, 1) by inversion: x = ((1 - u)^(-k) - 1) / k."""
    u = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return torch.log(torch.expm1(-k * torch.log1p(-u)) / k)


@pytest.mark.parametrize("k", [0.2, 0.5, 0.9])
def test_k_hat_recovers_the_shape_of_a_generalised_pareto_tail(k: float) -> None:
    """Every tail of GPD(k, sigma) is GPD(k, sigma') above its threshold; with n = 10^6 the fit
    uses 3,000 weights, whose k-hat varies by about 0.03 over seeds."""
    k_hat = pareto_k_hat(generalized_pareto_log_draws(k, 1_000_000, seed=1))
    assert k_hat.dtype == torch.float64 and float(k_hat) == pytest.approx(k, abs=0.1)


def test_the_zhang_stephens_fit_agrees_with_scipys_maximum_likelihood() -> None:
    exceedances = generalized_pareto_log_draws(0.6, 3000, seed=2).exp()
    k, sigma = generalized_pareto_fit(exceedances)
    k_ml, _, sigma_ml = stats.genpareto.fit(exceedances.numpy(), floc=0)
    assert float(k) == pytest.approx(k_ml, abs=0.02)
    assert float(sigma) == pytest.approx(sigma_ml, rel=0.05)


def test_light_tailed_weights_give_k_hat_below_one_half() -> None:
    generator = torch.Generator().manual_seed(3)
    uniform = torch.rand(16000, dtype=torch.float64, generator=generator)
    log_normal = 0.5 * torch.randn(16000, dtype=torch.float64, generator=generator)
    assert float(pareto_k_hat(uniform.log())) < 0  # bounded weights: a negative shape
    assert float(pareto_k_hat(log_normal)) < 0.5


def test_k_hat_is_invariant_to_a_constant_shift_of_the_log_weights() -> None:
    """Shifts far beyond float64's exponent range: the weights are never exponentiated
    unscaled."""
    log_w = 3 * torch.randn(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    k = float(pareto_k_hat(log_w))
    assert math.isfinite(k)
    for shift in (-3000.0, 3000.0):
        assert float(pareto_k_hat(log_w + shift)) == pytest.approx(k, abs=1e-9)


def test_k_hat_of_degenerate_weights() -> None:
    """Equal weights have no tail (-inf, the best case); fewer than 21 draws leave fewer than
    5 tail weights, too few to fit (NaN)."""
    assert float(pareto_k_hat(torch.zeros(100, dtype=torch.float64))) == -math.inf
    assert math.isnan(float(pareto_k_hat(torch.randn(20, dtype=torch.float64))))
    assert math.isfinite(float(pareto_k_hat(torch.randn(21, dtype=torch.float64))))


def test_k_hat_flags_a_gaussian_proposal_narrower_than_its_target() -> None:
    """Target N(0, I), proposal N(0, r^2 I) in 2-D: the weights exp(|x|^2 (1/r^2 - 1) / 2) have
    a Pareto tail of shape 1 - r^2 (0.84 at r = 0.4); a wider proposal bounds them."""
    x = torch.randn(100_000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    energy = lambda y: y.square().sum(1) / 2  # noqa: E731  Z = 2 pi
    for r, heavy in ((0.4, True), (1.5, False)):
        y = r * x
        log_q = normal.log_prob(x).sum(1) - 2 * math.log(r)
        estimate = log_partition_proposal(energy(y), log_q)
        assert (float(estimate["pareto_k"]) > 0.7) is heavy, r
    assert float(estimate["log_z"]) == pytest.approx(math.log(2 * math.pi), abs=0.02)


def test_the_mixture_density_is_the_weighted_sum_of_both() -> None:
    log_q = torch.tensor([-1.0, -700.0, 2.0], dtype=torch.float64)
    log_q_base = torch.tensor([-3.0, -701.0, -900.0], dtype=torch.float64)
    mixture = log_mixture(log_q, log_q_base, 0.25)
    expected = (0.25 * torch.exp(log_q + 700) + 0.75 * torch.exp(log_q_base + 700)).log() - 700
    torch.testing.assert_close(mixture[:2], expected[:2], rtol=0, atol=1e-12)
    assert float(mixture[2]) == pytest.approx(math.log(0.25) + 2.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"mixture weight of q must be in \(0, 1\)"):
        log_mixture(log_q, log_q_base, 1.0)


def residual_ebm(generator_scale: float, shift: float) -> AdversarialEBM:
    """A fixed residual energy E = f - log q0 on the plane (f a seeded MLP plus 0.2 |x|^2, q0
    a seeded mixture of four Gaussians) and a generator q: q0's means shifted by ``shift``,
    every scale ``generator_scale``."""
    torch.manual_seed(0)
    base = GaussianMixture2d(4, init_scale=1.5)
    energy = ResidualEnergy(MLPEnergy(2, hidden_features=32, depth=2, confinement=0.2), base)
    generator = GaussianMixture2d(4)
    with torch.no_grad():
        generator.means.copy_(base.means + shift)
        generator.log_scales.fill_(math.log(generator_scale))
    return AdversarialEBM(generator, energy).eval()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The coverage tests evaluate hundreds of tiny batches, where extra threads only add
    synchronisation (ten times slower on a loaded two-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def log_z_true() -> float:
    """log Z of :func:`residual_ebm`'s energy (the same for every generator) by quadrature:
    within 1e-8 of a grid four times finer and wider."""
    return log_partition_grid(residual_ebm(1.0, 0.0).energy, bound=6.0, resolution=300)


def intervals(module: AdversarialEBM, proposal: str, seeds: int,
              truth: float) -> list[tuple[bool, bool]]:
    """For each seed, whether estimate +- 1.96 stderr covers the quadrature log Z ``truth``,
    and whether the estimate's k-hat calls it reliable."""
    outcomes = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        estimate = estimate_log_z(module, draw_ebm(module, DRAWS, 1, DRAWS), proposal, DRAWS)
        assert estimate.proposal == proposal and estimate.samples == DRAWS
        outcomes.append((abs(estimate.log_z - truth) <= 1.96 * estimate.stderr,
                         estimate.reliable))
    return outcomes


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("proposal", ["q", "base", "mixture"])
def test_the_interval_covers_the_quadrature_log_z(proposal: str, log_z_true: float) -> None:
    """A generator wider than the EBM: every proposal's 95% interval covers log Z by quadrature
    in at least 90% of the seeds, each with k-hat <= 0.7."""
    outcomes = intervals(residual_ebm(generator_scale=1.5, shift=0.0), proposal, SEEDS,
                         log_z_true)
    assert all(reliable for _, reliable in outcomes)
    assert sum(covered for covered, _ in outcomes) >= 0.9 * SEEDS


@pytest.mark.usefixtures("one_thread")
def test_a_drifted_generator_is_flagged_and_the_mixture_defends_against_it(
        log_z_true: float) -> None:
    """A generator narrower than the EBM and off its modes: with q alone the weights have a
    heavy tail and k-hat flags most estimates; the mixture's weights are at most twice
    exp(-f), and its intervals cover."""
    module = residual_ebm(generator_scale=0.2, shift=0.5)
    alone = intervals(module, "q", 20, log_z_true)
    mixture = intervals(module, "mixture", 20, log_z_true)
    assert sum(not reliable for _, reliable in alone) >= 16
    assert all(reliable for _, reliable in mixture)
    assert sum(covered for covered, _ in mixture) >= 18


def flow_ebm(residual: bool) -> AdversarialEBM:
    """An EBM over a 2-D flow whose exp(-E) has several bumps the flow does not have: the
    energy alone, or residual over a frozen copy of the flow."""
    flow, net = toy_flow(1), toy_energy(2, confinement=0.05 if residual else 0.3)
    energy = ResidualEnergy(net, toy_flow(1)) if residual else net
    return AdversarialEBM(flow, energy).eval()


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("residual", [False, True])
def test_the_annealed_interval_covers_the_quadrature_log_z(residual: bool) -> None:
    """Annealed importance sampling: 95% intervals cover log Z by quadrature in at least 90%
    of 20 seeds, each with k-hat <= 0.7."""
    module = flow_ebm(residual)
    truth = log_partition_grid(module.energy, bound=9.0, resolution=300)
    outcomes = []
    for seed in range(20):
        torch.manual_seed(seed)
        estimate = estimate_log_z_annealed(module, chains=200, temperatures=20)
        assert estimate.samples == 200
        assert estimate.proposal.startswith("annealed, 20 temperatures, MALA step size ")
        outcomes.append((abs(estimate.log_z - truth) <= 1.96 * estimate.stderr,
                         estimate.reliable))
    assert all(reliable for _, reliable in outcomes)
    assert sum(covered for covered, _ in outcomes) >= 18


@pytest.mark.usefixtures("one_thread")
def test_annealing_narrows_the_weights_of_importance_sampling_from_the_flow() -> None:
    """One temperature is importance sampling from the flow: weights exp(-E - log q) at its
    own draws; thirty temperatures give a larger effective sample size from the same chains."""
    module = flow_ebm(residual=False)
    torch.manual_seed(0)
    one, _ = annealed_log_weights(module.generator, module.energy, 1000, 1, 0.3)
    torch.manual_seed(0)
    with torch.no_grad():
        x = module.generator.inverse(torch.randn(1000, 2))[0]
    torch.testing.assert_close(one, (-module.energy(x) - module.generator.log_prob(x)).double(),
                               rtol=0, atol=1e-4)
    torch.manual_seed(0)
    many, acceptance = annealed_log_weights(module.generator, module.energy, 1000, 30, 0.3)
    assert 0.3 < acceptance < 1.0
    ess_one = float(log_partition_weights(one)["ess"])
    ess_many = float(log_partition_weights(many)["ess"])
    assert ess_many > 2 * ess_one


def test_an_energy_without_a_base_uses_the_generator() -> None:
    module = AdversarialEBM(GaussianMixture2d(2), MLPEnergy(2, 8, 1))
    assert proposal_for(module, "mixture") == proposal_for(module, "base") == "q"
    assert proposal_for(residual_ebm(1.0, 0.0), "base") == "base"
    with pytest.raises(ConfigError, match="'--log-z-proposal': expected one of mixture"):
        EvaluationSettings(checkpoints=["a.ckpt"], log_z_proposal="uniform").check()


def _ebm_row(label: str, reliable: bool, pareto_k: float) -> Row:
    return Row(label=label, kind="generator", objective="adversarial", data="mnist5k",
               bpd=1.5, log_z_learned=0.1, log_z_tracking=0.0, ebm_bpd_learned_log_z=1.6,
               log_z_proposal="mixture", log_z_q=3.25, log_z_q_stderr=0.19, log_z_q_ess=28.0,
               log_z_q_pareto_k=pareto_k, log_z_q_samples=16000, ebm_bpd_is_log_z=1.4,
               ebm_bpd_is_reliable=reliable, images=torch.zeros(1, 1, 2, 2, dtype=torch.uint8))


def test_the_table_marks_unreliable_bits_and_says_what_the_learned_log_z_is() -> None:
    rows = [_ebm_row("heavy", False, 0.93), _ebm_row("light", True, 0.31)]
    results = EvaluationResults(
        command="", data="mnist5k", features="mnist_cnn", features_classifier=None,
        num_samples=1, num_real=1, kid_subset_size=1, nearest_neighbours=5, candidates=16,
        seed=0, device="cpu", rows=rows, seconds=0.0)
    table = markdown_table(results)
    assert "| EBM bpd (learned log Z, one batch's estimate if tracked) |" in table
    assert ("| 1.4000* (log Z 3.25 ± 0.19, mixture, ESS 28/16000, k-hat 0.93) |" in table)
    assert "| 1.4000 (log Z 3.25 ± 0.19, mixture, ESS 28/16000, k-hat 0.31) |" in table
    assert "* k-hat > 0.7: the importance weights are too heavy-tailed" in table
    assert "with model.log_z_tracking = 1, the last training batch's L_D-optimal" in table
