"""Typed configuration schema, loading, merging and validation with errors a user can act on.

The dataclasses below are the single source of truth for every config key; YAML files in
``configs/`` mirror them. ``load_config`` merges files left to right, applies ``key=value``
overrides, and raises :class:`ConfigError` with a message naming the key, the value and what
is expected.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from lit_ebm.toy2d import TOY2D_SHAPES


class ConfigError(ValueError):
    """Something the user must fix in the configuration (or in files it points to)."""


class InvalidArgument(ValueError):
    """A constructor argument that a model rejects. ``argument`` is the parameter's name, so
    that :func:`build_from` can name the config key the value came from."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


def require(condition: bool, argument: str, message: str) -> None:
    """Raise :class:`InvalidArgument` for ``argument`` with ``message`` unless ``condition``."""
    if not condition:
        raise InvalidArgument(argument, message)


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


DATASETS = ("mnist5k", "mnist", "fashion_mnist", "cifar10", "toy2d")
OBJECTIVES = ("mle", "adversarial")
GENERATORS = ("realnvp", "pixelcnn", "realnvp2d", "mixture2d")
IMAGE_GENERATORS = ("realnvp", "pixelcnn")
ENERGIES = ("conv", "mlp")
LR_SCHEDULES = ("constant", "cosine")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16-true", "16", "bf16-mixed",
              "bf16-true", "bf16")


@dataclass
class DataConfig:
    """Which data set, where it lives and how it is batched."""

    name: str = "mnist5k"
    root: str | None = None  # None: data/ of the repository (fashion_mnist: the system folder)
    download: bool = False  # mnist, fashion_mnist, cifar10: let torchvision download into root
    batch_size: int = 64
    num_workers: int = 0
    toy_shape: str = "ring8"  # toy2d only
    toy_train_size: int = 20000  # toy2d only
    toy_val_size: int = 2000  # toy2d only


@dataclass
class RealNVPConfig:
    """Multi-scale image RealNVP (Dinh et al. 2017)."""

    num_scales: int = 2
    num_blocks: int = 4
    hidden_channels: int = 64
    logit_alpha: float = 0.05


@dataclass
class PixelCNNConfig:
    """Gated PixelCNN (van den Oord et al. 2016): a discrete generator with exact log-mass."""

    channels: int = 64  # width of the vertical and horizontal stacks
    dilations: list[int] = field(default_factory=lambda: [1, 2, 1, 4, 1, 2, 1])  # one per layer
    kernel_size: int = 3  # odd, >= 3


@dataclass
class RealNVP2dConfig:
    """RealNVP with MLP couplings for 2-D points."""

    num_couplings: int = 6
    hidden_features: int = 64


@dataclass
class Mixture2dConfig:
    """Uniform-weight Gaussian mixture in 2-D (deliberately limited capacity)."""

    num_components: int = 4
    init_scale: float = 2.0


@dataclass
class GeneratorConfig:
    """The generator q: ``name`` picks one of the sections below."""

    name: str = "realnvp"
    realnvp: RealNVPConfig = field(default_factory=RealNVPConfig)
    pixelcnn: PixelCNNConfig = field(default_factory=PixelCNNConfig)
    realnvp2d: RealNVP2dConfig = field(default_factory=RealNVP2dConfig)
    mixture2d: Mixture2dConfig = field(default_factory=Mixture2dConfig)


@dataclass
class ConvEnergyConfig:
    """Convolutional energy for images."""

    channels: int = 64
    depth: int = 3
    spectral_norm: bool = False


@dataclass
class MLPEnergyConfig:
    """MLP energy for 2-D points with a fixed quadratic confining term."""

    hidden_features: int = 128
    depth: int = 3
    confinement: float = 0.1
    spectral_norm: bool = False


