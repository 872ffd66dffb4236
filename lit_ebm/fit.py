"""Train a model: ``python -m lit_ebm.fit --config FILE [--config FILE ...] [key=value ...]``.

Every run writes ``<output_dir>/<name>/version_<n>/`` with ``config.yaml``, ``metrics.csv``
(and TensorBoard events when tensorboard is installed), ``checkpoints/last.ckpt`` plus the best
checkpoint, and ``samples/`` with figures. A resumed run (``ckpt_path=last`` or a path) writes
a new version folder and leaves the old one untouched.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from pytorch_lightning.strategies import StrategyRegistry
from torchvision.utils import save_image

from lit_ebm.checkpoints import check_compatible, check_generator_name, read_checkpoint
from lit_ebm.config import Config, ConfigError, TrainerConfig, load_config, to_container, to_yaml
from lit_ebm.data import build_datamodule, event_shape
from lit_ebm.modules import MODULES, GenerativeModule, NonFiniteLossError
from lit_ebm.sample_quality import build_sample_quality

RUN_DIR_ENV = "LIT_EBM_RUN_DIR"  # hands rank 0's run folder to DDP worker processes
# An energy step on detached samples leaves the generator's parameters unused, so adversarial
# training under DDP needs DistributedDataParallel(find_unused_parameters=True).
UNUSED_PARAMETER_STRATEGIES = {"ddp": "ddp_find_unused_parameters_true",
                               "ddp_spawn": "ddp_spawn_find_unused_parameters_true"}
EXIT_USAGE = 2
EXIT_TRAINING_FAILED = 1

# Each run folder is new and already holds config.yaml; the CSV logger's warning that "previous
# log files will be deleted" would be false here.
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")


class SampleFigures(Callback):
    """Save a figure of generator samples to ``samples/`` every ``every_n_epochs`` epochs."""

    def __init__(self, folder: Path, every_n_epochs: int, num_samples: int) -> None:
        self.folder = folder
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: GenerativeModule) -> None:
        if not trainer.is_global_zero:
            return
        epochs_done = trainer.current_epoch + 1
        last_epoch = epochs_done >= (trainer.max_epochs or 0)
        if epochs_done % self.every_n_epochs and not last_epoch:
            return
        data = None
        if not pl_module.is_image:
            data = trainer.datamodule.val_set.tensors[0][: 4 * self.num_samples]
        figure = pl_module.render_samples(self.num_samples, data)
        self.folder.mkdir(parents=True, exist_ok=True)
        save_image(figure, self.folder / f"epoch{trainer.current_epoch:04d}.png")


def version_dirs(output_dir: str, name: str) -> list[tuple[int, Path]]:
    """Existing ``version_<n>`` folders of a run name, sorted by n."""
    root = Path(output_dir) / name
    found = []
    for path in root.glob("version_*"):
        match = re.fullmatch(r"version_(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def next_run_dir(cfg: Config) -> Path:
    """The next ``<output_dir>/<name>/version_<n>`` (not yet created); DDP workers get rank 0's."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        return Path(inherited)
    existing = version_dirs(cfg.output_dir, cfg.name)
    number = existing[-1][0] + 1 if existing else 0
    return Path(cfg.output_dir) / cfg.name / f"version_{number}"


def create_run_dir(run_dir: Path, cfg: Config) -> Path | None:
    """Create ``run_dir`` with its ``config.yaml``; returns the outermost folder created, for
    :func:`train` to remove if the start fails later. Raises :class:`ConfigError`, leaving
    nothing behind, when ``output_dir`` cannot be created or written."""
    outermost = next((p for p in (*reversed(run_dir.parents), run_dir) if not p.exists()), None)
    try:
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    except OSError as err:
        if outermost is not None:
            shutil.rmtree(outermost, ignore_errors=True)
        raise ConfigError(f"output_dir={cfg.output_dir!r} cannot hold the run folder '{run_dir}' "
                          f"({err.strerror or err}): set output_dir to a writable folder") from None
    return outermost


