"""Maximum likelihood against adversarial training of the same generator (Finn et al. 2016),
from a plateaued start, with budgets in epochs (the studies of ``python -m lit_ebm.study``
match compute, seeds and a test split instead; docs/studies.md).

1. Train the generator by maximum likelihood (ML) until its validation likelihood plateaus:
   the run stops when two epochs in a row improve val/bpd on its best by less than 0.01 bits/dim
   (``early_stopping``; at most ``--ml-max-epochs``), or pass ``--ml-checkpoint``.
2. From that checkpoint, with the same data and seed, (a) continue ML for M more epochs and
   (b) train the EBM adversarially for M epochs (the generator starts from the ML checkpoint,
   and the residual energy from its density; ``--adversarial-config`` picks the recipe, e.g.
   the hybrid one), so both arms get the same extra training. With ``--energy-epochs K``, (b)
   goes on with K epochs of the energy alone over its finished generator
   (``configs/mnist5k_<generator>_energy.yaml``, ``model.train_generator=false``), and (a)
   runs M + K epochs, so that ML continued is never trained for less than the EBM.
3. Evaluate the three last checkpoints with :mod:`lit_ebm.evaluation` (offline features) for
   several sampling seeds, and report the mean and spread of every figure over the seeds:
   generator samples at temperature 1 and at each ``--temperatures`` T (the baseline that
   trades recall for precision), and for (b) the EBM's samples by sampling-importance-
   resampling, by independence Metropolis-Hastings and, over a flow, by MALA in its latent
   space, with the EBM's bits/dim under an importance-sampling log Z.

Which checkpoint: each arm's last, after the same epochs. No validation figure ranks an
adversarial run's checkpoints without bias (its generator's bits/dim is meant to rise, the
learned log Z is no normaliser, and FID on the validation split is what is measured here), so
neither arm is picked by one.

Usage: ``python benchmarks/compare_mle_adversarial.py --generator realnvp|pixelcnn
[--data mnist5k|fashion_mnist] [--ml-checkpoint CKPT | --ml-max-epochs N] [--extra-epochs M]
[--adversarial-config NAME] [--energy-epochs K] [--seeds 0 1 2] [--temperatures 0.8 0.9]
[--num-samples K] [--candidates C] [key=value ...]``;
the overrides apply to all runs, ``--ml-overrides`` / ``--adversarial-overrides`` to one kind
(the latter to the energy stage too).
Writes ``<results-dir>/compare_<generator>_<data>.json`` and ``.md`` and the sample grid
``compare_<generator>_<data>.png``, with wall times (``--results-dir`` defaults to
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from results_file import RESULTS_DIR, report

from lit_ebm.config import Config, load_config
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
CONFIGS = {  # generator: (ML config, adversarial config, energy-only config)
    "realnvp": ("mnist5k_realnvp_mle.yaml", "mnist5k_realnvp_adversarial.yaml",
                "mnist5k_realnvp_energy.yaml"),
    "pixelcnn": ("mnist5k_pixelcnn_mle.yaml", "mnist5k_pixelcnn_adversarial.yaml",
                 "mnist5k_pixelcnn_energy.yaml"),
}
EBM_ROWS = {"ebm (resampled)": "ebm_resampled", "ebm (IMH)": "ebm_imh", "ebm (MALA)": "ebm_mala"}
FIGURES = (*TABLE_COLUMNS, "log_z_learned", "log_z_q", "log_z_q_stderr", "log_z_q_pareto_k",
           "acceptance_rate", "step_size", "seconds_per_sample")
PLATEAU = ["early_stopping.patience=2", "early_stopping.min_delta=0.01"]
RECALL_TOLERANCE = 0.05


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (results files travel)."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(resolved)


def shipped_config(config: str, overrides: list[str]) -> Config:
    """The shipped config named ``config`` (or the YAML file at that path) with ``overrides``."""
    return load_config([config], overrides)


def timed_train(config: str, overrides: list[str]) -> tuple[Path, float]:
    """Train the config ``config`` with ``overrides``; the last checkpoint and the wall time."""
    cfg = shipped_config(config, overrides)
    start = time.perf_counter()
    run_dir = train(cfg)
    return run_dir / "checkpoints" / "last.ckpt", time.perf_counter() - start


def trained_before(config: str, overrides: list[str]) -> tuple[Path, float] | None:
    """The last checkpoint of the newest run of ``config`` with ``overrides`` that already
    finished (its name and output folder come from the overrides), and its wall time from the
    run's start to that checkpoint; None when there is none."""
    cfg = shipped_config(config, overrides)
    runs = sorted(Path(cfg.output_dir, cfg.name).glob("version_*/checkpoints/last.ckpt"),
                  key=lambda path: int(path.parts[-3].removeprefix("version_")))
    if not runs:
        return None
    provenance = json.loads((runs[-1].parent.parent / "provenance.json").read_text())
    started = datetime.fromisoformat(provenance["started_utc"]).timestamp()
    return runs[-1], runs[-1].stat().st_mtime - started


