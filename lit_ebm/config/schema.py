"""The typed schema of a run: every config key, its type, its default and its rules.

YAML files in ``configs/`` mirror these dataclasses. A key's rules are declared with the key
(:func:`~lit_ebm.config.rules.setting`); rules that tie several keys together are in
:func:`cross_checks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lit_ebm.config.rules import (
    at_least_two,
    batch_limit,
    betas,
    decay,
    devices,
    non_negative,
    one_of,
    optional,
    positive,
    setting,
    unit_interval,
)
from lit_ebm.loggers import logger_names
from lit_ebm.objective_names import GENERATOR_OBJECTIVES, MAXIMUM_LIKELIHOOD, OBJECTIVES
from lit_ebm.toy2d import TOY2D_SHAPES

IMAGE_DATASETS = ("mnist5k", "mnist", "fashion_mnist", "cifar10")
IMAGE_GENERATORS = ("realnvp", "pixelcnn")
POINT_GENERATORS = ("realnvp2d", "mixture2d")
PRECISIONS = ("auto", "32-true", "32", "64-true", "64", "16-mixed", "16-true", "16", "bf16-mixed",
              "bf16-true", "bf16")
# The whole model in half precision cannot hold log-densities of thousands of nats: float16's
# spacing near 2,400 is 2 nats, bfloat16's 16 (docs/mathematics.md, "Precision").
HALF_PRECISIONS = ("16-true", "bf16-true")


def log_density_precision(value: Any) -> str | None:
    """trainer.precision's rule for every objective: mixed or full precision only."""
    if value not in HALF_PRECISIONS:
        return None
    return ("32-true, 64-true, bf16-mixed or 16-mixed: with the whole model in half precision "
            "log-densities of thousands of nats are rounded to whole nats or more; use "
            "trainer.precision=bf16-mixed (or 32-true)")


def whole_classes(value: Any) -> str | None:
    """data.val_size's rule: the same number of images of each of the 10 classes."""
    return None if value % 10 == 0 else "a multiple of 10 (val_size / 10 images of each class)"


@dataclass
class DataConfig:
    """Which data set, where it lives, how it is batched and how validation is held out."""

    name: str = setting("mnist5k", one_of(*IMAGE_DATASETS, "toy2d"))
    root: str | None = None  # None: the bundled data (fashion_mnist: the system folder)
    download: bool = False  # mnist, fashion_mnist, cifar10: let torchvision download into root
    # mnist, fashion_mnist, cifar10: training images held out for validation (stratified,
    # fixed); the test set is only for `lit_ebm.evaluate --split test`. mnist5k: 4,000/500/500.
    val_size: int = setting(5000, positive, whole_classes)
    batch_size: int = setting(64, positive)
    num_workers: int = setting(0, non_negative)
    toy_shape: str = setting("ring8", one_of(*TOY2D_SHAPES))  # toy2d only
    toy_train_size: int = setting(20000, positive)  # toy2d only
    toy_val_size: int = setting(2000, positive)  # toy2d only


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

    name: str = setting("realnvp", one_of(*IMAGE_GENERATORS, *POINT_GENERATORS))
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
    zero_init: bool = False  # output exactly 0 at the start (a residual EBM starts as q_init)
    quantised_input: bool = False  # score only the 8-bit image x stands for (straight-through)


@dataclass
class MLPEnergyConfig:
    """MLP energy for 2-D points with a fixed quadratic confining term."""

    hidden_features: int = 128
    depth: int = 3
    confinement: float = 0.1
    spectral_norm: bool = False
    zero_init: bool = False  # the MLP's output exactly 0 at the start


@dataclass
class EnergyConfig:
    """The energy E(x) (adversarial objective only): ``name`` picks a section."""

    name: str = setting("conv", one_of("conv", "mlp"))
    residual: bool = False  # E(x) = net(x) - log q_init(x), q_init: frozen initial generator
    conv: ConvEnergyConfig = field(default_factory=ConvEnergyConfig)
    mlp: MLPEnergyConfig = field(default_factory=MLPEnergyConfig)


@dataclass
class OptimConfig:
    """Adam settings for one optimiser."""

    lr: float = setting(1e-3, positive)
    betas: list[float] = setting([0.9, 0.999], betas)
    weight_decay: float = setting(0.0, non_negative)
    grad_clip_norm: float | None = setting(None, optional(positive))  # this optimiser's; null: off


