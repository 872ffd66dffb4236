"""Log-densities in float32 under any Trainer precision: whole-model half precision refused,
bf16-mixed adversarial steps against float32 ones, and clipping under a grad scaler acting on
unscaled gradients."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lit_ebm import objectives
from lit_ebm import trainer as trainer_module
from lit_ebm.build import build_module
from lit_ebm.config import DataConfig, load_config
from lit_ebm.data import build_datamodule
from lit_ebm.energy import ConvEnergy, ResidualEnergy
from lit_ebm.errors import ConfigError
from lit_ebm.fit import main as fit
from lit_ebm.generators.base import bits_per_dim
from lit_ebm.generators.pixelcnn import PixelCNN
from lit_ebm.generators.realnvp import RealNVP
from lit_ebm.modules import AdversarialEBM
from lit_ebm.precision import density_call
from lit_ebm.toy2d import sample_toy2d
from tests.tiny import quiet_trainer

# Measured on a 2-core x86_64 CPU with AVX-512 BF16 (torch 2.14.1, Lightning 2.6.6), bf16-mixed
# against 32-true from the same weights and batch, log q up to 2,971 nats: the generator's
# hidden layers run in bfloat16, so log q moves by up to 3.1 nats per image and by -0.86 nats on
# average (0.0016 bits/dim); with the residual energy, whose base moves with the generator, the
# discriminator logits differ by at most 0.077 nats; L_D by at most 0.03 nats and L_G by 0.005.
# Without the finer policy (a whole log-density in bfloat16) errors are whole nats per
# operation (test above). The tolerances leave a margin for other machines' kernels.
BITS_PER_DIM_TOLERANCE = 0.002  # mean log q difference, in bits/dim
RESIDUAL_LOGIT_TOLERANCE = 0.25  # nats, absolute
LOSS_TOLERANCE = 0.1  # nats, absolute


@pytest.mark.parametrize("precision", ["16-true", "bf16-true"])
@pytest.mark.parametrize("objective", ["mle", "adversarial"])
def test_whole_model_half_precision_is_refused_with_one_line(
        precision: str, objective: str, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = [f"trainer.precision={precision}", f"model.objective={objective}"]
    with pytest.raises(ConfigError, match=r"'trainer.precision'.*trainer.precision=bf16-mixed"):
        load_config(["configs/quickstart.yaml"], overrides)
    assert fit(["--config", "configs/quickstart.yaml", *overrides]) == 2
    assert capsys.readouterr().err.count("\n") == 1


class _HalfSum(nn.Module):
    """A density network that reduces in whatever precision autocast gives its layers."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dims, dims)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.linear(x).sum(1)


def test_networks_without_the_promise_are_evaluated_in_float32() -> None:
    torch.manual_seed(0)
    network = _HalfSum(784)
    nn.init.constant_(network.linear.bias, 3.0)  # log-densities near 2,400 nats, as on images
    x = torch.rand(8, 784)
    exact = network.double().log_prob(x.double())
    network.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        naive = network.log_prob(x)
        safe = density_call(network, "cpu", network.log_prob, x)
    # measured: 6.7 nats off in bfloat16 (its spacing is 16 nats here), 1e-4 in float32
    assert naive.dtype == torch.bfloat16 and (naive.double() - exact).abs().max() > 1.0
    assert safe.dtype == torch.float32 and (safe.double() - exact).abs().max() < 1e-2