def epochs_done(checkpoint: Path) -> int:
    """The epochs of training that ``checkpoint``, a run's final ``last.ckpt``, holds: its
    fit loop's count of completed epochs (its ``epoch`` key is the index of the next one)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return int(state["loops"]["fit_loop"]["epoch_progress"]["total"]["completed"])


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


def row_name(row: dict[str, Any], arms: dict[str, str]) -> str:
    """The results' name of an evaluated row: ``real``, its arm (``ml``, ``ml_continued``,
    ``adversarial``; ``<arm>@T0.8`` at a temperature) or its EBM sampler (``ebm_mala``, ...);
    ``arms`` maps checkpoint paths to arms."""
    if row["objective"] == "real":
        return "real"
    if row["objective"] in EBM_ROWS:
        return EBM_ROWS[row["objective"]]
    arm = arms[row["path"]]
    return f"{arm}@T{row['temperature']:g}" if "temperature" in row else arm


def summarise(per_seed: list[dict[str, Any]],
              arms: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per evaluated row (named by :func:`row_name`) the spread over seeds of every figure it
    has (feature-named keys lose their suffix)."""
    features = per_seed[0]["features"]
    summary = {}
    for rows in zip(*(seed["rows"] for seed in per_seed), strict=True):
        entry: dict[str, Any] = {"label": rows[0]["label"]}
        for figure in FIGURES:
            key = figure_key(figure, features)
            if key in rows[0]:
                entry[figure] = spread([float(row[key]) for row in rows])
        if "ebm_bpd_is_reliable" in rows[0]:
            entry["ebm_bpd_is_reliable"] = all(row["ebm_bpd_is_reliable"] for row in rows)
        summary[row_name(rows[0], arms)] = entry
    return summary


def row_title(name: str, results: dict[str, Any]) -> str:
    """The table's words for the row ``name``."""
    n, m, k = results["ml_epochs"], results["extra_epochs"], results["energy_epochs"]
    arm, _, temperature = name.partition("@T")
    ebm = f"EBM fitted over it for {k} more epochs" if k else "EBM of that run"
    titles = {"real": "real (training split)", "ml": f"ML, {n} epochs (plateau)",
              "ml_continued": f"ML, {n} + {m + k} epochs",
              "adversarial": f"ML {n} + adversarial {m}: generator",
              "ebm_resampled": f"{ebm} (SIR, {results['candidates']} candidates)",
              "ebm_imh": f"{ebm} (IMH through the same candidates)",
              "ebm_mala": f"{ebm} (MALA, {results['mcmc_steps']} steps after "
                          f"{results['mcmc_burn_in']})"}
    return f"{titles[arm]}, T={temperature}" if temperature else titles[arm]