@dataclass
class ModelConfig:
    """What is trained and how: maximum likelihood or the adversarial EBM of Finn et al."""

    objective: str = setting(MAXIMUM_LIKELIHOOD, one_of(*OBJECTIVES))
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    generator_optim: OptimConfig = field(default_factory=OptimConfig)
    generator_init: str | None = None  # a checkpoint's generator (either objective) to start from
    # false: only the energy and log Z learn, over the generator model.generator_init gives
    train_generator: bool = True
    lr_schedule: str = setting("constant", one_of("constant", "cosine"))  # cosine: to 0 at the end
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    energy_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-4, betas=[0.5, 0.999])
    )
    n_critic: int = setting(1, positive)  # energy steps per generator step
    # size of the generated batch each step draws; null: the data batch's size
    generated_batch_size: int | None = setting(None, optional(at_least_two))
    energy_reg: float = setting(0.0, non_negative)  # alpha in alpha * mean(E^2)
    r1_gamma: float = setting(0.0, non_negative)  # gamma/2 E_data ||grad_x f||^2 (0: off)
    # before each energy step, log Z <- (1 - m) log Z + m * (the batch's L_D-optimal log Z)
    log_z_tracking: float = setting(0.0, unit_interval)  # m; 0: log Z moves by Adam alone
    # the generator's loss: the paper's reverse_kl, hybrid (+ nll_weight * NLL), forward_kl
    generator_objective: str = setting("reverse_kl", one_of(*GENERATOR_OBJECTIVES))
    nll_weight: float = setting(1.0, non_negative)  # hybrid's lambda
    sticking_the_landing: bool = False  # continuous generators: L_G's log q at fixed parameters
    # decay of an EMA of the generator's weights, used for validation, samples and the
    # checkpoint's generator while training goes on from the raw weights; null: off
    generator_ema: float | None = setting(None, optional(decay))
    # torch.compile the networks (lit_ebm.compilation): a first call of minutes on a CPU, off
    # unless measured to pay for the run at hand (docs/results.md, "Throughput")
    compile: bool = False
    # convolution weights and activations in channels-last memory (faster oneDNN and cuDNN
    # convolutions; the values are the same up to rounding)
    channels_last: bool = True


@dataclass
class TrainerConfig:
    """The subset of ``pytorch_lightning.Trainer`` arguments lit_ebm exposes."""

    max_epochs: int = 10
    max_steps: int = -1
    accelerator: str = setting("auto", one_of("auto", "cpu", "gpu", "cuda", "mps", "tpu"))
    devices: Any = setting("auto", devices)  # per node
    num_nodes: int = setting(1, positive)  # must match the nodes torchrun or srun started
    strategy: str = "auto"  # adversarial DDP runs get find_unused_parameters=True
    # auto: bf16-mixed where the accelerator computes bf16 natively (a CPU with AVX-512 BF16 or
    # AMX, a recent GPU), else 32-true; log-densities are float32 either way
    precision: str = setting("32-true", one_of(*PRECISIONS))
    limit_train_batches: int | float = setting(1.0, batch_limit(1))  # int: batches; float: share
    limit_val_batches: int | float = setting(1.0, batch_limit(0))
    log_every_n_steps: int = setting(20, positive)
    check_val_every_n_epoch: int = setting(1, positive)
    enable_progress_bar: bool = True


@dataclass
class EvalConfig:
    """Sample quality during training (image data): FID and KID of generator samples against
    the validation split, on the features of :mod:`lit_ebm.features`."""

    every_n_epochs: int = setting(1, non_negative)  # and after the last epoch; 0: off
    num_samples: int = setting(1000, positive)  # generator samples per evaluation, all processes
    kid_subset_size: int = setting(500, positive)  # <= num_samples and <= the validation split
    batch_size: int = setting(250, positive)  # generator samples drawn at a time
    # cifar10: a local copy of weights-inception-2015-12-05-6726825d.pth (else downloaded)
    inception_weights: str | None = None


@dataclass
class EarlyStoppingConfig:
    """Stop a maximum-likelihood run when its validation likelihood (val/bpd; toy2d: val/nll)
    has plateaued: ``patience`` validations in a row that improve on the best so far by less
    than ``min_delta`` (Lightning's EarlyStopping)."""

    patience: int | None = setting(None, optional(positive))  # None: run for max_epochs
    min_delta: float = setting(0.01, non_negative)  # bits/dim (toy2d: nats)


@dataclass
class BudgetConfig:
    """Training compute as a budget (:mod:`lit_ebm.budget`): the seconds inside training steps,
    and the network passes they count."""

    train_seconds: float | None = setting(None, optional(positive))  # stop after; null: never
    count_passes: bool = False  # log budget/passes_per_image (FLOPs of two measured steps)


@dataclass
class Config:
    """A whole run. ``<output_dir>/<name>/version_<n>/`` receives everything it writes."""

    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0
    ckpt_path: str | None = None  # "last", or a checkpoint path, to resume
    # also refresh last.ckpt every N optimiser steps
    checkpoint_every_n_steps: int | None = setting(None, optional(positive))
    sample_every_n_epochs: int = setting(1, positive)
    num_sample_images: int = setting(64, positive)
    # a list of csv, tensorboard, wandb (offline), mlflow (a file store), all in the run folder
    logger: Any = setting(["csv", "tensorboard"], logger_names)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