@dataclass
class EnergyConfig:
    """The energy E(x) (adversarial objective only): ``name`` picks a section."""

    name: str = "conv"
    residual: bool = False  # E(x) = net(x) - log q_init(x), q_init: frozen initial generator
    conv: ConvEnergyConfig = field(default_factory=ConvEnergyConfig)
    mlp: MLPEnergyConfig = field(default_factory=MLPEnergyConfig)


@dataclass
class OptimConfig:
    """Adam settings for one optimiser."""

    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0


@dataclass
class ModelConfig:
    """What is trained and how: maximum likelihood or the adversarial EBM of Finn et al."""

    objective: str = "mle"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    generator_optim: OptimConfig = field(default_factory=OptimConfig)
    generator_init: str | None = None  # a MaximumLikelihood checkpoint to start the generator from
    grad_clip_norm: float | None = None  # clip each optimiser's gradient norm (None: off)
    lr_schedule: str = "constant"  # or "cosine": anneal every lr to 0 over trainer.max_epochs
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    energy_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-4, betas=[0.5, 0.999])
    )
    n_critic: int = 1  # energy steps per generator step
    energy_reg: float = 0.0  # alpha in alpha * mean(E^2)


@dataclass
class TrainerConfig:
    """The subset of ``pytorch_lightning.Trainer`` arguments lit_ebm exposes."""

    max_epochs: int = 10
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    limit_train_batches: int | float = 1.0  # int: number of batches; float: fraction
    limit_val_batches: int | float = 1.0
    log_every_n_steps: int = 20
    check_val_every_n_epoch: int = 1
    enable_progress_bar: bool = True


@dataclass
class EvalConfig:
    """Sample quality during training (image data): FID and KID of generator samples against
    the validation split, on the features of :mod:`lit_ebm.features`."""

    every_n_epochs: int = 1  # and after the last epoch; 0: off
    num_samples: int = 1000  # generator samples per evaluation, over all processes
    kid_subset_size: int = 500  # KID subset size: <= num_samples and <= the validation split
    batch_size: int = 250  # generator samples drawn at a time
    # cifar10: a local copy of weights-inception-2015-12-05-6726825d.pth (else downloaded)
    inception_weights: str | None = None


@dataclass
class Config:
    """A whole run. ``<output_dir>/<name>/version_<n>/`` receives everything it writes."""

    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0
    ckpt_path: str | None = None  # "last", or a checkpoint path, to resume
    checkpoint_every_n_steps: int | None = None  # also refresh last.ckpt every N optimiser steps
    sample_every_n_epochs: int = 1
    num_sample_images: int = 64
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


CHOICES: dict[str, tuple[str, ...]] = {
    "data.name": DATASETS,
    "data.toy_shape": TOY2D_SHAPES,
    "model.objective": OBJECTIVES,
    "model.generator.name": GENERATORS,
    "model.energy.name": ENERGIES,
    "model.lr_schedule": LR_SCHEDULES,
    "trainer.accelerator": ACCELERATORS,
    "trainer.precision": PRECISIONS,
}
POSITIVE_INTS = (
    "data.batch_size",
    "data.toy_train_size",
    "data.toy_val_size",
    "model.n_critic",
    "trainer.log_every_n_steps",
    "trainer.check_val_every_n_epoch",
    "sample_every_n_epochs",
    "num_sample_images",
    "eval.num_samples",
    "eval.kid_subset_size",
    "eval.batch_size",
)
POSITIVE_FLOATS = ("model.generator_optim.lr", "model.energy_optim.lr")
NON_NEGATIVE = (
    "data.num_workers",
    "eval.every_n_epochs",
    "model.energy_reg",
    "model.generator_optim.weight_decay",
    "model.energy_optim.weight_decay",
)
POSITIVE_OR_NONE = ("model.grad_clip_norm", "checkpoint_every_n_steps")


def _all_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node.keys():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            keys.extend(_all_keys(child, f"{dotted}."))
    return keys


