"""Sampling the EBM (lit_ebm.sampling, lit_ebm.mcmc) against densities known exactly: MALA's
detailed balance in float64, chains on 2-D EBMs whose density is known by quadrature, and
independence Metropolis-Hastings on a PixelCNN small enough to enumerate. Each goodness-of-fit
test also shows that the generator's own samples fail it."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import Tensor, nn

from lit_ebm.energy import MLPEnergy, ResidualEnergy
from lit_ebm.errors import InvalidArgument
from lit_ebm.evaluation import draw_ebm
from lit_ebm.generators import GaussianMixture2d, PixelCNN, RealNVP2d
from lit_ebm.mcmc import (
    adapt_log_step_size,
    evaluate_state,
    imh_accept,
    imh_over_candidates,
    mala_step,
    sampling_importance_resampling,
)
from lit_ebm.modules import AdversarialEBM
from lit_ebm.sampling import EBMSamples, sample_ebm
from lit_ebm.toy2d import grid_energy
from tests.flow_helpers import perturb

pytestmark = pytest.mark.usefixtures("single_thread")


BOUND, CELLS = 9.0, 8  # the 2-D grid [-BOUND, BOUND]^2 and the coarse cells per axis


def chi_square_p_value(counts: Tensor, probabilities: Tensor) -> float:
    """Pearson's chi-square test of ``counts`` against ``probabilities`` (cells with fewer than
    5 expected counts pooled into one)."""
    expected = probabilities.double() * counts.sum()
    small = expected < 5
    observed = torch.cat([counts[~small].double(), counts[small].double().sum().reshape(1)])
    expected = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = expected > 0  # the pooled cell, when no cell is small
    return float(stats.chisquare(observed[keep].numpy(), expected[keep].numpy()).pvalue)


def grid_cell_probabilities(energy: nn.Module, resolution: int = 256) -> Tensor:
    """The mass of exp(-E) / Z in each of CELLS x CELLS cells of the square, by the midpoint
    rule on a ``resolution``-point grid per axis (row-major, rows are y)."""
    _, energies = grid_energy(energy, BOUND, resolution)
    fine = torch.softmax(-energies.flatten(), dim=0).reshape(resolution, resolution)
    k = resolution // CELLS
    return fine.reshape(CELLS, k, CELLS, k).sum(dim=(1, 3)).flatten()


def grid_cell_counts(x: Tensor) -> Tensor:
    """Counts of 2-D points in the cells of :func:`grid_cell_probabilities`."""
    assert bool((x.abs() < BOUND).all()), "a sample fell outside the square"
    cells = ((x.double() + BOUND) / (2 * BOUND) * CELLS).floor().long()
    return torch.bincount(cells[:, 1] * CELLS + cells[:, 0], minlength=CELLS**2)


def toy_flow(seed: int) -> RealNVP2d:
    torch.manual_seed(seed)
    return perturb(RealNVP2d(num_couplings=4, hidden_features=16), std=0.1, seed=seed)


def toy_energy(seed: int, confinement: float = 0.3) -> MLPEnergy:
    """A random MLP energy, its output layer scaled up so that exp(-E) has several bumps."""
    torch.manual_seed(seed)
    energy = MLPEnergy(hidden_features=32, depth=2, confinement=confinement)
    with torch.no_grad():
        energy.net[-1].weight.mul_(8.0)
    return energy


# The chain mathematics.

def _quartic_target(z: Tensor) -> tuple[Tensor, Tensor]:
    """log pi(z) = -sum(z^4) / 4 + z_0 and its gradient, exactly (float64)."""
    return -z.pow(4).sum(1) / 4 + z[:, 0], -z.pow(3) + torch.eye(z.shape[1], dtype=z.dtype)[0]


def test_mala_satisfies_detailed_balance_exactly() -> None:
    """pi(z) k(z' | z) alpha(z, z') = pi(z') k(z | z') alpha(z', z) for the move z -> z' that
    mala_step makes and the reverse move z' -> z, in float64."""
    torch.manual_seed(0)
    h, n = 0.7, 200
    state = evaluate_state(torch.randn(n, 3, dtype=torch.float64), _quartic_target)
    noise = torch.randn(n, 3, dtype=torch.float64)
    forward, alpha_forward, moved = mala_step(state, _quartic_target, h, noise,
                                              torch.zeros(n, dtype=torch.float64))
    assert bool(moved.all()) and 0.05 < float(alpha_forward.mean()) < 0.95
    back_noise = (state.z - forward.z - 0.5 * h**2 * forward.grad) / h  # lands exactly on z
    back, alpha_back, _ = mala_step(forward, _quartic_target, h, back_noise,
                                    torch.zeros(n, dtype=torch.float64))
    torch.testing.assert_close(back.z, state.z, rtol=0, atol=1e-12)
    # k(z' | z) = N(noise; 0, I) / h^D: the h^D cancels between the two sides.
    lhs = state.log_density - 0.5 * noise.square().sum(1) + alpha_forward.log()
    rhs = forward.log_density - 0.5 * back_noise.square().sum(1) + alpha_back.log()
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-10)