def markdown(results: dict[str, Any]) -> str:
    """One table: a row per evaluated set, each figure as mean ± std over the seeds."""
    titles = {figure: column_title(figure, results["features"]) for figure in TABLE_COLUMNS}
    lines = ["| row | " + " | ".join(titles.values()) + " |", "|---|" + "---|" * len(titles)]
    for name, entry in results["rows"].items():
        cells = []
        for key in titles:
            if key not in entry:
                cells.append("")
                continue
            mark = " (k-hat > 0.7)" if (key == "ebm_bpd_is_log_z"
                                        and not entry["ebm_bpd_is_reliable"]) else ""
            cells.append(f"{entry[key]['mean']:.4g} ± {entry[key]['std']:.2g}{mark}")
        lines.append(f"| {row_title(name, results)} | " + " | ".join(cells) + " |")
    seconds = results["wall_seconds"]
    energy = f"energy alone {seconds['energy']:.0f} s, " if "energy" in seconds else ""
    chains = [f"{name} acceptance {entry['acceptance_rate']['mean']:.3f}"
              + (f", step size {entry['step_size']['mean']:.3g}" if "step_size" in entry else "")
              + (f", {entry['seconds_per_sample']['mean']:.3g} s per sample"
                 if "seconds_per_sample" in entry else "")
              for name, entry in results["rows"].items() if "acceptance_rate" in entry]
    return ("\n".join(lines) + f"\n\n{results['data']}, {results['generator']}; mean ± standard "
            f"deviation over sampling seeds {results['seeds']}, {results['num_samples']} images "
            f"per row against the validation split; each arm's last checkpoint. Chains: "
            f"{'; '.join(chains) or 'none'}. Wall times: ML {wall(seconds['ml'])}, ML "
            f"continued {seconds['ml_continued']:.0f} s, adversarial {seconds['adversarial']:.0f}"
            f" s, {energy}evaluation {seconds['evaluation']:.0f} s ({results['machine']}).\n")


def wall(seconds: float | None) -> str:
    return "not measured here (a given checkpoint)" if seconds is None else f"{seconds:.0f} s"


def _fid_below(rows: dict[str, dict[str, Any]], better: str, than: str) -> bool:
    """Whether ``better``'s mean FID is below ``than``'s by more than their seed spreads."""
    a, b = rows[better]["fid"], rows[than]["fid"]
    return b["mean"] - a["mean"] > a["std"] + b["std"]


def _recall_kept(rows: dict[str, dict[str, Any]], name: str, than: str) -> bool:
    return rows[name]["recall"]["mean"] >= rows[than]["recall"]["mean"] - RECALL_TOLERANCE