def _unknown_key_error(schema: DictConfig, key: str) -> ConfigError:
    candidates = _all_keys(schema)
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.5)
    leaf = key.rsplit(".", 1)[-1]
    close += [c for c in candidates if c.rsplit(".", 1)[-1] == leaf and c not in close]
    hint = f" Did you mean: {', '.join(close[:3])}?" if close else ""
    return ConfigError(f"unknown config key '{key}'.{hint} (`--print-config` lists every key)")


def _merge(schema: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, other)
    except ConfigKeyError as err:
        raise _unknown_key_error(schema, str(err.full_key)) from None
    except ValidationError as err:
        raise ConfigError(
            f"invalid value {getattr(err, 'value', None)!r} for config key '{err.full_key}' "
            f"(from {source}): expected {_expected_type(str(err.full_key))}"
        ) from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"could not read config from {source}: {err.msg}") from None


_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false",
               "str": "a string", "list[float]": "a list of numbers"}


def _expected_type(key: str) -> str:
    """Human wording of the schema type of dotted ``key``, read from the dataclasses."""
    node: Any = Config
    hint: Any = None
    for part in key.split("."):
        hints = typing.get_type_hints(node)
        if part not in hints:
            return "a value of the schema's type"
        hint = node = hints[part]
    if typing.get_origin(hint) is list:
        return _TYPE_NAMES["list[float]"]
    options = [a for a in typing.get_args(hint) or (hint,) if a is not type(None)]
    names = [_TYPE_NAMES.get(a.__name__, a.__name__) for a in options]
    return " or ".join(names + (["null"] if type(None) in typing.get_args(hint) else []))


def _load_yaml(path: str) -> DictConfig:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: '{path}' (pass an existing YAML file to "
                          "--config)")
    try:
        loaded = OmegaConf.load(file)
    except Exception as err:  # yaml.YAMLError and friends: report, never a traceback
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys, not a list")
    if not loaded:
        raise ConfigError(f"config file '{path}' is empty: give it the keys of a run (see "
                          "configs/quickstart.yaml), or leave out --config to use every default")
    return loaded


