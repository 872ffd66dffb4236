"""Train a model: ``python -m lit_ebm.fit --config FILE [--config FILE ...] [key=value ...]``.

Every run writes ``<output_dir>/<name>/version_<n>/`` with ``config.yaml``, ``provenance.json``
(the code and versions that ran), what its loggers write (``metrics.csv``, TensorBoard events,
... :mod:`lit_ebm.loggers`), ``checkpoints/last.ckpt`` plus, for maximum likelihood, the best
by validation likelihood, and ``samples/`` with figures. A resumed run (``ckpt_path=last`` or a
path) writes a new version folder and leaves the old one untouched.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import pytorch_lightning as pl
import torch

from lit_ebm.build import build_module, build_sample_quality, check_resume
from lit_ebm.callbacks import Toy2dPartitionFunction
from lit_ebm.compilation import compile_networks
from lit_ebm.config import Config, load_config, to_yaml, unused_overrides
from lit_ebm.console import run_console
from lit_ebm.data import build_datamodule, event_shape
from lit_ebm.errors import EXIT_TRAINING_FAILED, EXIT_USAGE, ConfigError, NonFiniteLossError
from lit_ebm.launch import (
    RUN_DIR_ENV,
    Launch,
    OneRunFolder,
    check_process_count,
    current_launch,
    marker_path,
    publish_run_dir,
    receive_run_dir,
)
from lit_ebm.modules.base import GenerativeModule
from lit_ebm.objective_names import ADVERSARIAL
from lit_ebm.provenance import SOURCE_ROOT, git_state, provenance, write_provenance
from lit_ebm.runs import create_run_dir, next_run_dir, remove_created, resolve_ckpt_path
from lit_ebm.trainer import accelerator_type, build_trainer, check_trainer_settings


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


def parameter_checksum(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short SHA-256 of a state dict's names and raw values: equal on every rank of a DDP
    run, and equal to that of the ``state_dict`` saved in its last checkpoint."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(name.encode())
        values = state_dict[name].detach().cpu().reshape(-1).view(torch.uint8)
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:16]


def train(cfg: Config) -> Path:
    """Run training as configured; returns the run folder.

    Everything that can be wrong with the settings, the data or the checkpoints is checked
    before the run folder is created, so a failed start leaves nothing behind. Global rank 0
    alone creates the run folder; the other ranks of the launch are handed it
    (:mod:`lit_ebm.launch`).
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    processes = check_trainer_settings(cfg.trainer)
    per_node = processes // cfg.trainer.num_nodes
    launch = current_launch(per_node, cfg.trainer.num_nodes)
    check_process_count(launch, cfg.trainer.devices, per_node, cfg.trainer.num_nodes)
    module = build_module(cfg, event_shape(cfg.data))
    if cfg.model.compile:
        compile_networks(module.networks(), accelerator_type(cfg.trainer.accelerator))
    datamodule = build_datamodule(cfg.data, dequantise=not module.generator.discrete)
    datamodule.prepare_data()
    datamodule.setup("fit")
    check_batch_size(cfg, len(datamodule.train_set), processes)
    callbacks: list[pl.Callback] = []
    if module.images and cfg.eval.every_n_epochs:
        callbacks.append(build_sample_quality(cfg, len(datamodule.val_set)))
    if not module.images and cfg.model.objective == ADVERSARIAL:
        callbacks.append(Toy2dPartitionFunction())
    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is not None:
        check_resume(ckpt_path, cfg, module)
    with run_console(module):
        trainer, run_dir = start_run(cfg, launch, module, callbacks, processes, ckpt_path)
        os.environ[RUN_DIR_ENV] = str(run_dir)  # for the processes Lightning's launcher starts
        if launch.rank == 0:
            print(f"run folder: {run_dir}", flush=True)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        finally:
            os.environ.pop(RUN_DIR_ENV, None)
    # one write of the whole line, so that the lines of ranks sharing a stdout never interleave
    sys.stdout.write(f"rank {trainer.global_rank} finished; run folder: {run_dir}; parameter "
                     f"checksum: {parameter_checksum(module.state_dict())}\n")
    sys.stdout.flush()
    return run_dir


def start_run(cfg: Config, launch: Launch, module: GenerativeModule,
              callbacks: list[pl.Callback], processes: int,
              resumed_from: Path | None) -> tuple[pl.Trainer, Path]:
    """The Trainer and the run folder of this process. Rank 0 creates the folder (removing it
    again if Lightning rejects the settings), writes ``provenance.json`` into it and then
    names it to the other ranks, which wait for it and create nothing."""
    marker = marker_path(launch, cfg.output_dir, cfg.name)
    run_dir = next_run_dir(cfg) if launch.rank == 0 else receive_run_dir(launch, marker)
    created = create_run_dir(run_dir, cfg) if launch.rank == 0 else None
    try:
        trainer = build_trainer(cfg, run_dir, monitor=module.checkpoint_monitor,
                                extra_callbacks=[*callbacks, OneRunFolder(run_dir, marker)],
                                processes=processes)
        if launch.rank == 0:
            write_provenance(run_dir, provenance(sys.argv, datetime.now(timezone.utc),
                                                 git_state(SOURCE_ROOT), resumed_from))
            publish_run_dir(launch, run_dir, marker)
    except ConfigError:
        remove_created(created)
        raise
    return trainer, run_dir


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
                        help="YAML config file, or a shipped config's name (e.g. quickstart); "
                             "repeat to merge several, later files win")
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
        for note in unused_overrides(cfg, args.overrides):
            print(f"warning: {note}", file=sys.stderr)
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