def resolve_ckpt_path(cfg: Config) -> Path | None:
    """The checkpoint to resume from: ``last`` means the newest version's last.ckpt."""
    if cfg.ckpt_path is None:
        return None
    if cfg.ckpt_path != "last":
        return Path(cfg.ckpt_path)
    for _, folder in reversed(version_dirs(cfg.output_dir, cfg.name)):
        candidate = folder / "checkpoints" / "last.ckpt"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"ckpt_path=last, but no '{Path(cfg.output_dir) / cfg.name}/version_*/checkpoints/"
        "last.ckpt' exists: check output_dir and name, or start without ckpt_path"
    )


def _available_devices(accelerator: str) -> tuple[str, int]:
    """The accelerator Lightning resolves ``accelerator`` to, and how many devices it has."""
    counts = {
        "tpu": XLAAccelerator.auto_device_count() if XLAAccelerator.is_available() else 0,
        "cuda": CUDAAccelerator.auto_device_count() if CUDAAccelerator.is_available() else 0,
        "mps": 1 if MPSAccelerator.is_available() else 0,
        "cpu": os.cpu_count() or 1,
    }
    if accelerator == "gpu":
        accelerator = "cuda" if counts["cuda"] or not counts["mps"] else "mps"
    if accelerator == "auto":
        accelerator = next(name for name, count in counts.items() if count)
    return accelerator, counts[accelerator]


def check_trainer_settings(trainer: TrainerConfig) -> int:
    """Refuse accelerators, device counts and strategies this machine or Lightning cannot
    serve; returns the number of training processes."""
    accelerator, available = _available_devices(trainer.accelerator)
    if not available:
        raise ConfigError(f"trainer.accelerator={trainer.accelerator!r}, but this machine has no "
                          f"{accelerator} device: use trainer.accelerator=auto or cpu")
    devices = trainer.devices
    if accelerator == "cpu" and (devices == -1 or isinstance(devices, list)):
        raise ConfigError(f"trainer.devices={devices!r} does not suit the CPU: give a number of "
                          f"processes between 1 and {available}")
    if isinstance(devices, list):
        wanted, highest = len(devices), max(devices) + 1
    elif devices == "auto":
        wanted = highest = 1 if accelerator == "cpu" else available
    elif devices == -1:
        wanted = highest = available
    else:
        wanted = highest = devices
    if highest > available:
        raise ConfigError(f"trainer.devices={devices!r} asks for more {accelerator} devices than "
                          f"this machine has ({available}): use trainer.devices<={available}")
    strategies = ("auto", *StrategyRegistry.available_strategies())
    if trainer.strategy not in strategies:
        raise ConfigError(f"invalid value {trainer.strategy!r} for 'trainer.strategy': expected "
                          f"one of auto, ddp, ddp_spawn, fsdp, deepspeed, ... "
                          f"(Lightning's StrategyRegistry lists {len(strategies) - 1})")
    return wanted


def check_batch_size(cfg: Config, train_size: int, processes: int) -> None:
    """Refuse a batch larger than each process's share of the training set (it would train
    no batch at all, since incomplete batches are dropped)."""
    share = train_size // processes
    if cfg.data.batch_size > share:
        per = f" split over {processes} processes" if processes > 1 else ""
        raise ConfigError(
            f"invalid value {cfg.data.batch_size} for 'data.batch_size': the training set has "
            f"{train_size} examples{per}, so no full batch would be trained; use "
            f"data.batch_size<={share}")


def build_trainer(cfg: Config, run_dir: Path, monitor: str,
                  extra_callbacks: list[Callback]) -> pl.Trainer:
    """The Trainer for ``cfg``, writing into ``run_dir``, with ``extra_callbacks`` after the
    checkpoint and sample callbacks; settings that Lightning rejects become a
    :class:`ConfigError`. Creates nothing on disk."""
    trainer_args = asdict(cfg.trainer)
    if cfg.model.objective == "adversarial":
        strategy = trainer_args["strategy"]
        trainer_args["strategy"] = UNUSED_PARAMETER_STRATEGIES.get(strategy, strategy)
    try:
        return pl.Trainer(**trainer_args, logger=_loggers(cfg, run_dir),
                          callbacks=[*_callbacks(cfg, run_dir, monitor), *extra_callbacks],
                          default_root_dir=run_dir)
    except (MisconfigurationException, ValueError, TypeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"Lightning rejected the trainer.* settings: {reason}") from None