def _image_step(precision: str, residual: bool,
                monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """One adversarial training step from fixed weights and a fixed batch of 16 digits: what
    reached the discriminator loss, and the logged losses."""
    pl.seed_everything(0, verbose=False)
    generator = RealNVP((1, 28, 28), num_scales=2, num_blocks=2, hidden_channels=16)
    with torch.no_grad():  # away from the near-identity initialisation
        for parameter in generator.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    net = ConvEnergy((1, 28, 28), channels=8, depth=2)
    energy = ResidualEnergy(net, RealNVP((1, 28, 28), 2, 2, 16)) if residual else net
    if residual:
        energy.base.load_state_dict(generator.state_dict())
    module = AdversarialEBM(generator, energy)
    data = build_datamodule(DataConfig(name="mnist5k", batch_size=16), dequantise=True)
    data.setup("fit")
    batch = torch.stack([data.val_set[i] for i in range(16)])
    seen: dict[str, Any] = {}
    loss = objectives.discriminator_loss

    def recording(*args: Tensor) -> Tensor:
        energy_real, energy_fake, log_z, log_q_real, log_q_fake = args
        seen["dtypes"] = {a.dtype for a in args}
        seen["log_q"] = torch.cat([log_q_real, log_q_fake]).detach()
        seen["logits"] = torch.cat([
            objectives.discriminator_logits(energy_real, log_z, log_q_real),
            objectives.discriminator_logits(energy_fake, log_z, log_q_fake)]).detach()
        return loss(*args)

    monkeypatch.setattr(objectives, "discriminator_loss", recording)
    trainer = quiet_trainer(precision=precision, max_steps=1, log_every_n_steps=1)
    trainer.fit(module, DataLoader([batch], batch_size=None))
    metrics = trainer.callback_metrics
    dims = module.generator.num_dims  # losses are logged per dimension; compared per image
    return {**seen, "loss_d": float(metrics["train/loss_d"]) * dims,
            "loss_g": float(metrics["train/loss_g"]) * dims}


@pytest.mark.parametrize("residual", [False, True])
def test_bf16_mixed_step_stays_close_to_the_float32_step(residual: bool,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    full = _image_step("32-true", residual, monkeypatch)
    mixed = _image_step("bf16-mixed", residual, monkeypatch)
    assert mixed["dtypes"] == {torch.float32}, "everything L_D sees is float32"
    assert full["log_q"].abs().max() > 1000, "log-densities of thousands of nats"
    assert not torch.equal(mixed["log_q"], full["log_q"]), "the generator ran in bfloat16"
    shift = (mixed["log_q"] - full["log_q"]).mean().abs().item()
    assert shift / (784 * math.log(2)) < BITS_PER_DIM_TOLERANCE
    if residual:
        assert (mixed["logits"] - full["logits"]).abs().max() < RESIDUAL_LOGIT_TOLERANCE
    assert mixed["loss_d"] == pytest.approx(full["loss_d"], abs=LOSS_TOLERANCE)
    assert mixed["loss_g"] == pytest.approx(full["loss_g"], abs=LOSS_TOLERANCE)


class _StepNorms(pl.Callback):
    """The gradient norm each optimiser stepped with (after unscaling and clipping), read after
    the step: without a grad scaler the optimiser calls the closure, which clips, inside step()."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            optimizer.register_step_post_hook(self._record)

    def _record(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))


def _toy_step(clip: float, scaler: torch.amp.GradScaler | None,
              generator_clip: float | None = None) -> tuple[_StepNorms, dict]:
    """One energy step and one generator step on toy2d; the energy's gradients clipped to
    ``clip``, the generator's to ``generator_clip`` (default: ``clip`` too)."""
    generator_clip = clip if generator_clip is None else generator_clip
    pl.seed_everything(0, verbose=False)
    cfg = load_config(["configs/toy2d_adversarial.yaml"], [
        "model.generator.realnvp2d.num_couplings=2", "model.generator.realnvp2d.hidden_features=16",
        "model.energy.mlp.hidden_features=16", "model.energy.mlp.depth=2",
        f"model.generator_optim.grad_clip_norm={generator_clip}",
        f"model.energy_optim.grad_clip_norm={clip}"])
    module = build_module(cfg, (2,))
    norms = _StepNorms()
    plugins = [MixedPrecision("16-mixed", "cpu", scaler=scaler)] if scaler else []
    trainer = quiet_trainer(max_steps=1, plugins=plugins, callbacks=[norms],
                            log_every_n_steps=1)
    points = sample_toy2d("ring8", 64, torch.Generator().manual_seed(0))
    trainer.fit(module, DataLoader(points, batch_size=64))
    return norms, {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_clipping_under_a_grad_scaler_acts_on_unscaled_gradients() -> None:
    """With a loss scale of 4096, a clip to 1e-3 leaves norms of exactly 1e-3 (clipping scaled
    gradients would leave 1e-3 / 4096), and the logged norms are those of float32 training."""
    scaler = torch.amp.GradScaler("cpu", init_scale=4096.0)
    scaled, logged = _toy_step(1e-3, scaler)
    assert len(scaled.norms) == 2, "one energy step and one generator step, none skipped"
    assert scaled.norms == pytest.approx([1e-3, 1e-3], rel=1e-4)
    _, full = _toy_step(1e-3, None)
    for role in ("energy", "generator"):
        norm = logged[f"train/grad_norm_{role}"]
        assert norm > 1e-3 and logged[f"train/clipped_{role}"] == 1.0
        assert norm == pytest.approx(full[f"train/grad_norm_{role}"], rel=1e-2)


def test_each_optimiser_is_clipped_to_its_own_norm() -> None:
    """The energy's gradients are clipped to 1e-3, the generator's (norm about 0.7) to 10: only
    the energy is clipped, and each step's logged flag says so."""
    norms, logged = _toy_step(1e-3, None, generator_clip=10.0)
    energy_norm, generator_norm = norms.norms
    assert energy_norm == pytest.approx(1e-3, rel=1e-4)
    assert logged["train/grad_norm_energy"] > 1e-3 and logged["train/clipped_energy"] == 1.0
    assert generator_norm == pytest.approx(logged["train/grad_norm_generator"], rel=1e-5)
    assert 1e-3 < generator_norm < 10.0 and logged["train/clipped_generator"] == 0.0


def _briefly_trained(generator: nn.Module, images: Tensor, steps: int) -> nn.Module:
    """``generator`` after ``steps`` maximum-likelihood steps of Adam on ``images``."""
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3)
    for step in range(steps):
        batch = images[(step * 32) % len(images):][:32]
        optimizer.zero_grad()
        (-generator.log_prob(batch).mean()).backward()
        optimizer.step()
    return generator.eval()


@pytest.mark.parametrize("name", ["realnvp", "pixelcnn"])
def test_bits_per_dim_under_bf16_autocast_is_within_0_002_of_float32(name: str) -> None:
    """A briefly trained generator's mean bits/dim on 64 validation digits, its hidden layers
    in bfloat16 (the training precision bf16-mixed) against float32."""
    pl.seed_everything(0, verbose=False)
    data = build_datamodule(DataConfig(name="mnist5k"), dequantise=name == "realnvp")
    data.setup("fit")
    train = torch.stack([data.train_set[i] for i in range(256)])
    val = torch.stack([data.val_set[i] for i in range(64)])
    generator = (RealNVP((1, 28, 28), num_scales=2, num_blocks=1, hidden_channels=16)
                 if name == "realnvp" else PixelCNN((1, 28, 28), channels=16, dilations=(1, 2)))
    generator = _briefly_trained(generator, train, steps=20)
    with torch.no_grad():
        full = generator.bits_per_dim(val).mean().item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_q = density_call(generator, "cpu", generator.log_prob, val)
    mixed = bits_per_dim(log_q, 784, generator.discrete).mean().item()
    assert log_q.dtype == torch.float32 and full < 7.0, "trained past the uniform 8 bits/dim"
    assert mixed != full, "the hidden layers ran in bfloat16"
    assert abs(mixed - full) < BITS_PER_DIM_TOLERANCE


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_is_bf16_mixed_only_where_bf16_is_native(
        native: bool, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer_module, "bf16_supported", lambda device_type: native)
    cfg = load_config(["configs/quickstart.yaml"], ["trainer.accelerator=cpu"])
    assert cfg.trainer.precision == "auto"
    assert trainer_module.resolved_precision(cfg.trainer) == expected
    assert trainer_module.resolved_precision(replace(cfg.trainer, precision="32-true")) == "32-true"
