"""Tests of the Gated PixelCNN: causality, no blind spot, normalisation, exact sampling, the two
samplers' agreement, and training and errors through the CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from scipy import stats

from lit_ebm.build import build_module
from lit_ebm.config import load_config
from lit_ebm.errors import InvalidArgument
from lit_ebm.fit import main
from lit_ebm.generators.pixelcnn import PixelCNN
from lit_ebm.modules import AdversarialEBM, MaximumLikelihood
from tests.tiny import (
    TINY_IMAGE_RUN,
    TINY_PIXELCNN_RUN,
    TINY_RESIDUAL_ENERGY,
    logged,
    one_line_error,
)

TINY = {"channels": 8, "dilations": (1, 2)}


pytestmark = pytest.mark.usefixtures("single_thread")


def make_model(image_shape: tuple[int, int, int], **kwargs: object) -> PixelCNN:
    torch.manual_seed(0)
    return PixelCNN(image_shape, **{**TINY, **kwargs})


def sharpen(model: PixelCNN, seed: int = 1) -> PixelCNN:
    """Scale the head's output, and the links into it from the previous sub-pixel, so that each
    categorical is far from uniform and depends strongly on what came before (a fresh network
    is nearly uniform over the 256 levels)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.head.out.weight.mul_(8.0)
        model.head.out.bias.copy_(3.0 * torch.randn(model.head.out.bias.shape,
                                                    generator=generator))
        model.first_horizontal.weight.mul_(3.0)
        if model.head.earlier_channels is not None:
            model.head.earlier_channels.weight.mul_(3.0)
    return model