def test_mala_rejects_non_finite_proposals_and_leaves_non_finite_starts() -> None:
    def target(z: Tensor) -> tuple[Tensor, Tensor]:  # -inf (impossible) where z_0 > 1
        log_pi = torch.where(z[:, 0] > 1, -math.inf, -0.5 * z.square().sum(1))
        return log_pi, -z
    start = torch.tensor([[0.0, 0.0], [5.0, 0.0]], dtype=torch.float64)
    state = evaluate_state(start, target)
    assert state.log_density[1] == -math.inf and bool((state.grad[1] == 0).all())
    noise = torch.tensor([[10.0, 0.0], [-8.0, 0.0]], dtype=torch.float64)  # to 10 h, to 5 - 8 h
    new, alpha, moved = mala_step(state, target, 0.5, noise, torch.zeros(2, dtype=torch.float64))
    assert moved.tolist() == [False, True] and alpha.tolist() == [0.0, 1.0]
    assert new.z.tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert bool(torch.isfinite(new.log_density).all())


def test_imh_chains_reach_an_enumerable_target() -> None:
    torch.manual_seed(0)
    q = torch.tensor([0.3, 0.25, 0.2, 0.1, 0.1, 0.05], dtype=torch.float64)
    unnormalised = torch.tensor([1.0, 2.0, 0.5, 4.0, 3.0, 2.5], dtype=torch.float64)
    p = unnormalised / unnormalised.sum()
    log_w = (unnormalised / q).log()
    chains = 20000
    state = torch.multinomial(q, chains, replacement=True)
    start = state.clone()
    for _ in range(40):
        proposal = torch.multinomial(q, chains, replacement=True)
        move = imh_accept(log_w[state], log_w[proposal], torch.rand(chains, dtype=torch.float64))
        state = torch.where(move, proposal, state)
    assert chi_square_p_value(torch.bincount(state, minlength=6), p) > 1e-3
    assert chi_square_p_value(torch.bincount(start, minlength=6), p) < 1e-12


def test_imh_accepts_by_the_ratio_of_weights() -> None:
    log_w = torch.log(torch.tensor([2.0, 2.0, 2.0, 1.0, 2.0]))
    proposed = torch.log(torch.tensor([1.0, 1.0, 4.0, 0.0, math.nan]))
    uniform = torch.tensor([0.49, 0.51, 0.99, 0.0, 0.0])
    assert imh_accept(log_w, proposed, uniform).tolist() == [True, False, True, False, False]
    assert imh_accept(torch.tensor([-math.inf]), torch.tensor([-50.0]), torch.tensor([0.99]))


def test_sir_picks_the_generator_at_one_candidate_and_the_ebm_at_many() -> None:
    """Four states with q = (0.4, 0.3, 0.2, 0.1) and p = exp(-E) / Z = (0.1, 0.2, 0.3, 0.4)."""
    q = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    p = q.flip(0)
    energy = -p.log()  # Z = 1
    generator = torch.Generator().manual_seed(0)

    def picks(num: int, candidates: int) -> torch.Tensor:
        states = torch.multinomial(q.expand(num, -1), candidates, replacement=True,
                                   generator=generator)
        column = sampling_importance_resampling(-energy[states] - q.log()[states], generator)
        return states[torch.arange(num), column]

    counts = torch.bincount(picks(20000, 1), minlength=4).double()
    assert stats.chisquare(counts.numpy(), 20000 * q.numpy()).pvalue > 1e-3
    frequencies = torch.bincount(picks(20000, 256), minlength=4).double() / 20000
    assert float((frequencies - p).abs().sum()) < 0.03  # total variation (x2) to p
    with pytest.raises(ValueError, match=r"shape \(N, M\)"):
        sampling_importance_resampling(energy)




