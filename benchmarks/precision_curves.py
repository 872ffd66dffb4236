"""Training curves under bf16-mixed against 32-true: maximum-likelihood runs of both mnist5k
generators from the same training seeds, their validation bits/dim (always computed in float32)
after each epoch, and whether the two precisions' means differ by less than the sum of their
across-seed standard deviations (the seed spread).

Usage: ``python benchmarks/precision_curves.py [--epochs N] [--seeds S ...] [--generators G ...]``;
writes ``benchmarks/results/precision_curves.json``. Each run trains alone in this process.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from results_file import report

from lit_ebm.fit import main as fit

CONFIGS = {"realnvp": "mnist5k_realnvp_mle", "pixelcnn": "mnist5k_pixelcnn_mle"}
PRECISIONS = ("32-true", "bf16-mixed")


def val_bpd(run_dir: Path) -> list[float]:
    """``val/bpd`` after each epoch, from the run's metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as file:
        return [float(row["val/bpd"]) for row in csv.DictReader(file) if row.get("val/bpd")]


def curve(generator: str, precision: str, seed: int, epochs: int, out: Path) -> dict[str, Any]:
    """One run's validation curve and wall time."""
    name = f"{generator}_{precision}_{seed}"
    start = time.perf_counter()
    code = fit(["--config", CONFIGS[generator], f"trainer.precision={precision}", f"seed={seed}",
                f"trainer.max_epochs={epochs}", "eval.every_n_epochs=0", "logger=[csv]",
                "trainer.enable_progress_bar=false", f"output_dir={out}", f"name={name}"])
    if code != 0:
        raise SystemExit(f"precision_curves: the run {name} failed (exit {code})")
    return {"val_bpd": val_bpd(out / name / "version_0"),
            "seconds": time.perf_counter() - start}


def summary(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Mean and across-seed standard deviation of val/bpd after each epoch."""
    by_epoch = list(zip(*(run["val_bpd"] for run in runs), strict=True))
    return {"mean": [statistics.mean(values) for values in by_epoch],
            "std": [statistics.stdev(values) if len(values) > 1 else 0.0
                    for values in by_epoch]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--generators", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "epochs": args.epochs, "seeds": args.seeds}
    with tempfile.TemporaryDirectory() as tmp:
        for generator in args.generators:
            runs = {precision: [curve(generator, precision, seed, args.epochs, Path(tmp))
                                for seed in args.seeds] for precision in PRECISIONS}
            stats = {precision: summary(runs[precision]) for precision in PRECISIONS}
            full, mixed = stats["32-true"], stats["bf16-mixed"]
            gaps = [abs(a - b) for a, b in zip(full["mean"], mixed["mean"], strict=True)]
            spreads = [a + b for a, b in zip(full["std"], mixed["std"], strict=True)]
            results[generator] = {
                "runs": runs, "summary": stats, "mean_gap_per_epoch": gaps,
                "seed_spread_per_epoch": spreads,
                "within_seed_spread": all(g <= s for g, s in zip(gaps, spreads, strict=True)),
                "seconds_per_run": {precision: statistics.mean(run["seconds"] for run in
                                                               runs[precision])
                                    for precision in PRECISIONS}}
    report("precision_curves", results)


if __name__ == "__main__":
    main()