def build_module(cfg: Config) -> GenerativeModule:
    """The LightningModule for ``cfg.model.objective``, its generator initialised if asked."""
    module = MODULES[cfg.model.objective](to_container(cfg.model), list(event_shape(cfg.data)))
    if cfg.model.generator_init is not None and cfg.ckpt_path is None:
        if not hasattr(module, "load_generator"):
            raise ConfigError("model.generator_init applies to model.objective=adversarial only")
        module.load_generator(cfg.model.generator_init)
    return module


def _loggers(cfg: Config, run_dir: Path) -> list[Logger]:
    kwargs = {"save_dir": cfg.output_dir, "name": cfg.name, "version": run_dir.name}
    loggers: list[Logger] = [CSVLogger(**kwargs)]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append(TensorBoardLogger(**kwargs, default_hp_metric=False))
    return loggers


def _callbacks(cfg: Config, run_dir: Path, monitor: str) -> list[Callback]:
    checkpoints = run_dir / "checkpoints"
    best = ModelCheckpoint(dirpath=checkpoints, filename="best-epoch{epoch:03d}", monitor=monitor,
                           mode="min", save_top_k=1, auto_insert_metric_name=False)
    # last.ckpt after every epoch, and also every checkpoint_every_n_steps optimiser steps by a
    # second writer of the same file: with a step interval alone, Lightning skips the epoch-end
    # save, and the steps after the interval's last multiple would be lost.
    last = [ModelCheckpoint(dirpath=checkpoints, save_top_k=0, save_last=True,
                            enable_version_counter=False)]
    if cfg.checkpoint_every_n_steps is not None:
        last.append(ModelCheckpoint(dirpath=checkpoints, save_top_k=0, save_last=True,
                                    every_n_train_steps=cfg.checkpoint_every_n_steps,
                                    enable_version_counter=False))
    samples = SampleFigures(run_dir / "samples", cfg.sample_every_n_epochs, cfg.num_sample_images)
    return [best, *last, samples]


def train(cfg: Config) -> Path:
    """Run training as configured; returns the run folder.

    Everything that can be wrong with the settings, the data or the checkpoints is checked
    before the run folder is created, so a failed start leaves nothing behind.
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    processes = check_trainer_settings(cfg.trainer)
    module = build_module(cfg)
    datamodule = build_datamodule(cfg.data, dequantise=not module.generator.discrete)
    datamodule.prepare_data()
    datamodule.setup("fit")
    check_batch_size(cfg, len(datamodule.train_set), processes)
    quality = (build_sample_quality(cfg.eval, cfg.data, len(datamodule.val_set), cfg.seed)
               if module.is_image and cfg.eval.every_n_epochs else None)
    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is not None:
        checkpoint = read_checkpoint(ckpt_path, "ckpt_path")
        source = f"ckpt_path checkpoint '{ckpt_path}'"
        check_generator_name(checkpoint, cfg.model.generator.name, source)
        check_compatible(module.state_dict(), checkpoint["state_dict"], source)
    run_dir = next_run_dir(cfg)
    created = None if RUN_DIR_ENV in os.environ else create_run_dir(run_dir, cfg)
    try:
        trainer = build_trainer(cfg, run_dir, monitor="val/bpd" if module.is_image else "val/nll",
                                extra_callbacks=[quality] if quality else [])
    except ConfigError:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    print(f"rank {trainer.global_rank} finished; run folder: {run_dir}", flush=True)
    return run_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lit_ebm.fit",
        description="Train a generator by maximum likelihood, or an energy-based model "
                    "adversarially against it (Finn et al. 2016).",
        epilog="Examples:\n"
               "  python -m lit_ebm.fit --config configs/quickstart.yaml\n"
               "  python -m lit_ebm.fit --config configs/quickstart.yaml trainer.max_epochs=2\n"
               "  python -m lit_ebm.fit --config configs/quickstart.yaml ckpt_path=last\n"
               "Exit codes: 0 done, 1 training failed (non-finite loss), 2 bad configuration.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config; repeat to merge several, later files win")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (every key) and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides applied after the files, e.g. data.batch_size=32")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(to_yaml(cfg), end="")
            return 0
        train(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
