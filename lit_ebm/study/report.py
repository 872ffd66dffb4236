"""What a study's results.json says, rendered: per generator, every arm and sampler with its
spread across training seeds (``table.md``), the verdicts the study file asks for, the curves
of validation figures against training seconds (PNG), and the README's block of headline rows.

Each training seed's figure is the mean over its sampling seeds; the table shows the mean and
the sample standard deviation of those across training seeds, the unit of replication. One
thing "beats" another when the gap exceeds the two standard deviations summed."""

from __future__ import annotations

import math
import statistics
from typing import Any

from lit_ebm.study.spec import ARMS, HeadlineSampler

ARM_TITLES = {"start": "ML start (q_init of (d))", "ml_continued": "(a) ML continued",
              "adversarial": "(b) adversarial generator",
              "energy_over_adversarial": "(c) EBM over (b)",
              "energy_over_ml": "(d) EBM over the ML start"}
LOG_Z_WARNING = ("EBM bits/dim use a log Z estimate, which is biased low, so they are "
                 "optimistic; 'reliable' means k-hat <= 0.7 and the estimate agrees with one "
                 "of four times the work within its interval, on every training seed.")


def spread(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value) and the count."""
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def runs_of(results: dict[str, Any], generator: str, arm: str) -> list[dict[str, Any]]:
    """The recorded runs of one arm of one generator, in seed order."""
    runs = [run for run in results["runs"].values()
            if run["generator"] == generator and run["arm"] == arm]
    return sorted(runs, key=lambda run: run["seed"])


def _row_key(row: dict[str, Any]) -> str:
    return row["label"]


def sampler_figures(runs: list[dict[str, Any]], figure: str) -> dict[str, dict[str, float]]:
    """Per sampler row label, the spread across training seeds of ``figure``, each training
    seed's value the mean over its sampling seeds."""
    per_label: dict[str, list[float]] = {}
    for run in runs:
        evaluations = list(run["evaluation"].values())
        for rows in zip(*(evaluation["rows"] for evaluation in evaluations), strict=True):
            per_label.setdefault(_row_key(rows[0]), []).append(
                statistics.fmean(float(row[figure]) for row in rows))
    return {label: spread(values) for label, values in per_label.items()}


def run_figure(runs: list[dict[str, Any]], figure: str) -> dict[str, float] | None:
    """The spread across training seeds of a per-run figure (bits/dim, budget)."""
    values = []
    for run in runs:
        source = run["trained"] if figure in run["trained"] else next(
            iter(run["evaluation"].values()))
        if source.get(figure) is None:
            return None
        values.append(float(source[figure]))
    return spread(values) if values else None


def cell(figure: dict[str, float] | None, digits: int = 4) -> str:
    if figure is None:
        return ""
    return f"{figure['mean']:.{digits}g} ± {figure['std']:.2g}"


def budget_of(results: dict[str, Any], generator: str, arm: str) -> dict[str, dict | None]:
    """An arm's training seconds and passes per image; (c) counts (b)'s as well. None where a
    run has no figure (passes: a run that stopped before its measured steps)."""
    arms = ("adversarial", arm) if arm == "energy_over_adversarial" else (arm,)
    totals: dict[str, dict | None] = {}
    for figure in ("train_seconds", "passes_per_image"):
        per_seed = [[run["trained"][figure] for part in arms
                     for run in runs_of(results, generator, part) if run["seed"] == seed]
                    for seed in sorted({run["seed"] for run in runs_of(results, generator, arm)})]
        known = per_seed and all(value is not None for values in per_seed for value in values)
        totals[figure] = spread([sum(values) for values in per_seed]) if known else None
    return totals


def arm_lines(results: dict[str, Any], generator: str, arm: str) -> list[str]:
    """The table's lines of one arm: one per sampler row."""
    runs = runs_of(results, generator, arm)
    if not runs:
        return []
    fid, recall = sampler_figures(runs, "fid"), sampler_figures(runs, "recall")
    seconds = sampler_figures(runs, "seconds_per_sample")
    ebm = arm.startswith("energy")
    bits = run_figure(runs, "ebm_bpd" if ebm else "bpd")
    mark = reliability(runs) if ebm else ""
    budget = budget_of(results, generator, arm)
    return [f"| {ARM_TITLES[arm]} | {label} | {cell(fid[label])} | {cell(recall[label], 3)} | "
            f"{cell(bits)}{mark} | {cell(seconds[label], 3)} | "
            f"{cell(budget['train_seconds'])} | {cell(budget['passes_per_image'])} | "
            f"{fid[label]['n']:g} |" for label in fid]


