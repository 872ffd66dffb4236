import math

import pytest
import torch

from lit_ebm.toy2d import (
    TOY2D_SHAPES,
    grid_energy,
    log_partition_grid,
    mode_precision_and_coverage,
    ring8_modes,
    sample_toy2d,
)


@pytest.mark.parametrize("shape", TOY2D_SHAPES)
def test_samples_have_shape_dtype_and_are_reproducible(shape):
    first = sample_toy2d(shape, 500, generator=torch.Generator().manual_seed(3))
    second = sample_toy2d(shape, 500, generator=torch.Generator().manual_seed(3))
    other = sample_toy2d(shape, 500, generator=torch.Generator().manual_seed(4))
    assert first.shape == (500, 2) and first.dtype == torch.float32
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert torch.isfinite(first).all()


def test_ring8_modes_lie_on_circle_of_radius_two():
    centres, std = ring8_modes()
    assert centres.shape == (8, 2) and std == 0.1
    torch.testing.assert_close(centres.norm(dim=1), torch.full((8,), 2.0))
    assert len(torch.unique(torch.atan2(centres[:, 1], centres[:, 0]).round(decimals=4))) == 8


def test_ring8_samples_are_precise_and_cover_every_mode():
    samples = sample_toy2d("ring8", 20_000, generator=torch.Generator().manual_seed(0))
    centres, std = ring8_modes()
    precision, covered = mode_precision_and_coverage(samples, centres, std)
    assert precision >= 0.98
    assert covered == 8
    # Within 2 std in 2-D is a chi^2_2 event of probability 1 - exp(-2) ~ 0.865.
    precision_2std, _ = mode_precision_and_coverage(samples, centres, std, num_std=2.0)
    assert precision_2std == pytest.approx(1.0 - math.exp(-2.0), abs=0.01)


def test_collapsed_samples_cover_only_their_modes():
    centres, std = ring8_modes()
    generator = torch.Generator().manual_seed(1)
    modes = torch.randint(3, (3000,), generator=generator)
    samples = centres[modes] + std * torch.randn(3000, 2, generator=generator)
    precision, covered = mode_precision_and_coverage(samples, centres, std)
    assert precision >= 0.98
    assert covered == 3


def test_uniform_samples_have_low_precision():
    samples = 6.0 * torch.rand(20_000, 2, generator=torch.Generator().manual_seed(2)) - 3.0
    centres, std = ring8_modes()
    precision, _ = mode_precision_and_coverage(samples, centres, std)
    # 8 discs of radius 0.3 cover 8 * pi * 0.09 / 36 ~ 6.3% of the box.
    assert precision < 0.1


def test_pinwheel_has_five_arms_at_expected_radius():
    samples = sample_toy2d("pinwheel", 20_000, generator=torch.Generator().manual_seed(5))
    radii = samples.norm(dim=1)
    assert radii.median().item() == pytest.approx(2.0, abs=0.1)
    # Points at radius ~2 (a ~ 0) sit near angles 2 pi k / 5 + 0.25 e, spread by about 0.1 rad
    # (0.08 arm spacings): five tight clusters, where uniform angles would give 50% here.
    ring = samples[(radii - 2.0).abs() < 0.1]
    offsets = torch.atan2(ring[:, 1], ring[:, 0]) - 0.25 * math.e
    phase = torch.remainder(offsets * 5.0 / (2.0 * math.pi) + 0.5, 1.0) - 0.5
    assert (phase.abs() < 0.25).double().mean() > 0.97


def test_log_partition_grid_of_gaussian_energy_is_log_two_pi():
    log_z = log_partition_grid(
        lambda x: 0.5 * x.pow(2).sum(dim=1), bound=8.0, resolution=400, chunk_size=10_000
    )
    assert log_z == pytest.approx(math.log(2.0 * math.pi), abs=1e-6)


def test_grid_energy_layout_rows_are_y_columns_are_x():
    coords, energies = grid_energy(lambda x: x[:, 0] + 10.0 * x[:, 1], bound=1.0, resolution=4)
    expected = torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64)
    torch.testing.assert_close(coords, expected)
    torch.testing.assert_close(energies, coords[None, :] + 10.0 * coords[:, None])


def test_unknown_shape_names_valid_shapes():
    with pytest.raises(ValueError, match=r"ring8.*pinwheel"):
        sample_toy2d("spiral", 10)
