"""Sampling at a temperature: the baseline that trades recall for precision (Caccia et al.
2020). Samples follow the tempered distribution; ``log_q`` stays the model's own density."""

import pytest
import torch
from scipy.stats import chisquare

from lit_ebm.errors import InvalidArgument
from lit_ebm.generators import PixelCNN
from lit_ebm.generators.flow2d import RealNVP2d
from lit_ebm.generators.mixture import GaussianMixture2d
from lit_ebm.sampling import sample_ebm


def test_pixelcnn_single_subpixel_follows_tempered_softmax() -> None:
    torch.manual_seed(0)
    model = PixelCNN((1, 1, 1), channels=8, dilations=[1])
    with torch.no_grad():  # a peaked enough distribution for temperature to matter
        model.head.out.bias.copy_(torch.linspace(-3.0, 3.0, 256))
    logits = model(torch.zeros(1, 1, 1, 1))[0, :, 0, 0, 0].detach().double()
    temperature = 0.5
    x, log_q = model.sample(8000, temperature=temperature)
    counts = torch.bincount(torch.round(x * 255).long().flatten(), minlength=256)
    observed = counts.reshape(8, 32).sum(1).double()  # 8 cells of 32 levels

    def cells(log_probs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(log_probs, 0).reshape(8, 32).sum(1) * observed.sum()

    assert chisquare(observed.numpy(), cells(logits / temperature).numpy()).pvalue > 1e-3
    assert chisquare(observed.numpy(), cells(logits).numpy()).pvalue < 1e-6
    torch.testing.assert_close(log_q.double(), model.log_prob(x).double(), rtol=0, atol=1e-5)


def test_pixelcnn_fast_and_naive_agree_at_a_temperature() -> None:
    torch.manual_seed(1)
    model = PixelCNN((1, 3, 3), channels=8, dilations=[1, 2])
    torch.manual_seed(2)
    fast = model.sample(4, method="fast", temperature=0.8)
    torch.manual_seed(2)
    naive = model.sample(4, method="naive", temperature=0.8)
    assert torch.equal(fast[0], naive[0])
    torch.testing.assert_close(fast[1], model.log_prob(fast[0]), rtol=0, atol=1e-4)


def test_flow_latent_is_scaled_and_log_q_is_the_model_density() -> None:
    torch.manual_seed(0)
    flow = RealNVP2d(num_couplings=4, hidden_features=16)
    torch.manual_seed(3)
    with torch.no_grad():
        x, log_q = flow.sample(4000, temperature=0.7)
        z, _ = flow(x)
    assert abs(float(z.std()) - 0.7) < 0.02
    torch.testing.assert_close(log_q, flow.log_prob(x), rtol=0, atol=1e-4)
    torch.manual_seed(4)
    at_one = flow.sample(10, temperature=1.0)[0]
    torch.manual_seed(4)
    assert torch.equal(at_one, flow.sample(10)[0])


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperatures_are_refused(temperature: float) -> None:
    flow = RealNVP2d(num_couplings=2, hidden_features=8)
    with pytest.raises(InvalidArgument, match="temperature must be a finite positive number"):
        flow.sample(2, temperature=temperature)
    with pytest.raises(InvalidArgument, match="temperature"):
        PixelCNN((1, 2, 2), channels=4, dilations=[1]).sample(2, temperature=temperature)


def test_the_generator_method_samples_at_a_temperature_where_the_generator_takes_one() -> None:
    torch.manual_seed(0)
    flow = RealNVP2d(num_couplings=2, hidden_features=8)
    torch.manual_seed(5)
    drawn = sample_ebm(flow, None, 30, "generator", temperature=0.6)
    torch.manual_seed(5)
    assert torch.equal(drawn.x, flow.sample(30, temperature=0.6)[0].detach())
    assert drawn.options == {"temperature": 0.6}
    with pytest.raises(InvalidArgument, match="GaussianMixture2d.sample takes no temperature"):
        sample_ebm(GaussianMixture2d(), None, 4, "generator", temperature=0.6)
