"""Ablation of adversarial training on mnist5k: from one maximum-likelihood (ML) checkpoint,
each row trains for the same epochs with one change, beside ML continued for those epochs.

Rows (``--rows`` picks some; all by default, those of a continuous generator only for a
RealNVP):

- ``start``: the ML checkpoint itself;
- ``ml_continued``: the ML config resumed from the checkpoint for M more epochs;
- ``reverse_kl``: today's adversarial training (the adversarial config, generator from the
  checkpoint); every row below adds one setting to it:
- ``sticking_the_landing`` (continuous generators), ``zero_init`` (f starts at 0),
  ``log_z_tracking`` (m = 1), ``r1`` (gamma = 10), ``quantised_input`` (f sees only the 8-bit
  image), ``hybrid`` (L_G + NLL), ``forward_kl``; and ``combined``: every change except the
  objectives;
- ``nll_only``: the control for ``hybrid``, its NLL term alone: maximum likelihood from the
  checkpoint's generator with the adversarial rows' generator optimiser (learning rate, betas,
  clipping, no schedule) and budget, so that what ``hybrid`` gains over it is the energy's.

Each checkpoint is evaluated with :mod:`lit_ebm.evaluation` over sampling seeds (generator
bits/dim, FID, precision, recall), and from its training log: the last epoch's mean
discriminator accuracies, KL(q || q_init) estimate, out-of-range fraction, share of
clipped generator steps and effective sample size of the weights exp(-E - log q) over a
generated batch (those of the ``forward_kl`` objective).

Usage: ``python benchmarks/ablate_adversarial.py --generator realnvp --ml-checkpoint CKPT
[--epochs M] [--rows ROW ...] [--seeds 0 1 2] [key=value ...]``; overrides apply to every
adversarial row. Writes ``benchmarks/results/ablate_<generator>_mnist5k.{json,md}``; rows
already there, measured the same way, are kept, and ``--rows`` reruns its rows in place.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from compare_mle_adversarial import (
    CONFIGS,
    REPO,
    epochs_done,
    evaluate_seeds,
    repo_relative,
    spread,
    timed_train,
)
from results_file import RESULTS_DIR, report

from lit_ebm.evaluation import EvaluationSettings, figure_key
from lit_ebm.modules import load_module

CHANGES = {  # row: the overrides it adds to today's adversarial training
    "reverse_kl": [],
    "sticking_the_landing": ["model.sticking_the_landing=true"],
    "zero_init": ["model.energy.conv.zero_init=true"],
    "log_z_tracking": ["model.log_z_tracking=1"],
    "r1": ["model.r1_gamma=10"],
    "quantised_input": ["model.energy.conv.quantised_input=true"],
    "hybrid": ["model.generator_objective=hybrid"],
    "forward_kl": ["model.generator_objective=forward_kl"],
    "nll_only": ["model.objective=mle"],  # the adversarial config's generator optimiser
}
CONTINUOUS_ONLY = ("sticking_the_landing",)
COMBINED = ("zero_init", "log_z_tracking", "r1", "quantised_input", "sticking_the_landing")
ROWS = ("start", "ml_continued", *CHANGES, "combined")
SAMPLE_FIGURES = ("bpd", "fid", "precision", "recall")
LOGGED = ("train/d_acc_real", "train/d_acc_fake", "train/kl_q_q_init", "train/out_of_range",
          "train/clipped_generator", "train/ess_q")


def row_overrides(row: str, continuous: bool) -> list[str]:
    """The settings a row adds to today's adversarial training."""
    if row != "combined":
        return CHANGES[row]
    return [o for name in COMBINED if continuous or name not in CONTINUOUS_ONLY
            for o in CHANGES[name]]