def test_non_finite_weights_never_win_and_never_hold_a_chain() -> None:
    """A NaN or infinite first candidate: the chain leaves it at the first finite proposal and
    resampling never picks it; a row with no finite weight keeps its first candidate."""
    log_w = torch.tensor([[math.nan, -3.0, -1.0], [math.inf, -2.0, math.nan],
                          [math.nan, math.nan, math.nan]], dtype=torch.float64)
    end, accepted = imh_over_candidates(log_w, torch.full((3, 2), 0.99, dtype=torch.float64))
    assert end.tolist() == [2, 1, 0] and accepted.tolist() == [2, 1, 0]
    picks = torch.stack([sampling_importance_resampling(log_w) for _ in range(200)])
    assert set(picks[:, 0].tolist()) == {1, 2} and set(picks[:, 1].tolist()) == {1}
    assert set(picks[:, 2].tolist()) == {0}


class NanOnTheRight(nn.Module):
    """E(x) = |x|^2 / 2, NaN where the first coordinate is positive (half of a 2-D Gaussian)."""

    def forward(self, x: Tensor) -> Tensor:
        energy = 0.5 * x.square().sum(dim=1)
        return torch.where(x[:, 0] > 0, torch.full_like(energy, math.nan), energy)


def test_evaluation_draws_leave_non_finite_energies() -> None:
    """draw_ebm's chains and resampling keep only finite-energy draws where a group has one."""
    torch.manual_seed(0)
    module = AdversarialEBM(RealNVP2d(num_couplings=2, hidden_features=8), NanOnTheRight())
    draws = draw_ebm(module, 200, 8, batch_size=64)
    assert torch.isnan(draws.energy).any() and (draws.generator[:, 0] > 0).any()
    for images in (draws.resampled, draws.chained):
        assert (images[:, 0] > 0).float().mean() < 0.01  # 2^-8 of the groups have no finite one
    assert draws.chain_accepted > 0


def test_step_size_adaptation_is_robbins_monro_on_the_log_step() -> None:
    assert adapt_log_step_size(0.0, 0.8, 0.5, 0) == pytest.approx(0.3)
    assert adapt_log_step_size(1.0, 0.2, 0.5, 3) == pytest.approx(1.0 - 0.3 * 4**-0.6)
    assert adapt_log_step_size(1.0, 0.5, 0.5, 7) == 1.0


# The EBM on 2-D toy problems, by quadrature.

def test_mcmc_samples_a_toy_ebm_and_the_generator_does_not() -> None:
    generator, energy = toy_flow(1), toy_energy(2)
    exact = grid_cell_probabilities(energy)
    torch.manual_seed(3)
    result = sample_ebm(generator, energy, 2000, "mcmc", steps=40, burn_in=80, step_size=0.3)
    assert result.x.shape == (2000, 2) and result.method == "mcmc"
    assert result.options == {"steps": 40, "burn_in": 80, "step_size": 0.3,
                               "target_accept": 0.574}
    assert result.acceptance_rate is not None and abs(result.acceptance_rate - 0.574) < 0.05
    assert result.adapted_step_size is not None and result.adapted_step_size != 0.3
    assert chi_square_p_value(grid_cell_counts(result.x), exact) > 1e-3
    with torch.no_grad():
        own = generator.sample(2000)[0]
    assert chi_square_p_value(grid_cell_counts(own), exact) < 1e-12


