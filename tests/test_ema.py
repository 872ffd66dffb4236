"""The generator's exponential moving average (model.generator_ema): what it averages, what
validation, sampling and checkpoints see, and resuming it exactly."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch import Tensor
from torch.utils.data import DataLoader

from lit_ebm.averaging import EMA_KEY, GeneratorEMA
from lit_ebm.build import check_resume
from lit_ebm.checkpoints import sub_state_dict
from lit_ebm.config import load_config
from lit_ebm.energy import MLPEnergy
from lit_ebm.errors import ConfigError, InvalidArgument
from lit_ebm.evaluation.loading import load_checkpoint
from lit_ebm.fit import main, parameter_checksum
from lit_ebm.generators import RealNVP2d
from lit_ebm.modules import AdversarialEBM, GenerativeModule, MaximumLikelihood, load_module
from lit_ebm.toy2d import sample_toy2d
from tests.tiny import TINY_IMAGE_RUN, quiet_trainer

DECAY = 0.5  # a short memory, so that a few steps move the average far from the raw weights
BATCHES, BATCH_SIZE = 4, 32
TRAIN = sample_toy2d("ring8", BATCHES * BATCH_SIZE, torch.Generator().manual_seed(0))
VAL = sample_toy2d("ring8", 64, torch.Generator().manual_seed(1))
OBJECTIVES = ["mle", "adversarial"]


def _module(objective: str) -> GenerativeModule:
    torch.manual_seed(0)
    generator = RealNVP2d(num_couplings=2, hidden_features=16)
    if objective == "mle":
        return MaximumLikelihood(generator)
    return AdversarialEBM(generator, MLPEnergy(hidden_features=16, depth=2))


def _state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Record(Callback):
    """Reseed at each batch (the adversarial step draws generator samples, and a resumed run's
    random state is not the uninterrupted run's) and record the raw generator weights after
    every training batch."""

    def __init__(self) -> None:
        self.weights: list[dict[str, Tensor]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: object, batch_idx: int) -> None:
        torch.manual_seed(trainer.current_epoch * BATCHES + batch_idx)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: object, batch: object, batch_idx: int) -> None:
        assert isinstance(pl_module, GenerativeModule)
        self.weights.append(_state(pl_module.generator))


def _fit(module: GenerativeModule, epochs: int, decay: float | None, folder: Path | None = None,
         resume: Path | None = None) -> tuple[Record, GeneratorEMA | None]:
    """Train on TRAIN in a fixed order, validating on VAL every epoch; with ``folder``, write
    last.ckpt there as a run does."""
    record = Record()
    ema = None if decay is None else GeneratorEMA(decay)
    callbacks: list[Callback] = [record, *([ema] if ema else [])]
    if folder is not None:
        callbacks.append(ModelCheckpoint(dirpath=folder, save_top_k=0, save_last=True,
                                         enable_version_counter=False))
    trainer = quiet_trainer(max_epochs=epochs, enable_checkpointing=folder is not None,
                            callbacks=callbacks, limit_val_batches=None)
    trainer.fit(module, DataLoader(TRAIN, batch_size=BATCH_SIZE),
                DataLoader(VAL, batch_size=len(VAL)), ckpt_path=resume)
    return record, ema


def _manual_average(start: dict[str, Tensor], weights: list[dict[str, Tensor]],
                    decay: float) -> dict[str, Tensor]:
    """The EMA of ``start`` followed by ``weights``, in float64."""
    average = {k: v.double() for k, v in start.items()}
    for step in weights:
        average = {k: decay * v + (1 - decay) * step[k].double() for k, v in average.items()}
    return average


def _assert_equal_states(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _draw(module: GenerativeModule, seed: int = 7) -> Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return module.generator.sample(256)[0]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_ema_samples_from_the_average_and_trains_on_the_raw_weights(objective: str) -> None:
    plain = _module(objective)
    _fit(plain, 1, None)
    averaged = _module(objective)
    start = _state(averaged.generator)
    record, ema = _fit(averaged, 1, DECAY)
    assert ema is not None and ema.raw is not None and len(record.weights) == BATCHES

    # training went on from the raw weights: they are the EMA-less run's, exactly
    _assert_equal_states(ema.raw, _state(plain.generator))
    # the module now holds the average of the start and the weights after each batch
    expected = _manual_average(start, record.weights, DECAY)
    for name, tensor in averaged.generator.state_dict().items():
        assert torch.allclose(tensor.double(), expected[name], rtol=0, atol=1e-6), name
    # only the generator is averaged: the energy, log Z and every other state are the raw ones
    other = {k: v for k, v in _state(plain).items() if not k.startswith("generator.")}
    _assert_equal_states({k: v for k, v in _state(averaged).items()
                          if not k.startswith("generator.")}, other)
    assert objective == "mle" or {"log_z", "energy.net.0.weight"} <= other.keys()

    reference = copy.deepcopy(plain.generator)
    reference.load_state_dict({k: v.float() for k, v in expected.items()})
    samples = _draw(averaged)
    assert not torch.allclose(samples, _draw(plain), atol=1e-3), "EMA changes the samples"
    torch.manual_seed(7)
    with torch.no_grad():
        assert torch.allclose(samples, reference.sample(256)[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_validation_measures_the_average(objective: str) -> None:
    module = _module(objective)
    _fit(module, 1, DECAY)
    logged = float(module.trainer.callback_metrics["val/nll"])
    with torch.no_grad():
        assert logged == pytest.approx(float(-module.log_q(VAL).mean()), rel=1e-6)
        raw = copy.deepcopy(module.generator)
        ema = next(c for c in module.trainer.callbacks if isinstance(c, GeneratorEMA))
        assert ema.raw is not None
        raw.load_state_dict(ema.raw)
        assert logged != pytest.approx(float(-raw.log_prob(VAL).mean()), rel=1e-3)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_checkpoint_holds_the_average_to_evaluate_and_the_raw_weights_to_resume(
        objective: str, tmp_path: Path) -> None:
    module = _module(objective)
    _, ema = _fit(module, 1, DECAY, folder=tmp_path)
    assert ema is not None and ema.raw is not None
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    _assert_equal_states(sub_state_dict(checkpoint["state_dict"], "generator"),
                         _state(module.generator))
    _assert_equal_states(checkpoint[EMA_KEY]["raw"], ema.raw)
    assert checkpoint[EMA_KEY]["decay"] == DECAY
    loaded = load_module(tmp_path / "last.ckpt")
    _assert_equal_states(_state(loaded), _state(module))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_resume_continues_the_raw_weights_and_the_average_exactly(objective: str,
                                                                  tmp_path: Path) -> None:
    straight = _module(objective)
    _, straight_ema = _fit(straight, 2, DECAY)
    first = _module(objective)
    _fit(first, 1, DECAY, folder=tmp_path)
    resumed = _module(objective)
    record, resumed_ema = _fit(resumed, 2, DECAY, tmp_path / "resumed", tmp_path / "last.ckpt")
    assert len(record.weights) == BATCHES, "the resumed run trained the second epoch only"
    assert straight_ema is not None and resumed_ema is not None
    assert straight_ema.raw is not None and resumed_ema.raw is not None
    _assert_equal_states(resumed_ema.raw, straight_ema.raw)
    _assert_equal_states(_state(resumed), _state(straight))


def test_resuming_an_average_starts_it_from_a_checkpoint_without_one(tmp_path: Path) -> None:
    _fit(_module("mle"), 1, None, folder=tmp_path)
    start = sub_state_dict(torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"],
                           "generator")
    resumed = _module("mle")
    record, _ = _fit(resumed, 2, DECAY, tmp_path / "resumed", tmp_path / "last.ckpt")
    expected = _manual_average(start, record.weights, DECAY)
    for name, tensor in resumed.generator.state_dict().items():
        assert torch.allclose(tensor.double(), expected[name], rtol=0, atol=1e-6), name


def test_resuming_an_averaged_run_without_the_average_is_refused(tmp_path: Path) -> None:
    module = _module("adversarial")
    _fit(module, 1, DECAY, folder=tmp_path)
    cfg = load_config([], ["data.name=toy2d", "model.objective=adversarial",
                           "model.generator.name=realnvp2d", "model.energy.name=mlp"])
    with pytest.raises(ConfigError) as refused:
        check_resume(tmp_path / "last.ckpt", cfg, module)
    message = str(refused.value)
    assert "\n" not in message and f"model.generator_ema={DECAY}" in message
    cfg.model.generator_ema = 0.9
    check_resume(tmp_path / "last.ckpt", cfg, module)


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.5"])
def test_a_decay_outside_the_open_unit_interval_is_one_line(value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config([], [f"model.generator_ema={value}"])
    message = str(refused.value)
    assert "\n" not in message and "'model.generator_ema'" in message and "(0, 1)" in message
    with pytest.raises(InvalidArgument, match=r"decay must be in \(0, 1\)"):
        GeneratorEMA(float(value))


def test_ema_is_off_by_default_and_takes_a_decay() -> None:
    assert load_config([], []).model.generator_ema is None
    assert load_config([], ["model.generator_ema=0.999"]).model.generator_ema == 0.999
    for value in ("true", "fast"):
        with pytest.raises(ConfigError, match="'model.generator_ema'.*a number or null$"):
            load_config([], [f"model.generator_ema={value}"])


@pytest.mark.slow
def test_a_run_with_ema_checkpoints_the_average_for_evaluate(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    run = [*TINY_IMAGE_RUN, "trainer.max_epochs=1", f"output_dir={tmp_path}", "name=ema"]
    assert main([*run, "model.generator_ema=0.9"]) == 0
    last = tmp_path / "ema" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    # the module ends holding what last.ckpt holds: the average
    assert f"checksum: {parameter_checksum(checkpoint['state_dict'])}" in capsys.readouterr().out
    average = sub_state_dict(checkpoint["state_dict"], "generator")
    raw = checkpoint[EMA_KEY]["raw"]
    assert average.keys() == raw.keys()
    assert any(not torch.equal(average[k], raw[k]) for k in average), "3 steps move the raw"
    loaded = load_checkpoint(last)
    _assert_equal_states(_state(loaded.module.generator), average)
    assert (tmp_path / "ema" / "version_0" / "samples" / "epoch0000.png").is_file()

    assert main([*run, "ckpt_path=last", "trainer.max_epochs=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.generator_ema=0.9" in err