def targets(rows: dict[str, dict[str, Any]], energy_stage: bool) -> dict[str, Any]:
    """The targets. The adversarial generator: FID below ML continued's by more than the seed
    spreads, recall within 0.05. The EBM's best chain (MALA over a flow, else IMH): FID at most
    0.8 times ML continued's with recall at most 0.05 below; FID below the best temperature row
    of ML continued at equal or better recall; bits/dim under a reliable log Z below its own
    base q0's: the adversarial generator's for the energy stage (``energy_stage``), which is
    fitted over it, else the ML start's; and, beside it, below ML continued's."""
    continued = rows["ml_continued"]
    chain = "ebm_mala" if "ebm_mala" in rows else "ebm_imh"
    found: dict[str, Any] = {
        "generator_fid_gap_ml_continued_minus_adversarial":
            continued["fid"]["mean"] - rows["adversarial"]["fid"]["mean"],
        "generator_fid_below_ml_continued_beyond_spread":
            _fid_below(rows, "adversarial", "ml_continued"),
        "generator_recall_within_0.05": _recall_kept(rows, "adversarial", "ml_continued"),
    }
    if chain not in rows:
        return found
    tempered = [name for name in rows if name.startswith("ml_continued")]
    best = min(tempered, key=lambda name: rows[name]["fid"]["mean"])
    adversarial = rows["adversarial"]
    found.update({
        "ebm_chain": chain,
        "ebm_fid_over_ml_continued": rows[chain]["fid"]["mean"] / continued["fid"]["mean"],
        "ebm_fid<=0.8_ml_continued": rows[chain]["fid"]["mean"] <= 0.8 * continued["fid"]["mean"],
        "ebm_recall_within_0.05": _recall_kept(rows, chain, "ml_continued"),
        "best_temperature_row": best,
        "ebm_fid_below_best_temperature_row":
            rows[chain]["fid"]["mean"] < rows[best]["fid"]["mean"],
        "ebm_recall>=best_temperature_row":
            rows[chain]["recall"]["mean"] >= rows[best]["recall"]["mean"],
        "ebm_bpd_reliable": adversarial.get("ebm_bpd_is_reliable", False),
    })
    if "ebm_bpd_is_log_z" in adversarial:
        ebm_bpd = adversarial["ebm_bpd_is_log_z"]["mean"]
        base = rows["adversarial" if energy_stage else "ml"]["bpd"]["mean"]
        found.update({
            "ebm_own_base": "the adversarial generator" if energy_stage else "the ML start",
            "ebm_bpd_below_own_base_and_reliable": found["ebm_bpd_reliable"] and ebm_bpd < base,
            "ebm_bpd_below_ml_continued_and_reliable":
                found["ebm_bpd_reliable"] and ebm_bpd < continued["bpd"]["mean"]})
    return found


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--data", choices=("mnist5k", "fashion_mnist"), default="mnist5k")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--ml-checkpoint", default=None, metavar="CKPT",
                       help="a converged ML run's last.ckpt (the generator's config) to start "
                            "both arms from (default: train one to its plateau)")
    start.add_argument("--ml-max-epochs", type=int, default=60,
                       help="the ML run stops at its plateau or after this many epochs")
    parser.add_argument("--extra-epochs", type=int, default=None,
                        help="M: epochs of each arm after the split (default: the adversarial "
                             "config's)")
    parser.add_argument("--adversarial-config", default=None, metavar="NAME",
                        help="the adversarial arm's config, a shipped name or a YAML path "
                             "(default: mnist5k_<generator>_adversarial; the recommended "
                             "recipe is mnist5k_<generator>_hybrid)")
    parser.add_argument("--energy-epochs", type=int, default=0, metavar="K",
                        help="then K epochs of the energy alone over the adversarial arm's "
                             "generator (mnist5k_<generator>_energy), whose EBM is evaluated; "
                             "ML continued runs M + K epochs (default 0: no such stage)")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="evaluate each arm's newest finished run under --output-dir "
                             "instead of training it again (wall time: its start to its last "
                             "checkpoint)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--temperatures", type=float, nargs="*", default=[0.8, 0.9])
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
    args = parser.parse_args()
    if args.extra_epochs is not None and args.extra_epochs < 1:
        parser.error(f"--extra-epochs {args.extra_epochs}: give at least 1")
    if args.energy_epochs < 0:
        parser.error(f"--energy-epochs {args.energy_epochs}: give 0 (no energy stage) or more")
    args.adversarial_config = args.adversarial_config or CONFIGS[args.generator][1]
    return args