def _parse_overrides(overrides: list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form key=value "
                              "(e.g. data.batch_size=32)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(f"could not parse overrides {overrides}: {err.msg}") from None


def _invalid(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"invalid value {value!r} for '{key}': expected {expected}")


def _floats(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every float of a config dataclass (inside lists too) as (dotted key, value)."""
    for item in fields(node):
        key, value = f"{prefix}{item.name}", getattr(node, item.name)
        if is_dataclass(value):
            yield from _floats(value, f"{key}.")
        elif isinstance(value, float) or (isinstance(value, list)
                                          and any(isinstance(v, float) for v in value)):
            yield key, value


def _check_finite(cfg: Config) -> None:
    for key, value in _floats(cfg):
        if not all(math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            raise _invalid(key, value, "a finite number (nan and inf are not settings; use null "
                                       "where the key allows turning it off)")


def _check_trainer(trainer: TrainerConfig) -> None:
    """Trainer settings Lightning would reject with a traceback, or that train nothing."""
    devices = trainer.devices
    listed = isinstance(devices, list) and devices and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
    counted = isinstance(devices, int) and not isinstance(devices, bool) and (
        devices >= 1 or devices == -1)
    if not (devices == "auto" or counted or listed):
        raise _invalid("trainer.devices", devices, "a positive number of devices, -1 (all), "
                       "'auto', or a list of device indices such as [0, 1]")
    if trainer.max_steps == 0 or trainer.max_steps < -1:
        raise _invalid("trainer.max_steps", trainer.max_steps,
                       "-1 (no limit) or a positive number of optimiser steps")
    if trainer.max_epochs < 1 and not (trainer.max_epochs == -1 and trainer.max_steps > 0):
        raise _invalid("trainer.max_epochs", trainer.max_epochs,
                       "a positive number of epochs (or -1 together with trainer.max_steps > 0)")
    for key, smallest in (("limit_train_batches", 1), ("limit_val_batches", 0)):
        value = getattr(trainer, key)
        if isinstance(value, float):
            valid = 0.0 < value <= 1.0 or (smallest == 0 and value == 0.0)
            expected = f"a fraction in {'[0' if smallest == 0 else '(0'}, 1]"
        else:
            valid, expected = value >= smallest, f"a number of batches >= {smallest}"
        if not valid:
            raise _invalid(f"trainer.{key}", value, expected)


def validate(cfg: Config) -> None:
    """Check the values the type system cannot: choices, ranges and combinations."""
    _check_finite(cfg)
    _check_trainer(cfg.trainer)
    flat = OmegaConf.structured(cfg)
    for key, options in CHOICES.items():
        if (value := OmegaConf.select(flat, key)) not in options:
            raise _invalid(key, value, f"one of {', '.join(options)}")
    for key in POSITIVE_INTS + POSITIVE_FLOATS:
        if (value := OmegaConf.select(flat, key)) <= 0:
            raise _invalid(key, value, "a positive number")
    for key in NON_NEGATIVE:
        if (value := OmegaConf.select(flat, key)) < 0:
            raise _invalid(key, value, "a number >= 0")
    for key in POSITIVE_OR_NONE:
        if (value := OmegaConf.select(flat, key)) is not None and value <= 0:
            raise _invalid(key, value, "a positive number or null")
    for key in ("model.generator_optim.betas", "model.energy_optim.betas"):
        betas = list(OmegaConf.select(flat, key))
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise _invalid(key, betas, "two numbers in [0, 1)")
    if cfg.model.lr_schedule == "cosine" and cfg.trainer.max_epochs <= 0:
        raise _invalid("trainer.max_epochs", cfg.trainer.max_epochs,
                       "a positive number of epochs with model.lr_schedule=cosine")
    toy = cfg.data.name == "toy2d"
    if toy == (cfg.model.generator.name in IMAGE_GENERATORS):
        raise _invalid("model.generator.name", cfg.model.generator.name,
                       f"{'realnvp2d or mixture2d' if toy else ' or '.join(IMAGE_GENERATORS)} "
                       f"for data.name={cfg.data.name!r}")
    if cfg.model.energy.residual and cfg.model.energy_reg > 0:
        raise _invalid("model.energy_reg", cfg.model.energy_reg,
                       "0 with model.energy.residual=true (the penalty would act on -log q_init, "
                       "thousands of nats on images)")
    if cfg.eval.kid_subset_size > cfg.eval.num_samples:
        raise _invalid("eval.kid_subset_size", cfg.eval.kid_subset_size,
                       f"at most eval.num_samples={cfg.eval.num_samples} (KID draws subsets of "
                       "that size from the generated images)")
    energy = "mlp" if toy else "conv"
    if cfg.model.objective == "adversarial" and cfg.model.energy.name != energy:
        raise _invalid("model.energy.name", cfg.model.energy.name,
                       f"{energy!r} for data.name={cfg.data.name!r}")


def load_config(files: list[str], overrides: list[str] | None = None) -> Config:
    """Merge YAML ``files`` left to right onto the schema, then ``key=value`` overrides."""
    merged = OmegaConf.structured(Config)
    for path in files:
        merged = _merge(merged, _load_yaml(path), f"'{path}'")
    merged = _merge(merged, _parse_overrides(overrides or []), "the command line")
    cfg: Config = OmegaConf.to_object(merged)
    validate(cfg)
    return cfg


def model_config_from_dict(model: dict[str, Any]) -> ModelConfig:
    """Rebuild the typed model section from the plain dict saved in a checkpoint."""
    schema = OmegaConf.structured(ModelConfig)
    return OmegaConf.to_object(_merge(schema, OmegaConf.create(model), "a checkpoint"))


def to_container(cfg: Config | ModelConfig) -> dict[str, Any]:
    """Plain dict of ``cfg``: what goes into checkpoints (loadable with weights_only=True)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text, as written to ``config.yaml``."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