def random_images(image_shape: tuple[int, ...], batch: int, seed: int = 0,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    levels = torch.randint(0, 256, (batch, *image_shape), generator=torch.Generator()
                           .manual_seed(seed))
    return levels.to(dtype) / 255


def all_images(image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Every 8-bit image of a shape with two sub-pixels."""
    levels = torch.cartesian_prod(torch.arange(256), torch.arange(256))
    return (levels.float() / 255).reshape(-1, *image_shape)


def input_gradients(model: PixelCNN, image_shape: tuple[int, int, int],
                    positions: list[tuple[int, int, int]]) -> torch.Tensor:
    """``(len(positions), C, H, W)``: gradient of a random projection of the logits of each
    sub-pixel ``(c, i, j)`` in ``positions`` with respect to every input sub-pixel (one batch
    element per position; images do not interact)."""
    x = random_images(image_shape, 1).expand(len(positions), -1, -1, -1).clone()
    x.requires_grad_(True)
    logits = model(x)
    index = torch.tensor(positions)
    selected = logits[torch.arange(len(positions)), :, index[:, 0], index[:, 1], index[:, 2]]
    projection = torch.randn(256, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad((selected @ projection).sum(), x)
    return grad


@pytest.mark.parametrize("image_shape", [(1, 6, 6), (3, 5, 5)])
def test_logits_depend_only_on_earlier_sub_pixels(image_shape):
    channels, height, width = image_shape
    positions = list(itertools.product(range(channels), range(height), range(width)))
    grads = input_gradients(make_model(image_shape), image_shape, positions)
    for (c, i, j), g in zip(positions, grads, strict=True):
        assert g[:, i, j + 1:].abs().sum() == 0 and g[:, i + 1:].abs().sum() == 0, "later pixel"
        assert g[c:, i, j].abs().sum() == 0, f"channel {c} sees channels >= {c} of its pixel"
        for earlier in range(c):
            assert g[earlier, i, j].abs() > 0, f"channel {c} misses channel {earlier}"
        if (i, j) != (0, 0):
            neighbour = (i, j - 1) if j else (i - 1, j)
            assert g[:, neighbour[0], neighbour[1]].abs().sum() > 0, "misses its left/up pixel"


@pytest.mark.parametrize(("dilations", "reach"), [((1, 1, 1), 4), ((1, 2, 1), 5)])
def test_no_blind_spot_the_receptive_field_is_the_full_causal_window(dilations, reach):
    # kernel 3: one row or column per unit of dilation, plus the first layer's one, so the
    # field of (i, j) is rows i-reach..i-1 by columns j-reach..j+reach, and row i left of j.
    image_shape = (1, 12, 12)
    i, j = 9, 6
    model = make_model(image_shape, dilations=dilations)
    grad = input_gradients(model, image_shape, [(0, i, j)])[0, 0]
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[i - reach:i, j - reach:j + reach + 1] = True
    expected[i, j - reach:j] = True
    assert torch.equal(grad != 0, expected)
    assert grad[i - 1, j + reach] != 0, "the pixel up and to the right is seen"


@pytest.mark.parametrize("image_shape", [(1, 1, 2), (2, 1, 1)])
def test_probabilities_of_all_images_sum_to_one(image_shape):
    model = sharpen(make_model(image_shape))
    with torch.no_grad():
        log_q = model.log_prob(all_images(image_shape))
    assert abs(log_q.double().exp().sum().item() - 1.0) < 1e-5
    assert log_q.max() > -3.0, "sharpened: a few images carry most of the mass"


@pytest.mark.parametrize("image_shape", [(1, 1, 2), (2, 1, 1)])
def test_samples_follow_the_model_distribution(image_shape):
    model = sharpen(make_model(image_shape))
    with torch.no_grad():
        p = model.log_prob(all_images(image_shape)).double().exp()
    joint = p.reshape(256, 256)
    independent = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    assert (joint - independent).abs().sum() > 0.2, "the second sub-pixel depends on the first"

    num_samples = 20_000
    torch.manual_seed(4)
    x, log_q = model.sample(num_samples)
    torch.testing.assert_close(log_q, model.log_prob(x), rtol=1e-5, atol=1e-5)
    levels = torch.round(x.flatten(1) * 255).long()
    counts = torch.bincount(levels[:, 0] * 256 + levels[:, 1], minlength=256 * 256).double()
    expected = num_samples * p / p.sum()
    frequent = expected >= 5
    observed = torch.cat([counts[frequent], counts[~frequent].sum().reshape(1)])
    predicted = torch.cat([expected[frequent], expected[~frequent].sum().reshape(1)])
    assert frequent.sum() > 20
    assert stats.chisquare(observed.numpy(), predicted.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 8, 8)])
def test_fast_and_naive_samplers_return_the_same_images(image_shape):
    model = sharpen(make_model(image_shape))
    torch.manual_seed(5)
    x_fast, log_q_fast = model.sample(3)
    torch.manual_seed(5)
    x_naive, log_q_naive = model.sample(3, method="naive")
    assert torch.equal(x_fast, x_naive)
    torch.testing.assert_close(log_q_fast, log_q_naive, rtol=1e-6, atol=0)
    assert x_fast.shape == (3, *image_shape) and log_q_fast.shape == (3,)
    assert torch.equal(x_fast, torch.round(x_fast * 255) / 255), "levels k / 255"
    assert x_fast.min() >= 0 and x_fast.max() <= 1 and x_fast.std() > 0
    torch.testing.assert_close(log_q_fast, model.log_prob(x_fast), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_the_cached_sampler_matches_the_reference_with_dilations_and_under_autocast(
        temperature: float) -> None:
    """Dilated layers read columns and rows a dilation apart from the caches; under bf16
    autocast the sampler still runs in float32, so its images and log-masses do not change."""
    model = sharpen(make_model((3, 9, 7), dilations=(1, 2, 4), kernel_size=5))
    torch.manual_seed(6)
    x_naive, log_q_naive = model.sample(4, method="naive", temperature=temperature)
    torch.manual_seed(6)
    x_fast, log_q_fast = model.sample(4, temperature=temperature)
    torch.manual_seed(6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_autocast, log_q_autocast = model.sample(4, temperature=temperature)
    assert torch.equal(x_fast, x_naive) and x_fast.std() > 0
    torch.testing.assert_close(log_q_fast, log_q_naive, rtol=1e-6, atol=0)
    assert torch.equal(x_autocast, x_fast) and torch.equal(log_q_autocast, log_q_fast)
    assert log_q_autocast.dtype == torch.float32


def test_bits_per_dim_of_a_fresh_model_is_close_to_eight():
    # A fresh network is nearly uniform over 256 levels: 8 bits per sub-pixel.
    model = make_model((3, 8, 8))
    bpd = model.bits_per_dim(random_images((3, 8, 8), 4))
    assert bpd.shape == (4,) and ((bpd - 8.0).abs() < 0.5).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_shape": (2,)}, r"image_shape must be \(C, H, W\).*PixelCNN models images"),
        ({"image_shape": (1, 0, 28)}, "image_shape must be a positive integer, got 0"),
        ({"channels": 0}, "channels must be a positive integer, got 0; pass e.g. channels=64"),
        ({"dilations": []}, "dilations must list at least one dilation"),
        ({"dilations": [1, 0]}, "dilations must be a positive integer, got 0"),
        ({"kernel_size": 4}, "kernel_size must be odd and at least 3, got 4"),
        ({"kernel_size": 1}, "kernel_size must be odd and at least 3, got 1"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(InvalidArgument, match=match) as info:
        PixelCNN(**{"image_shape": (1, 28, 28), **kwargs})
    assert info.value.argument == next(iter(kwargs)), "names the argument for the config key"


def test_wrong_input_and_method_raise():
    model = make_model((1, 4, 4))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 4, 4\)"):
        model.log_prob(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"expected levels k / 255 in \[0, 1\].*got values in"):
        model.log_prob(torch.full((2, 1, 4, 4), 1.5))
    with pytest.raises(ValueError, match="method must be 'fast' or 'naive'"):
        model.sample(2, method="cached")


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-epoch maximum-likelihood PixelCNN run through the CLI; its run folder."""
    output = tmp_path_factory.mktemp("pixelcnn")
    assert main([*TINY_PIXELCNN_RUN, f"output_dir={output}", "name=ml"]) == 0
    return output / "ml" / "version_0"


@pytest.mark.slow
def test_ml_run_lowers_val_bpd_and_its_checkpoint_reloads(ml_run: Path) -> None:
    val_bpd = logged(ml_run, "val/bpd")
    assert len(val_bpd) == 2 and val_bpd[1] < val_bpd[0] < 8.5
    assert sorted(p.name for p in (ml_run / "samples").glob("*.png")) == ["epoch0000.png",
                                                                         "epoch0001.png"]
    ckpt = ml_run / "checkpoints" / "last.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["generator"]["network"] == "PixelCNN"
    model = MaximumLikelihood.load_from_checkpoint(ckpt, map_location="cpu")
    assert isinstance(model.generator, PixelCNN) and model.generator.channels == 8
    bpd = model.generator.bits_per_dim(random_images((1, 28, 28), 2))
    assert bpd.shape == (2,) and torch.isfinite(bpd).all()


@pytest.mark.slow
def test_adversarial_run_with_residual_energy_from_the_ml_checkpoint(ml_run: Path,
                                                                       tmp_path: Path) -> None:
    ml_ckpt = ml_run / "checkpoints" / "last.ckpt"
    run = [*TINY_PIXELCNN_RUN, *TINY_RESIDUAL_ENERGY, f"model.generator_init={ml_ckpt}",
           "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
           f"output_dir={tmp_path}", "name=adv"]
    assert main(run) == 0
    run_dir = tmp_path / "adv" / "version_0"
    assert all(torch.isfinite(torch.tensor(logged(run_dir, key))).all()
               for key in ("train/loss_g", "train/loss_d", "train/entropy", "val/bpd"))
    assert (run_dir / "samples" / "epoch0000.png").is_file()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["global_step"] == 4, "2 batches x (energy + generator step)"
    model = AdversarialEBM.load_from_checkpoint(ckpt, map_location="cpu")
    assert isinstance(model.generator, PixelCNN) and isinstance(model.energy.base, PixelCNN)
    ml_weights = torch.load(ml_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    base = model.energy.base.state_dict()
    assert all(torch.equal(base[name[len("generator."):]], value)
               for name, value in ml_weights.items() if name.startswith("generator."))
    scores = model.score(random_images((1, 28, 28), 2))
    assert torch.isfinite(scores["log_prob"]).all()


def _realnvp_checkpoint(path: Path) -> Path:
    """A MaximumLikelihood RealNVP checkpoint as Lightning writes it (weights, hyperparameters)."""
    module = build_module(load_config([], TINY_IMAGE_RUN), (1, 28, 28))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)},
               path)
    return path


