"""Train a model: ``python -m lit_ebm.fit --config FILE [--config FILE ...] [key=value ...]``.

Every run writes ``<output_dir>/<name>/version_<n>/`` with ``config.yaml``, ``metrics.csv``
(and TensorBoard events when tensorboard is installed), ``checkpoints/last.ckpt`` plus the best
checkpoint, and ``samples/`` with figures. A resumed run (``ckpt_path=last`` or a path) writes
a new version folder and leaves the old one untouched.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl

from lit_ebm.build import build_module, build_sample_quality, check_resume
from lit_ebm.callbacks import Toy2dPartitionFunction
from lit_ebm.config import Config, load_config, to_yaml
from lit_ebm.data import build_datamodule, event_shape
from lit_ebm.errors import EXIT_TRAINING_FAILED, EXIT_USAGE, ConfigError, NonFiniteLossError
from lit_ebm.runs import (
    RUN_DIR_ENV,
    create_run_dir,
    next_run_dir,
    remove_created,
    resolve_ckpt_path,
)
from lit_ebm.trainer import build_trainer, check_trainer_settings


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


def train(cfg: Config) -> Path:
    """Run training as configured; returns the run folder.

    Everything that can be wrong with the settings, the data or the checkpoints is checked
    before the run folder is created, so a failed start leaves nothing behind.
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    processes = check_trainer_settings(cfg.trainer)
    module = build_module(cfg, event_shape(cfg.data))
    datamodule = build_datamodule(cfg.data, dequantise=not module.generator.discrete)
    datamodule.prepare_data()
    datamodule.setup("fit")
    check_batch_size(cfg, len(datamodule.train_set), processes)
    callbacks: list[pl.Callback] = []
    if module.images and cfg.eval.every_n_epochs:
        callbacks.append(build_sample_quality(cfg, len(datamodule.val_set)))
    if not module.images and cfg.model.objective == "adversarial":
        callbacks.append(Toy2dPartitionFunction())
    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is not None:
        check_resume(ckpt_path, cfg, module)
    run_dir = next_run_dir(cfg)
    created = None if RUN_DIR_ENV in os.environ else create_run_dir(run_dir, cfg)
    try:
        trainer = build_trainer(cfg, run_dir, monitor="val/bpd" if module.images else "val/nll",
                                extra_callbacks=callbacks)
    except ConfigError:
        remove_created(created)
        raise
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        with warnings.catch_warnings():  # the run folder is new and holds config.yaml already
            warnings.filterwarnings("ignore", "Experiment logs directory .* exists and is not")
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