def test_mcmc_samples_a_residual_ebm_in_its_base_latent() -> None:
    """Target q0 exp(-f) / Z, q0 the frozen base; the chains start at another generator's
    draws."""
    base, generator = toy_flow(4), toy_flow(5)
    energy = ResidualEnergy(toy_energy(6, confinement=0.05), base)
    exact = grid_cell_probabilities(energy)
    torch.manual_seed(7)
    result = sample_ebm(generator, energy, 2000, "mcmc", steps=40, burn_in=80, step_size=0.3)
    assert chi_square_p_value(grid_cell_counts(result.x), exact) > 1e-3
    with torch.no_grad():
        own = generator.sample(2000)[0]
    assert chi_square_p_value(grid_cell_counts(own), exact) < 1e-12


def test_mcmc_without_steps_is_the_generator_and_a_seed_fixes_every_method() -> None:
    generator, energy = toy_flow(1), toy_energy(2)
    torch.manual_seed(0)
    with torch.no_grad():
        own = generator.sample(50)[0]
    torch.manual_seed(0)
    none = sample_ebm(generator, energy, 50, "mcmc", steps=0, burn_in=0)
    assert torch.equal(none.x, own) and none.acceptance_rate is None
    torch.manual_seed(0)
    assert torch.equal(sample_ebm(generator, energy, 50, "sir", candidates=1).x, own)
    for method, options in (("mcmc", {"steps": 3, "burn_in": 3}), ("imh", {"steps": 3}),
                            ("sir", {}), ("generator", {})):
        draws = []
        for _ in range(2):
            torch.manual_seed(11)
            draws.append(sample_ebm(generator, energy, 40, method, batch_size=16, **options))
        assert torch.equal(draws[0].x, draws[1].x), method
        assert draws[0].x.shape == (40, 2) and bool(torch.isfinite(draws[0].x).all())
        assert not torch.equal(draws[0].x, own[:40]), method


def test_the_module_samples_by_every_method_and_reports_its_progress() -> None:
    module = AdversarialEBM(toy_flow(1), toy_energy(2))
    seen: list[int] = []
    result = module.sample(10, "mcmc", steps=2, burn_in=1, batch_size=4, progress=seen.append)
    assert isinstance(result, EBMSamples) and seen == [4, 4, 2]
    assert result.acceptance_rate is not None and 0 <= result.acceptance_rate <= 1
    record = result.record()
    assert record["method"] == "mcmc" and record["num_samples"] == 10 and record["steps"] == 2
    assert record["adapted_step_size"] == result.adapted_step_size and record["seconds"] > 0
    for method in ("generator", "sir", "imh"):
        other = module.sample(6, method)
        assert other.x.shape == (6, 2) and other.adapted_step_size is None
        assert (other.acceptance_rate is None) == (method != "imh")
        assert other.options == {"generator": {"temperature": 1.0}, "sir": {"candidates": 16},
                                 "imh": {"steps": 16, "base_mixture": False}}[method]


def test_the_module_samples_in_eval_mode_and_leaves_its_mode_and_buffers() -> None:
    """A spectrally normalised energy updates its power-iteration vectors in train mode only."""
    module = AdversarialEBM(toy_flow(1), MLPEnergy(hidden_features=8, depth=1,
                                                   spectral_norm=True)).train()
    before = {name: value.clone() for name, value in module.state_dict().items()}
    module.sample(8, "mcmc", steps=2, burn_in=2)
    assert module.training and module.energy.training
    assert all(torch.equal(before[name], value) for name, value in module.state_dict().items())


# Independence Metropolis-Hastings on a PixelCNN of 1 x 2 pixels: 65,536 images, enumerable.

class PixelQuadratic(nn.Module):
    """E(x) = 6 ((x_0 - 0.7)^2 + (x_1 - 0.25)^2) + x_0 x_1 on two-pixel images."""

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        return 6 * ((flat[:, 0] - 0.7).square() + (flat[:, 1] - 0.25).square()) + (
            flat[:, 0] * flat[:, 1])