@pytest.mark.slow
def test_generator_init_holding_another_generator_is_named(
    ml_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    realnvp = _realnvp_checkpoint(tmp_path / "realnvp.ckpt")
    assert main([*TINY_PIXELCNN_RUN, *TINY_RESIDUAL_ENERGY, f"model.generator_init={realnvp}",
                 f"output_dir={tmp_path}"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "holds a realnvp generator" in err and "model.generator.name is pixelcnn" in err

    pixelcnn = ml_run / "checkpoints" / "last.ckpt"
    assert main([*TINY_IMAGE_RUN, *TINY_RESIDUAL_ENERGY, f"model.generator_init={pixelcnn}",
                 f"output_dir={tmp_path}"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "holds a pixelcnn generator" in err and "model.generator.name is realnvp" in err

    assert main([*TINY_IMAGE_RUN, f"ckpt_path={pixelcnn}", f"output_dir={tmp_path}"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "ckpt_path" in err and "holds a pixelcnn generator" in err


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.generator.pixelcnn.channels=0", "model.generator.pixelcnn.channels"),
        ("model.generator.pixelcnn.kernel_size=4", "model.generator.pixelcnn.kernel_size"),
        ("model.generator.pixelcnn.kernel_size=1", "model.generator.pixelcnn.kernel_size"),
        ("model.generator.pixelcnn.dilations=[]", "model.generator.pixelcnn.dilations"),
        ("model.generator.pixelcnn.dilations=[1,0]", "model.generator.pixelcnn.dilations"),
        ("data.name=toy2d", "model.generator.name"),
    ],
)
def test_impossible_settings_exit_2_naming_the_key(override: str, key: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model.generator.name=pixelcnn", override]) == 2
    assert f"'{key}'" in one_line_error(capsys.readouterr().err)
