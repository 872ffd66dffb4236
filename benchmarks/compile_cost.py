"""What ``torch.compile`` (``model.compile=true``) costs and buys for a maximum-likelihood step of
each generator on the current path (``--precision``, channels-last): the first step's seconds
(compilation included) and the median of the steps after it, eager against compiled, in one
process. It is what decides whether compilation is a default: it pays only once the steps saved
exceed its start-up.

Usage: ``python benchmarks/compile_cost.py [--steps N] [--precision P]``; prints the figures
and writes ``benchmarks/results/compile_cost.json``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from typing import Any

import pytorch_lightning as pl
import torch
from results_file import report
from throughput import CONFIGS, REPO, StepTimer, _setup

from lit_ebm.compilation import compile_networks
from lit_ebm.precision import bf16_supported


def ml_steps(config: str, steps: int, precision: str, compiled: bool) -> dict[str, Any]:
    """Seconds of the first ML step and median seconds of the ``steps`` after it."""
    cfg, module, datamodule = _setup(config, "mle")
    if compiled and not compile_networks(module.networks(), "cpu"):
        raise SystemExit("compile_cost: torch.compile cannot run here (see the line above)")
    timer = StepTimer(warmup=0)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=steps + 1, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1,
                         precision=precision, callbacks=[timer])
    trainer.fit(module, datamodule=datamodule)
    first, rest = timer.seconds[0], timer.seconds[1:]
    return {"first_step_seconds": first, "median_step_seconds": statistics.median(rest),
            "timed_steps": len(rest)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"],
                        default="bf16-mixed" if bf16_supported("cpu") else "32-true")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "precision": args.precision}
    for name, config in CONFIGS.items():
        eager = ml_steps(str(REPO / config), args.steps, args.precision, compiled=False)
        compiled = ml_steps(str(REPO / config), args.steps, args.precision, compiled=True)
        saved = eager["median_step_seconds"] - compiled["median_step_seconds"]
        start_up = compiled["first_step_seconds"] - eager["first_step_seconds"]
        results[name] = {
            "eager": eager, "compiled": compiled,
            "step_speedup": eager["median_step_seconds"] / compiled["median_step_seconds"],
            "compile_seconds": start_up,
            "steps_to_pay_back": start_up / saved if saved > 0 else None}
    report("compile_cost", results)


if __name__ == "__main__":
    main()
