"""Training throughput: data images per second of a maximum-likelihood step and of an
adversarial step (one energy step plus one generator step) with the same generator and batch,
and generator samples per second, for the RealNVP and for the PixelCNN.

Usage: ``python benchmarks/throughput.py [--steps N] [--warmup N] [--config FILE]
[--pixelcnn-config FILE]``. Times the models of ``configs/mnist5k_realnvp_adversarial.yaml``
(the quickstart's RealNVP and a conv energy) and ``configs/mnist5k_pixelcnn_adversarial.yaml``
on the bundled mnist5k data; prints the figures and writes ``benchmarks/results/throughput.json``
(RealNVP figures at the top level, PixelCNN figures under ``pixelcnn``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from results_file import report

from lit_ebm.config import load_config, to_container
from lit_ebm.data import build_datamodule, event_shape
from lit_ebm.generators import build_generator
from lit_ebm.modules import MODULES

REPO = Path(__file__).resolve().parent.parent


class StepTimer(Callback):
    """Wall time of each training batch after ``warmup`` batches."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx >= self.warmup:
            self.seconds.append(time.perf_counter() - self._start)


def images_per_second(config: str, objective: str, steps: int, warmup: int) -> dict[str, float]:
    cfg = load_config([config], [f"model.objective={objective}", "model.generator_init=null"])
    pl.seed_everything(0)
    module = MODULES[objective](to_container(cfg.model), list(event_shape(cfg.data)))
    datamodule = build_datamodule(cfg.data, dequantise=not module.generator.discrete)
    timer = StepTimer(warmup)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=warmup + steps, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1,
                         callbacks=[timer])
    trainer.fit(module, datamodule=datamodule)
    median = statistics.median(timer.seconds)
    return {"batch_size": cfg.data.batch_size, "median_step_seconds": median,
            "images_per_second": cfg.data.batch_size / median, "timed_steps": len(timer.seconds)}


@torch.no_grad()
def samples_per_second(config: str, repeats: int) -> dict[str, float]:
    """Median wall time of ``generator.sample(batch_size)`` (untrained weights; the cost of
    sampling does not depend on them)."""
    cfg = load_config([config])
    torch.manual_seed(0)
    generator = build_generator(cfg.model.generator, event_shape(cfg.data)).eval()
    generator.sample(2)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        generator.sample(cfg.data.batch_size)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"num_samples": cfg.data.batch_size, "median_seconds": median,
            "images_per_second": cfg.data.batch_size / median, "repeats": repeats}


def throughput(config: str, steps: int, warmup: int, sample_repeats: int) -> dict[str, Any]:
    """Every figure of one config's generator."""
    results: dict[str, Any] = {"config": Path(config).name}
    for objective in ("mle", "adversarial"):
        results[objective] = images_per_second(config, objective, steps, warmup)
    results["adversarial_over_mle_time"] = (results["adversarial"]["median_step_seconds"]
                                            / results["mle"]["median_step_seconds"])
    results["sampling"] = samples_per_second(config, sample_repeats)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/mnist5k_realnvp_adversarial.yaml"))
    parser.add_argument("--pixelcnn-config",
                        default=str(REPO / "configs/mnist5k_pixelcnn_adversarial.yaml"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sample-repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        **throughput(args.config, args.steps, args.warmup, args.sample_repeats),
        "pixelcnn": throughput(args.pixelcnn_config, args.steps, args.warmup,
                               args.sample_repeats),
    }
    report("throughput", results)


if __name__ == "__main__":
    main()
