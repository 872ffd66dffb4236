"""Tests of lit_ebm.objectives: the paper's three facts as exact identities, and the estimators;
and of lit_ebm.generator_objectives: the hybrid and forward-KL generator losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_ebm.objectives import (
    check_paired_batches,
    discriminator_logits,
    discriminator_loss,
    energy_magnitude_penalty,
    generator_loss_reparameterised,
    generator_loss_score_function,
    guided_cost_loss,
    ld_optimal_log_z,
    log_mu,
    log_partition_is,
    log_z_derivative,
    union_log_weights,
)

F64 = torch.float64


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _energy_net(dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, 16), nn.Softplus(), nn.Linear(16, 1)
    ).to(F64)


class _Batch:
    """A random energy network, real and fake batches, and random log q values."""

    def __init__(self, seed: int, dim: int, n: int = 16, n_fake: int = 16) -> None:
        torch.manual_seed(seed)
        self.net = _energy_net(dim)
        self.x_real = torch.randn(n, dim, dtype=F64)
        self.x_fake = 1.5 * torch.randn(n_fake, dim, dtype=F64) + 0.5
        self.log_q_real = torch.randn(n, dtype=F64) - 1.0
        self.log_q_fake = torch.randn(n_fake, dtype=F64) - 1.0

    def energies(self) -> tuple[Tensor, Tensor]:
        return self.net(self.x_real).squeeze(-1), self.net(self.x_fake).squeeze(-1)

    def d_loss(self, log_z: Tensor) -> Tensor:
        e_real, e_fake = self.energies()
        return discriminator_loss(e_real, e_fake, log_z, self.log_q_real, self.log_q_fake)

    def cost_loss(self, log_z: Tensor) -> Tensor:
        e_real, e_fake = self.energies()
        return guided_cost_loss(
            e_real, torch.cat([e_real, e_fake]), self.union_log_q(), log_z
        )

    def log_z_is(self, log_z: Tensor) -> Tensor:
        with torch.no_grad():
            return log_partition_is(torch.cat(self.energies()), self.union_log_q(), log_z,
                                    len(self.x_real))

    def union_log_q(self) -> Tensor:
        return torch.cat([self.log_q_real, self.log_q_fake])

    def param_grads(self, loss: Tensor) -> list[Tensor]:
        return list(torch.autograd.grad(loss, list(self.net.parameters())))


def _minimise_over_log_z(batch: _Batch) -> Tensor:
    """Safeguarded Newton on the strictly convex 1-D problem min_log_z L_D, to |grad| < 1e-14."""
    lo, hi = -100.0, 100.0
    log_z = 0.0
    for _ in range(200):
        a = torch.tensor(log_z, dtype=F64, requires_grad=True)
        (grad,) = torch.autograd.grad(batch.d_loss(a), a, create_graph=True)
        (curv,) = torch.autograd.grad(grad, a)
        if abs(grad.item()) < 1e-14:
            return a.detach()
        if grad.item() > 0:
            hi = log_z
        else:
            lo = log_z
        log_z = log_z - grad.item() / curv.item()
        if not lo < log_z < hi:
            log_z = 0.5 * (lo + hi)
    raise AssertionError(f"Newton did not converge: log_z={log_z}, grad={grad.item()}")


CASES = [(seed, dim, n_fake) for seed in range(3) for dim in (2, 4) for n_fake in (16, 5)]


@pytest.mark.parametrize(("seed", "dim", "n_fake"), CASES)
def test_fact1_optimal_log_z_is_the_importance_sampling_estimate(seed: int, dim: int,
                                                                 n_fake: int) -> None:
    batch = _Batch(seed, dim, n_fake=n_fake)
    log_z_star = _minimise_over_log_z(batch)
    torch.testing.assert_close(batch.log_z_is(log_z_star), log_z_star, rtol=1e-8, atol=1e-10)
    # Elsewhere the estimate is not a fixed point, so the identity above is not vacuous ...
    shifted = log_z_star + 0.5
    assert (batch.log_z_is(shifted) - shifted).abs() > 1e-3
    # ... and iterating log_z <- log_z_is converges to the minimiser, as documented.
    log_z = torch.tensor(0.0, dtype=F64)
    for _ in range(200):
        log_z = batch.log_z_is(log_z)
    torch.testing.assert_close(log_z, log_z_star, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(("seed", "dim", "n_fake"), CASES)
def test_fact2_discriminator_and_guided_cost_gradients_agree(seed: int, dim: int,
                                                             n_fake: int) -> None:
    batch = _Batch(seed, dim, n_fake=n_fake)
    log_z_star = _minimise_over_log_z(batch)
    grads_d = batch.param_grads(batch.d_loss(log_z_star))
    grads_cost = batch.param_grads(batch.cost_loss(log_z_star))
    assert max(g.abs().max().item() for g in grads_d) > 1e-3
    for g_d, g_cost in zip(grads_d, grads_cost, strict=True):
        torch.testing.assert_close(g_cost, g_d, rtol=1e-8, atol=1e-13)
    # Away from the optimal log_z the gradients differ: the test can fail.
    shifted = log_z_star + 0.5
    grads_d = batch.param_grads(batch.d_loss(shifted))
    grads_cost = batch.param_grads(batch.cost_loss(shifted))
    gap = max((a - b).abs().max().item() for a, b in zip(grads_d, grads_cost, strict=True))
    assert gap > 1e-4


@pytest.mark.parametrize(("seed", "dim"), sorted({case[:2] for case in CASES}))
def test_fact3_generator_loss_is_log_z_plus_sampler_loss(seed: int, dim: int) -> None:
    batch = _Batch(seed, dim)
    log_z = torch.tensor(0.3 + seed, dtype=F64)
    _, e_fake = batch.energies()
    gan_generator_loss = (-discriminator_logits(e_fake, log_z, batch.log_q_fake)).mean()
    sampler_loss = generator_loss_reparameterised(e_fake, batch.log_q_fake)
    expected = log_z + e_fake.mean() + batch.log_q_fake.mean()
    torch.testing.assert_close(gan_generator_loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gan_generator_loss, log_z + sampler_loss, rtol=1e-12, atol=1e-12)


def test_hand_computed_logits_and_discriminator_loss() -> None:
    log_z = torch.tensor(0.5, dtype=F64, requires_grad=True)
    e_real = torch.tensor([0.0, 2.0], dtype=F64, requires_grad=True)
    e_fake = torch.tensor([1.0, 0.0], dtype=F64)
    log_q_real = torch.tensor([-1.0, -2.0], dtype=F64, requires_grad=True)
    log_q_fake = torch.tensor([0.0, 0.5], dtype=F64)

    logits = discriminator_logits(e_real, log_z, log_q_real)
    torch.testing.assert_close(logits, torch.tensor([0.5, -0.5], dtype=F64))
    torch.testing.assert_close(
        discriminator_logits(e_fake, log_z, log_q_fake), torch.tensor([-1.5, -1.0], dtype=F64)
    )

    loss = discriminator_loss(e_real, e_fake, log_z, log_q_real, log_q_fake)
    expected = 0.5 * (_softplus(-0.5) + _softplus(0.5)) + 0.5 * (
        _softplus(-1.5) + _softplus(-1.0)
    )
    assert loss.item() == pytest.approx(expected, rel=1e-14)

    loss.backward()
    assert log_q_real.grad is None  # the generator density enters as a constant
    # dL_D/dlog_z = 1 - 2 mean over the union of D = sigmoid(l).
    d_all = torch.sigmoid(torch.tensor([0.5, -0.5, -1.5, -1.0], dtype=F64))
    assert log_z.grad.item() == pytest.approx(1.0 - 2.0 * d_all.mean().item(), rel=1e-14)
    # dL_D/dE(x+) = (1 - D(x+)) / N.
    torch.testing.assert_close(e_real.grad, (1.0 - d_all[:2]) / 2)


def test_log_mu_and_small_helpers() -> None:
    energy = torch.tensor([0.0, 1.0], dtype=F64)
    log_q = torch.tensor([0.0, -3.0], dtype=F64)
    expected = torch.log(0.5 * torch.exp(-energy - 0.2) + 0.5 * torch.exp(log_q))
    torch.testing.assert_close(log_mu(energy, 0.2, log_q), expected)

    penalty = energy_magnitude_penalty(torch.tensor([1.0, 2.0]), torch.tensor([3.0]))
    assert penalty.item() == pytest.approx(14.0 / 3.0)


def test_score_function_gradient_is_unbiased() -> None:
    torch.manual_seed(0)
    num_states, batch_size, num_batches = 8, 8, 20000
    logits = torch.randn(num_states, dtype=F64)
    energy_table = 2.0 * torch.randn(num_states, dtype=F64)

    def exact_objective(theta: Tensor) -> Tensor:
        log_q = F.log_softmax(theta, dim=0)
        return (log_q.exp() * (energy_table + log_q)).sum()

    def surrogate(theta: Tensor, states: Tensor) -> Tensor:
        log_q = F.log_softmax(theta, dim=0)[states]
        return generator_loss_score_function(energy_table[states], log_q)

    exact = torch.func.grad(exact_objective)(logits)
    states = torch.multinomial(
        F.softmax(logits, dim=0), num_batches * batch_size, replacement=True
    ).view(num_batches, batch_size)
    per_batch = torch.func.vmap(torch.func.grad(surrogate), in_dims=(None, 0))(logits, states)

    mean = per_batch.mean(dim=0)
    std_err = per_batch.std(dim=0) / math.sqrt(num_batches)
    # Meaningful: the error bars are far smaller than the gradient, and than the 1/N bias a
    # baseline that includes x_i itself would cause.
    assert std_err.max() < 0.02 * exact.abs().max()
    assert ((mean - exact).abs() < 5 * std_err).all(), (mean, exact, std_err)


def test_reparameterised_generator_gradient_matches_finite_differences() -> None:
    torch.manual_seed(0)
    dim, n = 2, 32
    net = _energy_net(dim)
    for p in net.parameters():
        p.requires_grad_(False)
    eps = torch.randn(n, dim, dtype=F64)

    def loss_fn(mu: Tensor, log_s: Tensor) -> Tensor:
        x = mu + log_s.exp() * eps
        z = (x - mu) / log_s.exp()
        log_q = (-0.5 * z.square() - log_s - 0.5 * math.log(2 * math.pi)).sum(dim=-1)
        return generator_loss_reparameterised(net(x).squeeze(-1), log_q)

    mu = torch.tensor([0.3, -0.7], dtype=F64, requires_grad=True)
    log_s = torch.tensor([0.2, -0.4], dtype=F64, requires_grad=True)
    grad_mu, grad_log_s = torch.autograd.grad(loss_fn(mu, log_s), (mu, log_s))

    h = 1e-6
    with torch.no_grad():
        for param, grad in ((mu, grad_mu), (log_s, grad_log_s)):
            for i in range(dim):
                step = torch.zeros(dim, dtype=F64)
                step[i] = h
                plus = loss_fn(mu + step, log_s) if param is mu else loss_fn(mu, log_s + step)
                minus = loss_fn(mu - step, log_s) if param is mu else loss_fn(mu, log_s - step)
                finite_diff = (plus - minus) / (2 * h)
                assert grad[i].item() == pytest.approx(finite_diff.item(), rel=1e-6, abs=1e-9)
    assert grad_log_s.abs().min() > 1e-3  # the entropy term alone gives -1 per dimension


E4, E3 = torch.zeros(4), torch.zeros(3)


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: discriminator_loss(E4, E3, 0.0, E3, E3), ["energy_real (4,)", "log_q_real (3,)"]),
        (lambda: discriminator_loss(E4, E4, 0.0, E4, E3), ["log_q_fake (3,)"]),
        (lambda: discriminator_loss(E4[:, None], E4, 0.0, E4, E4), ["energy_real (4, 1)"]),
        (lambda: discriminator_logits(E4, 0.0, E3), ["energy (4,)", "log_q (3,)"]),
        (lambda: generator_loss_reparameterised(E4, E3), ["energy_fake", "log_q_fake"]),
        (lambda: generator_loss_score_function(E4, E4[None]), ["log_q_fake (1, 4)"]),
        (lambda: log_partition_is(E4, E3, 0.0), ["energy (4,)", "log_q (3,)"]),
        (lambda: guided_cost_loss(E4, E4, E3, 0.0), ["energy_all", "log_q_all"]),
        (lambda: check_paired_batches(a=E4, b=E3), ["a (4,)", "b (3,)"]),
    ],
)
def test_mismatched_or_non_1d_batches_raise(call, names: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    for name in names:
        assert name in message
    assert "1-D" in message


def test_union_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="needs num_real, the data batch's size"):
        log_partition_is(E3, E3, 0.0)
    with pytest.raises(ValueError, match=r"between 1 and 3 .* got 4"):
        guided_cost_loss(E4, E4, E4, 0.0)


def test_union_weights_give_each_batch_one_half() -> None:
    weights = union_log_weights(7, num_real=2).exp()
    torch.testing.assert_close(weights, torch.tensor([0.25] * 2 + [0.1] * 5, dtype=F64))
    torch.testing.assert_close(union_log_weights(6).exp(), torch.full((6,), 1 / 6, dtype=F64))


def test_unequal_batches_weigh_as_equal_ones_that_repeat_them() -> None:
    """Each batch weighs one half: a generated batch of 4 weighs as that batch written twice
    beside a data batch of 8, so both give the same L_D, log_z_is and L_D-optimal offset."""
    gen = torch.Generator().manual_seed(5)
    e_real, lq_real = torch.randn(8, generator=gen, dtype=F64), torch.randn(8, generator=gen,
                                                                            dtype=F64)
    e_fake, lq_fake = torch.randn(4, generator=gen, dtype=F64) + 1, torch.randn(4, generator=gen,
                                                                                dtype=F64)
    union = torch.cat([e_real, e_fake]), torch.cat([lq_real, lq_fake])
    doubled = torch.cat([e_real, e_fake, e_fake]), torch.cat([lq_real, lq_fake, lq_fake])
    torch.testing.assert_close(discriminator_loss(e_real, e_fake, 0.3, lq_real, lq_fake),
                               discriminator_loss(e_real, e_fake.repeat(2), 0.3, lq_real,
                                                  lq_fake.repeat(2)), rtol=1e-14, atol=0)
    torch.testing.assert_close(log_partition_is(*union, 0.3, num_real=8),
                               log_partition_is(*doubled, 0.3), rtol=1e-14, atol=0)
    torch.testing.assert_close(ld_optimal_log_z(*union, num_real=8), ld_optimal_log_z(*doubled),
                               rtol=1e-12, atol=1e-12)
    assert not torch.allclose(log_partition_is(*union, 0.3), log_partition_is(*doubled, 0.3))


def test_score_function_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        generator_loss_score_function(torch.zeros(1), torch.zeros(1))


def test_log_partition_is_is_stable_for_large_energies() -> None:
    torch.manual_seed(0)
    energy = torch.randn(32, dtype=F64)
    log_q = torch.randn(32, dtype=F64)
    reference = log_partition_is(energy, log_q, 0.1)
    for shift in (1e3, -1e3):
        # Shifting E by c and log_z by -c leaves mu unchanged and shifts log_z_is by -c.
        shifted = energy + shift
        assert not torch.isfinite(torch.exp(-shifted).log()).all()  # the naive route fails
        result = log_partition_is(shifted, log_q, 0.1 - shift)
        torch.testing.assert_close(result, reference - shift, rtol=1e-12, atol=1e-10)
        result32 = log_partition_is(shifted.float(), log_q.float(), torch.tensor(0.1 - shift))
        assert result32.dtype == torch.float32
        torch.testing.assert_close(result32.double(), reference - shift, rtol=0, atol=1e-3)


@pytest.mark.parametrize("gap", [30.0, 60.0, 200.0, 1000.0])
def test_ld_optimal_log_z_zeroes_the_derivative_where_the_discriminator_separates(
        gap: float) -> None:
    """Data and generated logits ``gap`` nats apart (mean D near 1 on one batch, 0 on the
    other): the returned log Z is a minimum of L_D, its derivative 1 - 2 mean D zero."""
    gen = torch.Generator().manual_seed(3)
    energy = torch.cat([torch.randn(32, generator=gen, dtype=torch.float64) - gap / 2,
                        torch.randn(32, generator=gen, dtype=torch.float64) + gap / 2])
    log_q = torch.randn(64, generator=gen, dtype=torch.float64)
    log_z = ld_optimal_log_z(energy, log_q).requires_grad_(True)
    real, fake = energy[:32], energy[32:]
    loss = discriminator_loss(real, fake, log_z, log_q[:32], log_q[32:])
    (derivative,) = torch.autograd.grad(loss, log_z)
    assert abs(derivative.item()) < 1e-9
    d = torch.sigmoid(-energy - log_z.detach() - log_q)
    assert d[:32].min() > 0.99 and d[32:].max() < 0.01, "the batches are separated"
    for shift in (-1.0, 1.0):  # a strict minimum: L_D is larger on either side
        assert discriminator_loss(real, fake, log_z.detach() + shift, log_q[:32],
                                  log_q[32:]) > loss


def test_log_z_derivative_is_that_of_l_d_and_tells_a_stopped_search() -> None:
    gen = torch.Generator().manual_seed(4)
    energy = torch.randn(16, generator=gen, dtype=torch.float64)
    log_q = torch.randn(16, generator=gen, dtype=torch.float64)
    log_z = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    loss = discriminator_loss(energy[:8], energy[8:], log_z, log_q[:8], log_q[8:])
    (expected,) = torch.autograd.grad(loss, log_z)
    gradient, size = log_z_derivative(energy, log_q, log_z.detach())
    assert gradient == pytest.approx(expected.item(), rel=1e-12) and size >= abs(gradient)
    separated = torch.cat([torch.zeros(8) - 30.0, torch.zeros(8) + 30.0]).double()
    zeros = torch.zeros(16, dtype=torch.float64)
    stopped = log_z_derivative(separated, zeros, ld_optimal_log_z(separated, zeros, max_iter=1))
    found = log_z_derivative(separated, zeros, ld_optimal_log_z(separated, zeros))
    assert abs(stopped[0]) > 1e-6 * stopped[1] and abs(found[0]) <= 1e-10 * found[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ld_optimal_log_z_is_the_fixed_point_of_log_z_is(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    energy = torch.randn(64, generator=gen, dtype=torch.float64) * 3.0 + 2.0
    log_q = torch.randn(64, generator=gen, dtype=torch.float64) * 2.0 - 1.0
    log_z = ld_optimal_log_z(energy, log_q)
    assert torch.allclose(log_partition_is(energy, log_q, log_z), log_z,
                          rtol=0, atol=1e-9)
    assert not torch.allclose(log_partition_is(energy, log_q, log_z + 1.0),
                              log_z + 1.0, atol=1e-3)
