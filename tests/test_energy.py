import pytest
import torch
from torch import nn

from lit_ebm.energy import ConvEnergy, MLPEnergy, quantise_straight_through
from lit_ebm.toy2d import log_partition_grid


def test_mlp_energy_output_shape_and_input_gradient():
    torch.manual_seed(0)
    energy = MLPEnergy(hidden_features=32)
    x = torch.randn(7, 2, requires_grad=True)
    values = energy(x)
    assert values.shape == (7,)
    (grad,) = torch.autograd.grad(values.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_mlp_energy_is_confined_far_away():
    torch.manual_seed(0)
    energy = MLPEnergy(hidden_features=32, confinement=0.1)
    directions = nn.functional.normalize(torch.randn(64, 2), dim=1)
    for radius in (1e2, 1e3):
        with torch.no_grad():
            values = energy(radius * directions)
        assert (values > 0.5 * 0.1 * radius**2).all()


def test_mlp_energy_partition_function_converges_as_bound_grows():
    torch.manual_seed(0)
    energy = MLPEnergy(hidden_features=32)
    log_zs = [log_partition_grid(energy, bound, resolution=300) for bound in (10.0, 14.0, 18.0)]
    assert all(abs(log_z) < 50 for log_z in log_zs)
    assert log_zs[2] == pytest.approx(log_zs[1], abs=1e-4)


def test_mlp_energy_spectral_norm_normalises_weights():
    torch.manual_seed(0)
    energy = MLPEnergy(hidden_features=32, spectral_norm=True)
    for _ in range(30):
        energy(torch.randn(8, 2))
    linears = [module for module in energy.modules() if isinstance(module, nn.Linear)]
    assert len(linears) == 4
    for linear in linears:
        assert torch.linalg.matrix_norm(linear.weight.detach(), ord=2) == pytest.approx(1, abs=0.02)


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_conv_energy_scores_images(image_shape, spectral_norm):
    torch.manual_seed(0)
    energy = ConvEnergy(image_shape, channels=8, depth=3, spectral_norm=spectral_norm)
    x = torch.rand(3, *image_shape, requires_grad=True)
    values = energy(x)
    assert values.shape == (3,)
    (grad,) = torch.autograd.grad(values.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    parametrized = [module for module in energy.modules() if hasattr(module, "parametrizations")]
    assert len(parametrized) == (7 if spectral_norm else 0)


def test_conv_energy_is_per_image():
    torch.manual_seed(0)
    energy = ConvEnergy((1, 28, 28), channels=8).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(energy(x)[1:2], energy(x[1:2]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_features": 0}, "hidden_features"),
        ({"depth": 0}, "depth"),
        ({"confinement": 0.0}, "confinement"),
        ({"in_features": 0}, "in_features"),
    ],
)
def test_mlp_energy_rejects_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLPEnergy(**kwargs)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (((1, 28), 8, 3), "image_shape"),
        (((1, 28, 28), 0, 3), "channels"),
        (((1, 28, 28), 8, 0), "depth"),
        (((1, 28, 28), 8, 5), "depth <= 4"),
    ],
)
def test_conv_energy_rejects_invalid_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        ConvEnergy(*args)


def test_conv_energy_rejects_wrong_image_shape():
    energy = ConvEnergy((1, 28, 28), channels=8)
    with pytest.raises(ValueError, match="1, 28, 28"):
        energy(torch.rand(2, 3, 32, 32))


def test_quantisation_maps_every_value_of_a_level_to_its_centre_with_identity_gradient():
    levels = torch.tensor([0.0, 1.0, 128.0, 254.0, 255.0])
    dequantised = (levels + torch.tensor([0.0, 0.3, 0.999, 0.5, 0.7])) / 256
    centres = (levels + 0.5) / 256
    assert torch.equal(quantise_straight_through(dequantised), centres)
    assert torch.equal(quantise_straight_through(levels / 255), centres), "PixelCNN levels k/255"
    beyond = torch.tensor([-0.05, -1e-6, 1.0, 1.05])
    ends = torch.tensor([0.5, 0.5, 255.5, 255.5]) / 256
    assert torch.equal(quantise_straight_through(beyond), ends)
    x = torch.rand(3, 4, requires_grad=True)
    weights = torch.randn(3, 4)
    (grad,) = torch.autograd.grad((quantise_straight_through(x) * weights).sum(), x)
    assert torch.equal(grad, weights), "straight-through: the identity's derivative"


def test_quantised_energy_cannot_tell_apart_values_of_one_level():
    torch.manual_seed(0)
    levels = torch.randint(0, 256, (4, 1, 8, 8)).float()
    x = (levels + torch.rand(levels.shape)) / 256
    redrawn = (levels + torch.rand(levels.shape)) / 256
    overshoot = torch.where(levels == 0, -0.03, torch.where(levels == 255, 1.03, x))
    quantised = ConvEnergy((1, 8, 8), channels=4, depth=2, quantised_input=True)
    plain = ConvEnergy((1, 8, 8), channels=4, depth=2)
    plain.load_state_dict(quantised.state_dict())
    with torch.no_grad():
        assert torch.equal(quantised(x), quantised(redrawn))
        assert torch.equal(quantised(x), quantised(overshoot))
        assert torch.equal(quantised(x), plain((levels + 0.5) / 256))
        assert not torch.equal(plain(x), plain(redrawn)), "the plain energy sees within a level"
