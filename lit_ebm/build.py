"""The builder: the one place that maps config keys to constructors.

Networks and modules take plain arguments and raise
:class:`~lit_ebm.errors.InvalidArgument` naming the argument they reject; here each rejected
argument becomes a :class:`~lit_ebm.errors.ConfigError` naming its config key, its value and the
fix. Data flows one way: config -> networks -> LightningModule (+ DataModule) -> Trainer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from lit_ebm.averaging import EMA_KEY, GeneratorEMA
from lit_ebm.callbacks import SampleQuality
from lit_ebm.checkpoints import (
    check_compatible,
    check_generator_name,
    read_checkpoint,
    sub_state_dict,
)
from lit_ebm.config import Config
from lit_ebm.config.schema import EnergyConfig, GeneratorConfig
from lit_ebm.energy import ConvEnergy, MLPEnergy, ResidualEnergy
from lit_ebm.errors import ConfigError, InvalidArgument
from lit_ebm.evaluation.quality import check_sample_counts
from lit_ebm.features import build_feature_extractor
from lit_ebm.generators import GENERATORS, Generator, PixelCNN, RealNVP
from lit_ebm.modules import AdversarialEBM, GenerativeModule, MaximumLikelihood
from lit_ebm.objective_names import MAXIMUM_LIKELIHOOD

IMAGE_ARGUMENT = {RealNVP: "image_shape", PixelCNN: "image_shape", ConvEnergy: "image_shape",
                  MLPEnergy: "in_features"}
Built = TypeVar("Built")


def build_from(section: str, factory: Callable[..., Built], settings: Any,
               **data_args: Any) -> Built:
    """``factory(**settings, **data_args)`` for the config section ``section`` (a dotted key
    such as ``model.generator.realnvp``); a rejected argument becomes a :class:`ConfigError`
    naming its config key and value. ``data_args`` (shapes) come from the data set."""
    values = asdict(settings)
    try:
        return factory(**values, **data_args)
    except InvalidArgument as err:
        if err.argument in values:
            raise ConfigError(f"invalid value {values[err.argument]!r} for "
                              f"'{section}.{err.argument}': {err}") from None
        raise ConfigError(f"the settings in '{section}' do not suit data.name: {err}") from None


def _shape_args(factory: type, event_shape: tuple[int, ...]) -> dict[str, Any]:
    """The data-given arguments of ``factory``: the image shape, or the number of features."""
    argument = IMAGE_ARGUMENT.get(factory)
    if argument == "in_features":
        return {"in_features": math.prod(event_shape)}
    return {argument: tuple(event_shape)} if argument else {}


def build_generator(config: GeneratorConfig, event_shape: tuple[int, ...]) -> Generator:
    """The generator named by ``config.name`` for examples of shape ``event_shape``."""
    factory = GENERATORS[config.name]
    return build_from(f"model.generator.{config.name}", factory, getattr(config, config.name),
                      **_shape_args(factory, event_shape))


def build_energy(config: EnergyConfig, event_shape: tuple[int, ...],
                 generator: Generator) -> nn.Module:
    """The energy named by ``config.name``; with ``config.residual``, measured against a frozen
    copy of ``generator`` (:class:`~lit_ebm.energy.ResidualEnergy`)."""
    factory = {"conv": ConvEnergy, "mlp": MLPEnergy}[config.name]
    net = build_from(f"model.energy.{config.name}", factory, getattr(config, config.name),
                     **_shape_args(factory, event_shape))
    return ResidualEnergy(net, copy.deepcopy(generator)) if config.residual else net


def load_generator_weights(generator: Generator, path: str, expected_name: str) -> None:
    """Load the generator of a checkpoint of either objective (``model.generator_init``)."""
    checkpoint = read_checkpoint(path, "model.generator_init")
    source = f"model.generator_init checkpoint '{path}'"
    check_generator_name(checkpoint, expected_name, source)
    weights = sub_state_dict(checkpoint["state_dict"], "generator")
    check_compatible(generator.state_dict(), weights, source)
    generator.load_state_dict(weights)


def build_module(cfg: Config, event_shape: tuple[int, ...]) -> GenerativeModule:
    """The LightningModule of ``cfg.model.objective``, its generator initialised from
    ``model.generator_init`` unless the run resumes (with either objective: maximum likelihood
    from it fine-tunes a generator under new optimiser settings, with a fresh optimiser)."""
    model = cfg.model
    generator = build_generator(model.generator, event_shape)
    if model.generator_init is not None and cfg.ckpt_path is None:
        load_generator_weights(generator, model.generator_init, model.generator.name)
    module = _build_module(cfg, generator, event_shape)
    return module.to(memory_format=torch.channels_last) if model.channels_last else module


def _build_module(cfg: Config, generator: Generator,
                  event_shape: tuple[int, ...]) -> GenerativeModule:
    model = cfg.model
    if model.objective == MAXIMUM_LIKELIHOOD:
        return MaximumLikelihood(generator, asdict(model.generator_optim), model.lr_schedule)
    energy = build_energy(model.energy, event_shape, generator)
    return AdversarialEBM(generator, energy, asdict(model.generator_optim),
                          asdict(model.energy_optim), n_critic=model.n_critic,
                          energy_reg=model.energy_reg, lr_schedule=model.lr_schedule,
                          r1_gamma=model.r1_gamma,
                          log_z_tracking=model.log_z_tracking,
                          generator_objective=model.generator_objective,
                          nll_weight=model.nll_weight,
                          sticking_the_landing=model.sticking_the_landing,
                          train_generator=model.train_generator,
                          generated_batch_size=model.generated_batch_size)


def check_resume(ckpt_path: Path, cfg: Config, module: GenerativeModule) -> None:
    """Refuse a checkpoint to resume from that is unreadable or does not fit ``module``, or
    whose generator is an average (:mod:`lit_ebm.averaging`) while the run has none."""
    checkpoint = read_checkpoint(ckpt_path, "ckpt_path")
    source = f"ckpt_path checkpoint '{ckpt_path}'"
    check_generator_name(checkpoint, cfg.model.generator.name, source)
    check_compatible(module.state_dict(), checkpoint["state_dict"], source)
    if EMA_KEY in checkpoint and cfg.model.generator_ema is None:
        decay = checkpoint[EMA_KEY]["decay"]
        raise ConfigError(f"{source} was trained with model.generator_ema={decay} (its generator "
                          "weights are the average, the raw ones resume only with an average "
                          f"on): resume with model.generator_ema={decay}")


def build_generator_ema(cfg: Config) -> list[GeneratorEMA]:
    """The callback averaging the generator's weights with decay ``model.generator_ema``
    (:mod:`lit_ebm.averaging`), or none when it is off."""
    decay = cfg.model.generator_ema
    return [] if decay is None else [GeneratorEMA(decay)]


def build_sample_quality(cfg: Config, num_real: int) -> SampleQuality:
    """The FID/KID callback of a run, its features loaded and its sample counts checked
    against the ``num_real`` validation images."""
    extractor = build_feature_extractor(cfg.data.name, cfg.eval.inception_weights)
    check_sample_counts(cfg.eval.num_samples, num_real, extractor.num_features,
                        cfg.eval.kid_subset_size, "eval.num_samples", "eval.kid_subset_size")
    return SampleQuality(extractor, cfg.eval.every_n_epochs, cfg.eval.num_samples,
                         cfg.eval.kid_subset_size, cfg.eval.batch_size, cfg.seed)