def last_epoch_means(run_dir: Path) -> dict[str, float]:
    """The mean over the last epoch's logged steps of each of ``LOGGED`` that the run logged."""
    with open(run_dir / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    last = max(int(row["epoch"]) for row in rows if row.get("epoch"))
    means = {}
    for key in LOGGED:
        values = [float(row[key]) for row in rows
                  if row.get(key) and row.get("epoch") and int(row["epoch"]) == last]
        if values:
            means[key.removeprefix("train/")] = statistics.fmean(values)
    return means


def generator_figures(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The spread over seeds of the figures of one checkpoint's generator row."""
    features = per_seed[0]["features"]
    rows = [next(r for r in seed["rows"] if r["kind"] == "generator") for seed in per_seed]
    return {figure: spread([float(r[figure_key(figure, features)]) for r in rows])
            for figure in SAMPLE_FIGURES if figure_key(figure, features) in rows[0]}


def markdown(results: dict[str, Any]) -> str:
    """One table: a row per ablation row, mean ± std over the seeds, then the logged means."""
    head = ["row", "gen. bits/dim", "FID", "precision", "recall", "d_acc_real", "d_acc_fake",
            "KL(q||q_init)", "out of range", "generator steps clipped",
            "ESS of exp(-E - log q) per batch", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, row in results["rows"].items():
        cells = [name] + [f"{row[f]['mean']:.4g} ± {row[f]['std']:.2g}" if f in row else ""
                          for f in SAMPLE_FIGURES]
        logged = (key.removeprefix("train/") for key in LOGGED)
        cells += [f"{row['logged'][k]:.3g}" if k in row["logged"] else "" for k in logged]
        cells.append(f"{row['train_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return ("\n".join(lines) + f"\n\n{results['generator']} on mnist5k from "
            f"`{results['ml_checkpoint']}`, {results['epochs']} epoch(s) per row; FID "
            f"({results['features']}), precision and recall on {results['num_samples']} samples,"
            f" mean ± std over sampling seeds {results['seeds']}; the logged figures are means "
            f"over each run's last epoch ({results['machine']}).\n")


def earlier_rows(path: Path, results: dict[str, Any]) -> dict[str, Any]:
    """The rows already in the results file at ``path`` when it was measured the same way (ML
    checkpoint, epochs, samples, seeds, overrides), so that ``--rows`` reruns some rows in
    place; otherwise none."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    same = ("ml_checkpoint", "epochs", "num_samples", "seeds", "overrides")
    return earlier["rows"] if all(earlier.get(k) == results[k] for k in same) else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--ml-checkpoint", required=True, help="the ML run's last.ckpt")
    parser.add_argument("--epochs", type=int, default=1, help="M, epochs per row")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--output-dir", default=str(REPO / "runs" / "ablate"))
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    ml_config, adversarial_config, _ = CONFIGS[args.generator]
    ml = Path(args.ml_checkpoint)
    continuous = not load_module(ml, map_location="cpu").generator.discrete
    ml_epochs = epochs_done(ml)
    rows = [r for r in (args.rows or ROWS) if continuous or r not in CONTINUOUS_ONLY]
    common = [f"output_dir={args.output_dir}", "trainer.enable_progress_bar=false",
              "logger=[csv]", "eval.every_n_epochs=0"]  # evaluated below, over seeds
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "generator": args.generator, "ml_checkpoint": repo_relative(ml), "epochs": args.epochs,
        "features": None, "num_samples": args.num_samples, "seeds": args.seeds,
        "overrides": args.overrides, "rows": {},
    }
    name = f"ablate_{args.generator}_mnist5k"
    results["rows"] = earlier_rows(Path(args.results_dir) / f"{name}.json", results)
    for row in rows:  # each row is trained, evaluated and written before the next starts
        added = [] if row in ("start", "ml_continued") else row_overrides(row, continuous)
        if row == "start":  # the ML checkpoint itself, evaluated like the rows
            checkpoint, train_seconds = ml, 0.0
        elif row == "ml_continued":
            checkpoint, train_seconds = timed_train(ml_config, [
                *common, f"name={args.generator}_ml_continued", f"ckpt_path={ml}",
                f"trainer.max_epochs={ml_epochs + args.epochs}"])
        else:
            checkpoint, train_seconds = timed_train(adversarial_config, [
                *common, *args.overrides, *added, f"name={args.generator}_{row}",
                f"model.generator_init={ml}", f"trainer.max_epochs={args.epochs}"])
        settings = EvaluationSettings(checkpoints=[checkpoint], num_samples=args.num_samples,
                                      candidates=1, mcmc_steps=0)
        start = time.perf_counter()
        per_seed = evaluate_seeds(settings, args.seeds,
                                  Path(args.output_dir) / f"{args.generator}_{row}_evaluation")
        results["features"] = per_seed[0]["features"]
        results["rows"][row] = {
            **generator_figures(per_seed), "overrides": added,
            "logged": {} if row == "start" else last_epoch_means(checkpoint.parent.parent),
            "train_seconds": train_seconds, "evaluation_seconds": time.perf_counter() - start,
            "checkpoint": repo_relative(checkpoint)}
        report(name, results, Path(args.results_dir))
        (Path(args.results_dir) / f"{name}.md").write_text(markdown(results))
    print(markdown(results), end="")


if __name__ == "__main__":
    main()
