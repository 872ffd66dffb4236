"""Toy 2-D benchmark of Finn et al. (2016): is log Z right, and is the adversarial generator
mode-seeking?

1. The adversarial EBM (MLP energy vs 2-D RealNVP, ``configs/toy2d_adversarial.yaml``) on ring8,
   its generator started from a maximum-likelihood fit (``configs/toy2d_mle.yaml``): the learned
   log Z and the L_D-optimal offset of 20,000 data and as many generated points (an estimate of
   log Z where the EBM fits the data, as it should here) against the exact log Z of the final
   energy by quadrature (checked at twice the grid resolution). Target: both errors at most
   0.05 nats.
   The estimate with the generator alone as proposal (log_z_q, as logged in training as
   train/log_z_q and used by :mod:`lit_ebm.evaluation`) is reported with its standard error.
   The errors over the last validation epochs are reported too, as training oscillates.
2. A limited-capacity generator (a 4-component uniform-weight Gaussian mixture; the data have 8
   modes), from a random start, trained by maximum likelihood and adversarially, both with
   Adam at lr 1e-3 and a constant schedule (the adversarial config's slower annealed rates
   suit a generator that starts from an ML fit): precision (fraction of samples within 2
   standard deviations of a data mode) and modes covered. Target: adversarial precision above
   ML precision (the paper's mode-seeking claim).

Usage: ``python benchmarks/toy2d.py [--output-dir DIR] [--epochs N]``. Prints the figures and
writes them to ``benchmarks/results/toy2d.json``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from results_file import report

from lit_ebm import objectives
from lit_ebm.config import load_config
from lit_ebm.fit import train
from lit_ebm.metrics import log_partition_proposal
from lit_ebm.modules import AdversarialEBM, GenerativeModule, load_module
from lit_ebm.toy2d import log_partition_grid, mode_precision_and_coverage, ring8_modes, sample_toy2d

REPO = Path(__file__).resolve().parent.parent
NUM_EVAL = 20000
PRECISION_NUM_STD = 2.0
LAST_EPOCHS = 5
MIXTURE = ["model.generator.name=mixture2d", "model.generator.mixture2d.num_components=4",
           "model.generator_optim.lr=1e-3"]
MIXTURE_ADVERSARIAL = ["model.energy_optim.lr=1e-3", "model.lr_schedule=constant"]


def fit(config: str, overrides: list[str]) -> tuple[Path, GenerativeModule, float]:
    """Train as configured; return the run folder, the final model and the wall time (s)."""
    cfg = load_config([str(REPO / "configs" / config)], overrides)
    start = time.perf_counter()
    run_dir = train(cfg)
    seconds = time.perf_counter() - start
    module = load_module(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    return run_dir, module.eval(), seconds


def logged_errors(run_dir: Path, last: int = LAST_EPOCHS) -> dict[str, float]:
    """Mean and max of |val/log_z - val/log_z_true| and |val/log_z_ld_optimal - val/log_z_true|
    over the last ``last`` validation epochs of a run (the offset pools one validation pass)."""
    with open(run_dir / "metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/log_z_true")][-last:]
    result = {}
    for key in ("val/log_z", "val/log_z_ld_optimal"):
        errors = [abs(float(row[key]) - float(row["val/log_z_true"])) for row in rows]
        name = key.removeprefix("val/")
        result[f"last{len(rows)}_epochs_mean_abs_err_{name}"] = sum(errors) / len(errors)
        result[f"last{len(rows)}_epochs_max_abs_err_{name}"] = max(errors)
    return result


@torch.no_grad()
def log_z_errors(module: AdversarialEBM) -> dict[str, float]:
    """Learned log Z and a large-sample L_D-optimal offset against quadrature of the final
    energy."""
    log_z_true = log_partition_grid(module.energy, bound=8.0, resolution=1000)
    log_z_finer = log_partition_grid(module.energy, bound=8.0, resolution=2000)
    data = sample_toy2d("ring8", NUM_EVAL, torch.Generator().manual_seed(123))
    fake, log_q_fake = module.generator.sample(NUM_EVAL)
    union = torch.cat([data, fake])
    log_q = torch.cat([module.generator.log_prob(data), log_q_fake])
    log_z = float(module.log_z)
    offset = float(objectives.ld_optimal_log_z(module.energy(union).double(), log_q.double()))
    proposal = log_partition_proposal(module.energy(fake), log_q_fake)
    return {
        "log_z": log_z,
        "log_z_ld_optimal": offset,
        "log_z_q": float(proposal["log_z"]),
        "log_z_q_stderr": float(proposal["stderr"]),
        "log_z_q_samples": NUM_EVAL,
        "log_z_true": log_z_true,
        "log_z_true_at_twice_the_resolution": log_z_finer,
        "abs_err_log_z": abs(log_z - log_z_true),
        "abs_err_log_z_ld_optimal": abs(offset - log_z_true),
        "abs_err_log_z_q": abs(float(proposal["log_z"]) - log_z_true),
    }


@torch.no_grad()
def mode_stats(module: GenerativeModule) -> dict[str, float]:
    centres, std = ring8_modes()
    samples, _ = module.generator.sample(NUM_EVAL)
    precision, covered = mode_precision_and_coverage(samples, centres, std,
                                                     num_std=PRECISION_NUM_STD)
    return {"precision": precision, "modes_covered": covered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=str(REPO / "runs" / "benchmarks"))
    parser.add_argument("--epochs", type=int, default=None, help="override trainer.max_epochs")
    args = parser.parse_args()
    common = [f"output_dir={args.output_dir}", "trainer.enable_progress_bar=false"]
    if args.epochs is not None:
        common.append(f"trainer.max_epochs={args.epochs}")
    torch.set_num_threads(2)

    results: dict[str, dict[str, float]] = {}
    ml_dir, _, ml_seconds = fit("toy2d_mle.yaml", [*common, "name=bench_flow_mle"])
    init = f"model.generator_init={ml_dir / 'checkpoints' / 'last.ckpt'}"
    adv_dir, adversarial, seconds = fit("toy2d_adversarial.yaml",
                                        [*common, init, "name=bench_flow_adv"])
    results["adversarial_realnvp2d"] = {**log_z_errors(adversarial), **logged_errors(adv_dir),
                                        "ml_init_train_seconds": ml_seconds,
                                        "train_seconds": seconds}
    for label, config, extra in (("mle", "toy2d_mle.yaml", []),
                                 ("adversarial", "toy2d_adversarial.yaml", MIXTURE_ADVERSARIAL)):
        _, module, seconds = fit(config, [*common, *MIXTURE, *extra, f"name=bench_mixture_{label}"])
        results[f"mixture4_{label}"] = {**mode_stats(module), "train_seconds": seconds}

    flow = results["adversarial_realnvp2d"]
    results["targets"] = {
        "abs_err_log_z<=0.05": flow["abs_err_log_z"] <= 0.05,
        "abs_err_log_z_ld_optimal<=0.05": flow["abs_err_log_z_ld_optimal"] <= 0.05,
        "adversarial_precision>mle_precision":
            results["mixture4_adversarial"]["precision"] > results["mixture4_mle"]["precision"],
    }
    report("toy2d", results)


if __name__ == "__main__":
    main()
