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
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from torchvision.utils import save_image

from lit_ebm.checkpoints import check_compatible, read_checkpoint
from lit_ebm.config import Config, ConfigError, load_config, to_container, to_yaml
from lit_ebm.data import build_datamodule, event_shape
from lit_ebm.modules import MODULES, GenerativeModule, NonFiniteLossError

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


def new_run_dir(cfg: Config) -> Path:
    """The next ``<output_dir>/<name>/version_<n>``, created; DDP workers reuse rank 0's."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        return Path(inherited)
    existing = version_dirs(cfg.output_dir, cfg.name)
    number = existing[-1][0] + 1 if existing else 0
    run_dir = Path(cfg.output_dir) / cfg.name / f"version_{number}"
    run_dir.mkdir(parents=True)
    return run_dir


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
    last = ModelCheckpoint(dirpath=checkpoints, save_top_k=0, save_last=True,
                           every_n_train_steps=cfg.checkpoint_every_n_steps)
    samples = SampleFigures(run_dir / "samples", cfg.sample_every_n_epochs, cfg.num_sample_images)
    return [best, last, samples]


def train(cfg: Config) -> Path:
    """Run training as configured; returns the run folder."""
    pl.seed_everything(cfg.seed, workers=True)
    module = build_module(cfg)
    datamodule = build_datamodule(cfg.data, dequantise=not module.generator.discrete)
    datamodule.check_files()
    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is not None:
        state = read_checkpoint(ckpt_path, "ckpt_path")["state_dict"]
        check_compatible(module.state_dict(), state, f"ckpt_path checkpoint '{ckpt_path}'")
    run_dir = new_run_dir(cfg)
    if RUN_DIR_ENV not in os.environ:
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    monitor = "val/bpd" if module.is_image else "val/nll"
    trainer_args = asdict(cfg.trainer)
    if cfg.model.objective == "adversarial":
        strategy = trainer_args["strategy"]
        trainer_args["strategy"] = UNUSED_PARAMETER_STRATEGIES.get(strategy, strategy)
    trainer = pl.Trainer(**trainer_args, logger=_loggers(cfg, run_dir),
                         callbacks=_callbacks(cfg, run_dir, monitor), default_root_dir=run_dir)
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