def train_arms(args: argparse.Namespace, tag: str) -> tuple[int, int, dict[str, Path],
                                                              dict[str, float | None]]:
    """N (the ML start's epochs) and M, and the last checkpoint and wall time of each arm: ``ml``
    (wall time None for a given checkpoint), ``ml_continued``, ``adversarial`` and, with
    ``--energy-epochs``, ``energy``."""
    ml_config, _, energy_config = CONFIGS[args.generator]
    common = [f"data.name={args.data}", f"output_dir={args.output_dir}",
              "trainer.enable_progress_bar=false", *args.overrides]
    adversarial_runs = [*common, *args.adversarial_overrides]
    # loaded before anything trains, so that a bad name or override fails at once
    adversarial = shipped_config(args.adversarial_config,
                                 [*adversarial_runs, "model.generator_init=null"])
    m = args.extra_epochs or adversarial.trainer.max_epochs
    ml_runs = [*common, *args.ml_overrides]
    if args.ml_checkpoint is None:
        ml, ml_seconds = timed_train(ml_config, [*ml_runs, *PLATEAU, f"name={tag}_ml",
                                                 f"trainer.max_epochs={args.ml_max_epochs}"])
    else:
        ml, ml_seconds = Path(args.ml_checkpoint), None
    n = epochs_done(ml)

    def trained(config: str, overrides: list[str]) -> tuple[Path, float]:
        earlier = trained_before(config, overrides) if args.reuse_runs else None
        return earlier or timed_train(config, overrides)

    continued_epochs = n + m + args.energy_epochs
    arms = {"ml": (ml, ml_seconds),
            "ml_continued": trained(ml_config, [*ml_runs, f"name={tag}_ml_continued",
                                                f"ckpt_path={ml}",
                                                f"trainer.max_epochs={continued_epochs}"]),
            "adversarial": trained(args.adversarial_config, [
                *adversarial_runs, f"name={tag}_adversarial", f"model.generator_init={ml}",
                f"trainer.max_epochs={m}"])}
    if args.energy_epochs:
        arms["energy"] = trained(energy_config, [
            *adversarial_runs, f"name={tag}_energy",
            f"model.generator_init={arms['adversarial'][0]}",
            f"trainer.max_epochs={args.energy_epochs}"])
    return (n, m, {arm: path for arm, (path, _) in arms.items()},
            {arm: seconds for arm, (_, seconds) in arms.items()})


def main() -> None:
    args = parse_args()
    tag = f"{args.generator}_{args.data}"
    try:
        n, m, checkpoints, seconds = train_arms(args, tag)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    out = Path(args.output_dir) / f"{tag}_evaluation"
    # the energy stage's checkpoint holds the adversarial arm's generator unchanged
    evaluated = {"ml": checkpoints["ml"], "ml_continued": checkpoints["ml_continued"],
                 "adversarial": checkpoints.get("energy", checkpoints["adversarial"])}
    settings = EvaluationSettings(checkpoints=list(evaluated.values()),
                                  num_samples=args.num_samples, candidates=args.candidates,
                                  kid_subset_size=args.kid_subset_size,
                                  mcmc_steps=args.mcmc_steps, mcmc_burn_in=args.mcmc_burn_in,
                                  temperatures=args.temperatures)
    start = time.perf_counter()
    try:
        per_seed = evaluate_seeds(settings, args.seeds, out)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    seconds["evaluation"] = time.perf_counter() - start
    rows = summarise(per_seed, {str(path): arm for arm, path in evaluated.items()})
    results = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "generator": args.generator, "data": args.data, "ml_epochs": n, "extra_epochs": m,
        "energy_epochs": args.energy_epochs,
        "ml_start": "given" if args.ml_checkpoint else
                    f"plateau ({' '.join(PLATEAU)}, at most {args.ml_max_epochs} epochs)",
        "checkpoint_rule": "each arm's last checkpoint, after the same epochs",
        "adversarial_config": args.adversarial_config,
        "features": per_seed[0]["features"], "num_samples": args.num_samples,
        "candidates": args.candidates, "mcmc_steps": args.mcmc_steps,
        "mcmc_burn_in": args.mcmc_burn_in, "temperatures": args.temperatures,
        "seeds": args.seeds,
        "overrides": {"all": args.overrides, "ml": args.ml_overrides,
                      "adversarial": args.adversarial_overrides},
        "checkpoints": {arm: repo_relative(path) for arm, path in evaluated.items()},
        "trained": {arm: repo_relative(path) for arm, path in checkpoints.items()},
        "wall_seconds": seconds,
        "rows": rows,
        "targets": targets(rows, energy_stage=args.energy_epochs > 0),
    }
    results_dir = Path(args.results_dir)
    report(f"compare_{tag}", results, results_dir)
    (results_dir / f"compare_{tag}.md").write_text(markdown(results))
    shutil.copyfile(out / f"seed{args.seeds[0]}" / "samples.png",
                    results_dir / f"compare_{tag}.png")
    print(markdown(results), end="")


if __name__ == "__main__":
    main()
