"""The generator objectives beyond the paper: hybrid (Flow-GAN) reduces to the reverse KL and
adds the data's NLL; forward KL's self-normalised gradient is consistent but biased, and its
baseline keeps the mean while cutting the variance, checked on a categorical generator small
enough to enumerate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_ebm.generator_objectives import (
    generator_loss_forward_kl,
    generator_loss_hybrid,
    nll_penalty,
)
from lit_ebm.objectives import generator_loss_reparameterised, generator_loss_score_function

F64 = torch.float64
E4 = torch.zeros(4, dtype=F64)
E3 = torch.zeros(3, dtype=F64)


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: generator_loss_hybrid(E4, E4, E3[None], 1.0), ["log_q_real (1, 3)"]),
        (lambda: generator_loss_forward_kl(E4, E3), ["energy_fake", "log_q_fake"]),
        (lambda: nll_penalty(E4[None]), ["log_q_real (1, 4)"]),
    ],
)
def test_mismatched_or_non_1d_batches_raise(call, names: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert all(name in str(info.value) for name in names) and "1-D" in str(info.value)


def _grads(loss: Tensor, inputs: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
    return torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)


@pytest.mark.parametrize("score_function", [False, True])
def test_hybrid_with_zero_nll_weight_is_reverse_kl(score_function: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(5, generator=gen, dtype=F64, requires_grad=True)
    energy_table = torch.randn(5, generator=gen, dtype=F64, requires_grad=True)
    x_fake = torch.multinomial(F.softmax(theta.detach(), 0), 16, True, generator=gen)
    x_real = torch.randint(5, (16,), generator=gen)
    log_q = F.log_softmax(theta, dim=0)
    reverse_kl = generator_loss_score_function if score_function else generator_loss_reparameterised
    expected = reverse_kl(energy_table[x_fake], log_q[x_fake])
    expected_grads = _grads(expected, (theta, energy_table))
    for weight in (0.0, 0.7):
        hybrid = generator_loss_hybrid(energy_table[x_fake], log_q[x_fake], log_q[x_real], weight,
                                       score_function=score_function)
        grads = _grads(hybrid, (theta, energy_table))
        if weight == 0.0:  # exactly the reverse-KL loss: value and both gradients
            assert torch.equal(hybrid, expected)
            for got, want in zip(grads, expected_grads, strict=True):
                assert (got is None and want is None) or torch.equal(got, want)
        else:  # the data term is really there
            torch.testing.assert_close(hybrid, expected - weight * log_q[x_real].mean())
            assert not torch.allclose(grads[0], expected_grads[0])


def test_hybrid_nll_gradient_and_bad_weight() -> None:
    n, weight = 8, 0.3
    log_q_real = torch.randn(n, dtype=F64, requires_grad=True)
    loss = generator_loss_hybrid(torch.randn(n, dtype=F64), torch.randn(n, dtype=F64),
                                 log_q_real, weight)
    (grad,) = torch.autograd.grad(loss, log_q_real)
    torch.testing.assert_close(grad, torch.full((n,), -weight / n, dtype=F64), rtol=0, atol=0)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="nll_weight"):
            generator_loss_hybrid(E4, E4, E4, bad)


# A categorical generator q_phi over K = 6 outcomes and a fixed energy table: p = softmax(-E)
# (Z = sum exp(-E) is about 2.4, so unnormalised weights would be off by that factor).
PHI = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0, 0.3], dtype=F64)
ENERGY = torch.tensor([2.0, 0.5, 1.0, 0.0, 1.5, 3.0], dtype=F64)


def _forward_kl_grads(batch_size: int, repeats: int, seed: int) -> Tensor:
    """The estimator's gradient in phi, by autograd, for `repeats` independent batches x ~ q."""
    gen = torch.Generator().manual_seed(seed)
    states = torch.multinomial(F.softmax(PHI, 0), repeats * batch_size, True, generator=gen)
    grads = []
    for x in states.view(repeats, batch_size):
        phi = PHI.clone().requires_grad_(True)
        loss = generator_loss_forward_kl(ENERGY[x], F.log_softmax(phi, dim=0)[x])
        grads.append(torch.autograd.grad(loss, phi)[0])
    return torch.stack(grads)