def reliability(runs: list[dict[str, Any]]) -> str:
    """" (k/n reliable)": on how many training seeds the EBM's log Z counts as reliable."""
    reliable = sum(bool(next(iter(run["evaluation"].values())).get("log_z_reliable"))
                   for run in runs)
    return f" ({reliable}/{len(runs)} reliable)"


UNREPLICATED = "no verdict on one training seed"


def beats(a: dict[str, float], b: dict[str, float]) -> str:
    """"lower" when a's mean is below b's by more than their summed standard deviations,
    "higher" in the other direction, else "no difference beyond the spread"; no verdict where
    either holds fewer than two training seeds (``n``), since one has no spread to compare."""
    if min(a.get("n", 2), b.get("n", 2)) < 2:
        return UNREPLICATED
    gap, band = b["mean"] - a["mean"], a["std"] + b["std"]
    return "lower" if gap > band else "higher" if -gap > band else "no difference beyond the spread"


def headline_label(headline: HeadlineSampler) -> str:
    """The row label of the study's headline EBM sampler."""
    name = {"sir": "SIR M", "imh": "IMH M", "mala": "MALA K"}[headline.method]
    return f"{name}={headline.steps}"


def _compare(results: dict[str, Any], generator: str, one: tuple[str, str],
             other: tuple[str, str], figure: str = "fid") -> str | None:
    """"A (mean ± sd) against B: lower/higher/no difference" for two (arm, row) pairs."""
    values = []
    for arm, label in (one, other):
        runs = runs_of(results, generator, arm)
        by_row = sampler_figures(runs, figure) if runs else {}
        if label not in by_row:
            return None
        values.append(by_row[label])
    a, b = values
    return (f"{ARM_TITLES[one[0]]} ({one[1]}) {cell(a)} against {ARM_TITLES[other[0]]} "
            f"({other[1]}) {cell(b)}: {beats(a, b)}, ratio {a['mean'] / b['mean']:.3g}")


def verdicts(results: dict[str, Any], generator: str) -> list[str]:
    """The study's questions, answered where both arms are recorded: test FID of the
    adversarial generator and of the EBMs against ML continued, the EBM over the adversarial
    generator against the EBM over the ML start, and each EBM's bits/dim against ML
    continued's and against its own base q0 (the generator it was fitted over)."""
    head = headline_label(HeadlineSampler(**results["study"]["evaluation"]["headline"]))
    plain = "generator T=1"
    pairs = [(("adversarial", plain), ("ml_continued", plain)),
             (("energy_over_adversarial", head), ("ml_continued", plain)),
             (("energy_over_ml", head), ("ml_continued", plain)),
             (("energy_over_adversarial", head), ("energy_over_ml", head))]
    lines = [line for one, other in pairs
             if (line := _compare(results, generator, one, other)) is not None]
    bits = [("energy_over_adversarial", "ml_continued"), ("energy_over_adversarial",
                                                          "adversarial"),
            ("energy_over_ml", "ml_continued"), ("energy_over_ml", "start")]
    for ebm_arm, other in bits:  # beside ML continued, and beside the EBM's own base q0
        ebm = run_figure(runs_of(results, generator, ebm_arm), "ebm_bpd")
        against = run_figure(runs_of(results, generator, other), "bpd")
        if against is not None and other == "start":  # one model, shared by every seed
            against = {**against, "n": math.inf}
        if ebm is not None and against is not None:
            lines.append(f"bits/dim: {ARM_TITLES[ebm_arm]} {cell(ebm)} against "
                         f"{ARM_TITLES[other]} {cell(against)}: {beats(ebm, against)}")
    return lines


