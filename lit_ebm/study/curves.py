"""The curves of a study: validation bits/dim and FID against the seconds spent inside training
steps and against the passes per training image, every arm and training seed (the energy stage
(c) drawn after its adversarial generator (b), whose budget it shares)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_ebm.errors import ConfigError
from lit_ebm.study.report import ARM_TITLES, runs_of

COLOURS = {"start": "black", "ml_continued": "tab:blue", "adversarial": "tab:orange",
           "energy_over_adversarial": "tab:red", "energy_over_ml": "tab:green"}
AXES = (("train_seconds", "seconds inside training steps"),
        ("passes_per_image", "passes per training image"))


def _points(run: dict[str, Any], offset: dict[str, float], x: str, y: str) -> tuple[list, list]:
    curve = [point for point in run["trained"]["curve"] if y in point]
    return ([point[x] + offset.get(x, 0.0) for point in curve], [point[y] for point in curve])


def draw_curves(results: dict[str, Any], generator: str, path: Path) -> None:
    """Write ``path`` (PNG): a panel per figure (rows) and per budget axis (columns)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("the study's curves need matplotlib: "
                          'pip install "lit_ebm[study]"') from None
    runs = {arm: runs_of(results, generator, arm) for arm in COLOURS}
    figures = ["val/bpd", *sorted({key for arm_runs in runs.values() for run in arm_runs
                                   for point in run["trained"]["curve"] for key in point
                                   if key.startswith("val/fid_")})]
    fig, axes = plt.subplots(len(figures), len(AXES), figsize=(11, 3.6 * len(figures)),
                             squeeze=False)
    for row, figure in enumerate(figures):
        for column, (x, title) in enumerate(AXES):
            ax = axes[row][column]
            for arm, arm_runs in runs.items():
                for index, run in enumerate(arm_runs):
                    offset = _adversarial_offset(results, generator, arm, run["seed"])
                    xs, ys = _points(run, offset, x, figure)
                    ax.plot(xs, ys, color=COLOURS[arm], alpha=0.8, linewidth=1,
                            label=ARM_TITLES[arm] if index == 0 else None)
            ax.set_xlabel(title)
            ax.set_ylabel(figure)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{results['study']['name']}, {generator}: validation figures in training")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _adversarial_offset(results: dict[str, Any], generator: str, arm: str,
                        seed: int) -> dict[str, float]:
    """Where (c)'s curve starts: after its seed's (b) run."""
    if arm != "energy_over_adversarial":
        return {}
    for run in runs_of(results, generator, "adversarial"):
        if run["seed"] == seed:
            return {x: run["trained"][x] for x, _ in AXES if run["trained"][x] is not None}
    return {}