def _all_images() -> Tensor:
    levels = torch.stack(torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij"), -1)
    return levels.reshape(-1, 1, 1, 2).float() / 255


def _coarse_counts(x: Tensor) -> Tensor:
    """Counts in 8 x 8 cells of 32 x 32 levels, indexed like the enumeration's cells."""
    levels = torch.round(x.flatten(1) * 255).long() // 32
    return torch.bincount(levels[:, 0] * 8 + levels[:, 1], minlength=64)


def _coarse(probabilities: Tensor) -> Tensor:
    return probabilities.reshape(8, 32, 8, 32).sum(dim=(1, 3)).flatten()


def _pixelcnn(seed: int) -> PixelCNN:
    torch.manual_seed(seed)
    return PixelCNN((1, 1, 2), channels=4, dilations=(1,))


def test_imh_samples_an_enumerable_discrete_ebm_and_its_proposal_does_not() -> None:
    generator, energy = _pixelcnn(0), PixelQuadratic()
    with torch.no_grad():
        exact = _coarse(torch.softmax(-energy(_all_images()).double(), dim=0))
    torch.manual_seed(1)
    result = sample_ebm(generator, energy, 2000, "imh", steps=30)
    assert result.x.shape == (2000, 1, 1, 2) and 0.05 < (result.acceptance_rate or 0) < 0.95
    assert chi_square_p_value(_coarse_counts(result.x), exact) > 1e-3
    own = generator.sample(2000)[0]
    assert chi_square_p_value(_coarse_counts(own), exact) < 1e-12


def test_imh_with_the_base_mixture_samples_a_residual_discrete_ebm() -> None:
    """Target q0 exp(-f) / Z, proposal (q + q0) / 2, both PixelCNNs enumerated exactly."""
    generator, base = _pixelcnn(2), _pixelcnn(3)
    energy = ResidualEnergy(PixelQuadratic(), base)
    with torch.no_grad():
        exact = _coarse(torch.softmax(-energy(_all_images()).double(), dim=0))
    torch.manual_seed(4)
    result = sample_ebm(generator, energy, 2000, "imh", steps=30, base_mixture=True)
    assert result.options == {"steps": 30, "base_mixture": True}
    assert chi_square_p_value(_coarse_counts(result.x), exact) > 1e-3
    assert chi_square_p_value(_coarse_counts(generator.sample(2000)[0]), exact) < 1e-12


# Refusals.

@pytest.mark.parametrize(("generator", "energy", "method", "options", "argument", "words"), [
    ("pixelcnn", "plain", "mcmc", {}, "method", "PixelCNN is not one: use method 'imh' or 'sir'"),
    ("mixture", "plain", "mcmc", {}, "method", "GaussianMixture2d is not one: use method 'imh'"),
    ("flow", "plain", "hmc", {}, "method", "valid methods are generator, sir, mcmc, imh"),
    ("flow", None, "sir", {}, "method", "no energy (a maximum-likelihood model): use method "
                                        "'generator'"),
    ("flow", "plain", "sir", {"steps": 3}, "steps", "its options are: candidates"),
    ("flow", "plain", "imh", {"base_mixture": True}, "base_mixture", "not residual"),
    ("flow", "plain", "mcmc", {"steps": -1}, "steps", "integer >= 0, got -1"),
    ("flow", "plain", "mcmc", {"step_size": 0.0}, "step_size", "> 0, got 0.0"),
    ("flow", "plain", "mcmc", {"target_accept": 1.0}, "target_accept", "in (0, 1)"),
    ("flow", "plain", "sir", {"candidates": 0}, "candidates", "integer >= 1, got 0"),
    ("flow", "plain", "generator", {"num_samples": 0}, "num_samples", "positive integer"),
    ("flow", "plain", "generator", {"batch_size": 0}, "batch_size", "positive integer"),
])
def test_nonsense_is_refused_naming_the_argument(generator: str, energy: str | None,
                                                 method: str, options: dict, argument: str,
                                                 words: str) -> None:
    networks = {"flow": lambda: toy_flow(0), "mixture": lambda: GaussianMixture2d(),
                "pixelcnn": lambda: _pixelcnn(0)}
    net = networks[generator]()
    ebm = {"plain": MLPEnergy(in_features=net.num_dims, hidden_features=4, depth=1),
           None: None}[energy]
    kwargs = {"num_samples": 4, **options}
    with pytest.raises(InvalidArgument, match=r".*") as caught:
        sample_ebm(net, ebm, method=method, **kwargs)
    assert caught.value.argument == argument and words in str(caught.value)
    assert "\n" not in str(caught.value)