def ablation_lines(results: dict[str, Any], generator: str) -> list[str]:
    """The ablation table of one generator: (b), then each row with its change and its test
    FID against (b)'s, across training seeds; none where the study has no ablation."""
    rows = results["study"]["generators"][generator]["ablations"]
    base = runs_of(results, generator, "adversarial")
    if not rows or not base:
        return []
    plain = "generator T=1"
    base_fid = sampler_figures(base, "fid")[plain]
    split = results["study"]["evaluation"]["split"]
    lines = [f"### {generator}: ablation of (b), each row for (b)'s budget and seeds\n",
             f"| row | what it changes | {split} FID (T=1) | recall | bits/dim | training "
             "seconds | passes per image | training seeds | FID against (b) |\n"
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in {"adversarial": None, **rows}.items():
        runs = runs_of(results, generator, name)
        if not runs:
            continue
        fid, recall = sampler_figures(runs, "fid")[plain], sampler_figures(runs, "recall")[plain]
        change = ("(b) itself" if row is None else " ".join(
            ([f"config {row['config']}"] if row["config"] else []) + row["overrides"]))
        budget = budget_of(results, generator, name)
        lines.append(f"| {name} | {change or 'nothing'} | {cell(fid)} | {cell(recall, 3)} | "
                     f"{cell(run_figure(runs, 'bpd'))} | {cell(budget['train_seconds'])} | "
                     f"{cell(budget['passes_per_image'])} | {fid['n']:g} | "
                     f"{'' if row is None else beats(fid, base_fid)} |")
    return [*lines, ""]


HEADER = ("| arm | sampler | {split} FID | recall | bits/dim | seconds per sample | training "
          "seconds | passes per image | training seeds |\n|---|---|---|---|---|---|---|---|---|")


def render_table(results: dict[str, Any]) -> str:
    """table.md: per generator, every arm's rows, then the verdicts and what the figures are."""
    study, split = results["study"], results["study"]["evaluation"]["split"]
    parts = [f"# Study {study['name']}: {study['data']}, measured on the {split} split\n"]
    for generator in study["generators"]:
        lines = [line for arm in ("start", *ARMS) for line in arm_lines(results, generator, arm)]
        if not lines:
            continue
        parts += [f"## {generator}\n", HEADER.format(split=split), *lines, "",
                  *(f"- {line}" for line in verdicts(results, generator)), "",
                  *ablation_lines(results, generator)]
    parts += [f"Mean ± standard deviation across training seeds (each the mean over sampling "
              f"seeds {study['evaluation']['sampling_seeds']}); a row is lower or higher than "
              "another only when the gap exceeds the two standard deviations summed. "
              f"{budget_sentence(study, results.get('machine', 'this machine'))} "
              + LOG_Z_WARNING, ""]
    return "\n".join(parts)


def budget_sentence(study: dict[str, Any], machine: str) -> str:
    """What each arm and ablation row was given, in seconds inside training steps."""
    seconds = f"Budgets: {study['budget_seconds']:g} s inside training steps"
    ablated = any(runs["ablations"] for runs in study["generators"].values())
    if "energy_over_adversarial" not in study["arms"]:
        return f"{seconds} for each arm{' and ablation row' if ablated else ''}, on {machine}."
    return (f"{seconds} for (a), for (b) and (c) together, and for (d), on {machine}; (c)'s "
            "seconds and passes include (b)'s." + (" Each ablation row has (b)'s part of its "
                                                   "budget." if ablated else ""))


def readme_block(results: dict[str, Any]) -> str:
    """The README's table of one study: per generator, ML continued, the adversarial generator
    and both EBMs at the headline sampler, with FID and bits/dim across training seeds, each
    against ML continued's (table.md has every sampler and verdict)."""
    head = headline_label(HeadlineSampler(**results["study"]["evaluation"]["headline"]))
    split, plain = results["study"]["evaluation"]["split"], "generator T=1"
    lines = [f"| generator | arm | {split} FID | FID against (a) | bits/dim | bits/dim against (a) "
             "| seconds per sample | training seeds |", "|---|---|---|---|---|---|---|---|"]
    for generator in results["study"]["generators"]:
        continued = runs_of(results, generator, "ml_continued")
        base_fid = sampler_figures(continued, "fid").get(plain) if continued else None
        base_bits = run_figure(continued, "bpd") if continued else None
        for arm, label in (("ml_continued", plain), ("adversarial", plain),
                           ("energy_over_adversarial", head), ("energy_over_ml", head)):
            runs = runs_of(results, generator, arm)
            fid = sampler_figures(runs, "fid").get(label) if runs else None
            if fid is None:
                continue
            ebm = arm.startswith("energy")
            bits = run_figure(runs, "ebm_bpd" if ebm else "bpd")
            against = [beats(mine, base) if arm != "ml_continued" and mine is not None
                       and base is not None else ""
                       for mine, base in ((fid, base_fid), (bits, base_bits))]
            seconds = sampler_figures(runs, "seconds_per_sample")[label]
            lines.append(f"| {generator} | {ARM_TITLES[arm]}, {label} | {cell(fid)} | "
                         f"{against[0]} | {cell(bits)}{reliability(runs) if ebm else ''} | "
                         f"{against[1]} | {cell(seconds, 3)} | {fid['n']:g} |")
    if len(lines) == 2:
        return "No arm of this study has been measured yet.\n"
    return "\n".join(lines) + "\n"
