"""Maximum likelihood against adversarial training of the same generator (Finn et al. 2016).

1. Train the generator by maximum likelihood (ML) for N epochs.
2. From that checkpoint, with the same data and seed, (a) continue ML for M more epochs and
   (b) train the EBM adversarially for M epochs (the generator starts from the ML checkpoint,
   and the residual energy from its density), so both arms get the same extra training.
3. Evaluate the three checkpoints with :mod:`lit_ebm.evaluation` (offline features;
   generator samples, and for (b) the resampled EBM samples and the EBM bits/dim) for several
   sampling seeds, and report the mean and spread of every figure over the seeds.

Usage: ``python benchmarks/compare_mle_adversarial.py --generator realnvp|pixelcnn
[--data mnist5k|fashion_mnist] [--ml-epochs N] [--extra-epochs M] [--seeds 0 1 2]
[--num-samples K] [--candidates C] [key=value ...]``; the overrides apply to all three runs,
``--ml-overrides`` / ``--adversarial-overrides`` to one kind. Writes
``<results-dir>/compare_<generator>_<data>.json`` and ``.md`` and the sample grid
``compare_<generator>_<data>.png``, with wall times (``--results-dir`` defaults to
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from results_file import RESULTS_DIR, report

from lit_ebm.config import load_config
from lit_ebm.errors import ConfigError
from lit_ebm.evaluation import (
    TABLE_COLUMNS,
    EvaluationSettings,
    column_title,
    evaluate,
    figure_key,
)
from lit_ebm.fit import train

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {  # generator: (ML config, adversarial config)
    "realnvp": ("mnist5k_realnvp_mle.yaml", "mnist5k_realnvp_adversarial.yaml"),
    "pixelcnn": ("mnist5k_pixelcnn_mle.yaml", "mnist5k_pixelcnn_adversarial.yaml"),
}
ARMS = ("ml", "ml_continued", "adversarial")
EBM_ROWS = {"ebm (resampled)": "ebm_resampled", "ebm (IMH)": "ebm_imh", "ebm (MALA)": "ebm_mala"}
FIGURES = (*TABLE_COLUMNS, "log_z_learned", "log_z_q", "log_z_q_stderr")


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (results files travel)."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(resolved)


def timed_train(config: str, overrides: list[str]) -> tuple[Path, float]:
    """Train ``configs/<config>`` with ``overrides``; the last checkpoint and the wall time."""
    cfg = load_config([str(REPO / "configs" / config)], overrides)
    start = time.perf_counter()
    run_dir = train(cfg)
    return run_dir / "checkpoints" / "last.ckpt", time.perf_counter() - start


def evaluate_seeds(settings: EvaluationSettings, seeds: list[int],
                   out: Path) -> list[dict[str, Any]]:
    """The evaluation of ``settings`` once per seed, each written to ``out/seed<seed>``; the
    results.json content of each."""
    return [evaluate(replace(settings, seed=seed, out=out / f"seed{seed}")).to_dict()
            for seed in seeds]


def spread(values: list[float]) -> dict[str, float]:
    """Mean, standard deviation, minimum and maximum of one figure over the seeds."""
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarise(per_seed: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per evaluated row, named by ``names`` (real, the three arms, the resampled EBM), the
    spread over seeds of every figure it has (feature-named keys lose their suffix)."""
    features = per_seed[0]["features"]
    summary = {}
    for name, rows in zip(names, zip(*(seed["rows"] for seed in per_seed), strict=True),
                          strict=True):
        entry: dict[str, Any] = {"label": rows[0]["label"]}
        for figure in FIGURES:
            key = figure_key(figure, features)
            if key in rows[0]:
                entry[figure] = spread([float(row[key]) for row in rows])
        summary[name] = entry
    return summary


def markdown(results: dict[str, Any]) -> str:
    """One table: a row per evaluated set, each figure as mean ± std over the seeds."""
    titles = {figure: column_title(figure, results["features"]) for figure in TABLE_COLUMNS}
    n, m = results["ml_epochs"], results["extra_epochs"]
    arms = {"real": "real (training split)", "ml": f"ML, {n} epochs",
            "ml_continued": f"ML, {n} + {m} epochs", "adversarial": f"ML {n} + adversarial {m}",
            "ebm_resampled": f"EBM of that run (SIR, {results['candidates']} candidates)",
            "ebm_imh": "EBM of that run (IMH through the same candidates)",
            "ebm_mala": f"EBM of that run (MALA, {results['mcmc_steps']} steps after "
                        f"{results['mcmc_burn_in']})"}
    lines = ["| row | " + " | ".join(titles.values()) + " |", "|---|" + "---|" * len(titles)]
    for name, entry in results["rows"].items():
        cells = []
        for key in titles:
            if key not in entry:
                cells.append("")
                continue
            cells.append(f"{entry[key]['mean']:.4g} ± {entry[key]['std']:.2g}")
        lines.append(f"| {arms[name]} | " + " | ".join(cells) + " |")
    seconds = results["wall_seconds"]
    return ("\n".join(lines) + f"\n\n{results['data']}, {results['generator']}; mean ± standard "
            f"deviation over sampling seeds {results['seeds']}, {results['num_samples']} images "
            f"per row against the validation split. Wall times: ML {seconds['ml']:.0f} s, ML "
            f"continued {seconds['ml_continued']:.0f} s, adversarial {seconds['adversarial']:.0f}"
            f" s, evaluation {seconds['evaluation']:.0f} s ({results['machine']}).\n")


def targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The targets: the adversarial generator's FID below the ML-continued one's by more
    than the two seed spreads together, and its precision higher."""
    continued, adversarial = rows["ml_continued"], rows["adversarial"]
    gap = continued["fid"]["mean"] - adversarial["fid"]["mean"]
    return {
        "fid_gap_ml_continued_minus_adversarial": gap,
        "fid_gap>spread": gap > continued["fid"]["std"] + adversarial["fid"]["std"],
        "adversarial_precision>ml_continued_precision":
            adversarial["precision"]["mean"] > continued["precision"]["mean"],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--data", choices=("mnist5k", "fashion_mnist"), default="mnist5k")
    parser.add_argument("--ml-epochs", type=int, default=None,
                        help="N: ML epochs before the split (default: the ML config's)")
    parser.add_argument("--extra-epochs", type=int, default=None,
                        help="M: epochs of each arm after the split (default: the adversarial "
                             "config's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--kid-subset-size", type=int, default=None)
    parser.add_argument("--mcmc-steps", type=int, default=100,
                        help="MALA steps per chain of the EBM row (RealNVP; 0: no MALA row)")
    parser.add_argument("--mcmc-burn-in", type=int, default=100)
    parser.add_argument("--output-dir", default=str(REPO / "runs" / "compare"))
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--ml-overrides", nargs="*", default=[], metavar="key=value")
    parser.add_argument("--adversarial-overrides", nargs="*", default=[], metavar="key=value")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_args()


def train_arms(args: argparse.Namespace, tag: str) -> tuple[int, int, dict[str, Path],
                                                              dict[str, float]]:
    """N and M, and the last checkpoint and wall time of each arm."""
    ml_config, adversarial_config = CONFIGS[args.generator]
    common = [f"data.name={args.data}", f"output_dir={args.output_dir}",
              "trainer.enable_progress_bar=false", *args.overrides]
    n = args.ml_epochs or load_config([str(REPO / "configs" / ml_config)]).trainer.max_epochs
    m = args.extra_epochs or load_config(
        [str(REPO / "configs" / adversarial_config)],
        ["model.generator_init=null"]).trainer.max_epochs
    ml_runs = [*common, *args.ml_overrides]
    ml, ml_seconds = timed_train(ml_config, [*ml_runs, f"name={tag}_ml",
                                             f"trainer.max_epochs={n}"])
    continued, continued_seconds = timed_train(
        ml_config, [*ml_runs, f"name={tag}_ml_continued", f"ckpt_path={ml}",
                    f"trainer.max_epochs={n + m}"])
    adversarial, adversarial_seconds = timed_train(
        adversarial_config, [*common, *args.adversarial_overrides, f"name={tag}_adversarial",
                             f"model.generator_init={ml}", f"trainer.max_epochs={m}"])
    return n, m, dict(zip(ARMS, (ml, continued, adversarial), strict=True)), dict(zip(
        ARMS, (ml_seconds, continued_seconds, adversarial_seconds), strict=True))


def main() -> None:
    args = parse_args()
    tag = f"{args.generator}_{args.data}"
    n, m, checkpoints, seconds = train_arms(args, tag)
    out = Path(args.output_dir) / f"{tag}_evaluation"
    settings = EvaluationSettings(checkpoints=list(checkpoints.values()),
                                  num_samples=args.num_samples, candidates=args.candidates,
                                  kid_subset_size=args.kid_subset_size,
                                  mcmc_steps=args.mcmc_steps, mcmc_burn_in=args.mcmc_burn_in)
    start = time.perf_counter()
    try:
        per_seed = evaluate_seeds(settings, args.seeds, out)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    seconds["evaluation"] = time.perf_counter() - start
    ebm_rows = [EBM_ROWS[row["objective"]] for row in per_seed[0]["rows"]
                if row["objective"] in EBM_ROWS]
    rows = summarise(per_seed, ["real", *ARMS, *ebm_rows])
    results = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "generator": args.generator, "data": args.data, "ml_epochs": n, "extra_epochs": m,
        "features": per_seed[0]["features"], "num_samples": args.num_samples,
        "candidates": args.candidates, "mcmc_steps": args.mcmc_steps,
        "mcmc_burn_in": args.mcmc_burn_in, "seeds": args.seeds,
        "overrides": {"all": args.overrides, "ml": args.ml_overrides,
                      "adversarial": args.adversarial_overrides},
        "checkpoints": {arm: repo_relative(path) for arm, path in checkpoints.items()},
        "wall_seconds": seconds,
        "rows": rows,
        "targets": targets(rows),
    }
    results_dir = Path(args.results_dir)
    report(f"compare_{tag}", results, results_dir)
    (results_dir / f"compare_{tag}.md").write_text(markdown(results))
    shutil.copyfile(out / f"seed{args.seeds[0]}" / "samples.png",
                    results_dir / f"compare_{tag}.png")
    print(markdown(results), end="")


if __name__ == "__main__":
    main()