def test_forward_kl_gradient_is_consistent_and_biased_on_an_enumerable_categorical() -> None:
    # d/dphi KL(p || q_phi) = d/dphi [-sum_j p_j log softmax(phi)_j] = q - p.
    exact = F.softmax(PHI, 0) - F.softmax(-ENERGY, 0)
    assert exact.norm() > 0.4
    (large,) = _forward_kl_grads(20000, 1, seed=0)
    assert (large - exact).norm() < 0.02, (large, exact)  # measured 0.0062
    # Mean error over 200 batches shrinks like 1/sqrt(N): measured 0.348, 0.108, 0.038.
    errors = [(_forward_kl_grads(n, 200, seed=n) - exact).norm(dim=1).mean() for n in (8, 64, 512)]
    assert errors[1] < 0.5 * errors[0] and errors[2] < 0.5 * errors[1], errors
    # ... but at N = 8 the self-normalised estimate is biased (a ratio of means): the mean of
    # 2000 batches is many standard errors from the truth (measured: ||bias|| = 0.135, 17 SE).
    small = _forward_kl_grads(8, 2000, seed=1)
    bias = small.mean(dim=0) - exact
    std_err = small.std(dim=0) / math.sqrt(small.shape[0])
    assert bias.norm() > 0.05 and bias.norm() > 8 * std_err.norm(), (bias, std_err)


def test_forward_kl_weights_carry_no_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    energy = torch.randn(8, generator=gen, dtype=F64, requires_grad=True)
    log_q = torch.randn(8, generator=gen, dtype=F64, requires_grad=True)
    loss = generator_loss_forward_kl(energy, log_q)
    grad_energy, grad_log_q = _grads(loss, (energy, log_q))
    assert grad_energy is None
    centred = F.softmax(-energy - log_q, dim=0).detach() - 1 / 8  # weights minus the baseline
    torch.testing.assert_close(grad_log_q, -centred, rtol=1e-14, atol=1e-16)
    torch.testing.assert_close(loss, -(centred * log_q).sum())
    # Stable for energies far from zero (a shift of E cancels in the weights), and dtype-preserving.
    shifted = generator_loss_forward_kl(energy.detach() + 1e4, log_q.detach())
    torch.testing.assert_close(shifted, loss.detach(), rtol=1e-10, atol=1e-10)
    loss32 = generator_loss_forward_kl(energy.float(), log_q.float())
    assert loss32.dtype == torch.float32
    torch.testing.assert_close(loss32.double(), loss.detach(), rtol=1e-6, atol=1e-6)


def test_forward_kl_gradient_is_exactly_zero_where_the_ebm_equals_the_generator() -> None:
    # E = -log q + c makes every weight 1/N: the baseline cancels every score, on every batch.
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.multinomial(F.softmax(PHI, 0), 16, True, generator=gen)
        phi = PHI.clone().requires_grad_(True)
        log_q = F.log_softmax(phi, dim=0)[x]
        loss = generator_loss_forward_kl(-log_q.detach() + 3.0, log_q)
        (grad,) = torch.autograd.grad(loss, phi)
        torch.testing.assert_close(grad, torch.zeros_like(PHI), rtol=0, atol=1e-15)


def test_forward_kl_baseline_keeps_the_mean_and_cuts_the_variance() -> None:
    # Without the baseline the gradient is -sum_i w_i grad log q(x_i); the baseline's term,
    # the batch mean of the scores, has mean zero under q, so both estimators share their
    # expectation, and near p = q the baseline removes most of the noise.
    near = 0.1 * ENERGY - F.log_softmax(PHI, 0)  # p close to q
    gen = torch.Generator().manual_seed(0)
    with_baseline, without = [], []
    for x in torch.multinomial(F.softmax(PHI, 0), 500 * 16, True, generator=gen).view(500, 16):
        phi = PHI.clone().requires_grad_(True)
        log_q = F.log_softmax(phi, dim=0)[x]
        weights = F.softmax(-near[x] - log_q.detach(), dim=0)
        old_loss, new_loss = -(weights * log_q).sum(), generator_loss_forward_kl(near[x], log_q)
        without.append(torch.autograd.grad(old_loss, phi, retain_graph=True)[0])
        with_baseline.append(torch.autograd.grad(new_loss, phi)[0])
    new, old = torch.stack(with_baseline), torch.stack(without)
    std_err = (new - old).std(dim=0) / math.sqrt(len(new))
    assert ((new - old).mean(dim=0).abs() < 4 * std_err).all()
    ratio = old.var(dim=0).sum() / new.var(dim=0).sum()
    assert ratio > 10, ratio  # measured 130
