"""Reporting results: ``results.json``, ``results.md`` (one table) and ``samples.png`` (labelled
grids side by side)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from lit_ebm.errors import ConfigError
from lit_ebm.evaluation.results import EvaluationResults, Row, figure_key
from lit_ebm.evaluation.settings import flag

REPORT_FILES = ("results.json", "results.md", "samples.png")
GRID_IMAGES = 36  # images of each row on the sample sheet
TABLE_COLUMNS = {  # figure: column title; sample metrics carry the features' name as a suffix
    "bpd": "gen. bpd",
    "ebm_bpd_learned_log_z": "EBM bpd (learned log Z, one batch's estimate if tracked)",
    "ebm_bpd_is_log_z": "EBM bpd (IS log Z)", "fid": "FID", "kid_mean": "KID",
    "precision": "precision", "recall": "recall", "density": "density", "coverage": "coverage"}
UNRELIABLE = "*"  # marks bits/dim under an IS log Z whose Pareto k-hat exceeds 0.7
EBM_FOOTNOTES = (
    "Learned log Z: with model.log_z_tracking = 1, the last training batch's L_D-optimal "
    "value (log Z moves to it before every energy step), an importance-sampling estimate over "
    "one batch with no error bar; otherwise a learned offset that Adam moves slowly, and "
    "bits/dim under it are not a likelihood. Trust the IS column where k-hat is at most 0.7.",
    "IS log Z: importance-sampling estimate ± its standard error (interval: ± 1.96 standard "
    "errors), with its proposal (q: the generator; base: the residual energy's frozen q0; "
    "mixture: q/2 + q0/2; annealed, K temperatures: annealed importance sampling from the "
    "flow's density to the EBM, one chain per draw, with its MALA step size and acceptance), "
    "effective sample size and Pareto k-hat (Vehtari et al. 2024). "
    f"{UNRELIABLE} k-hat > 0.7: the importance weights are too heavy-tailed for the estimate "
    "or its error bar to be trusted, whatever the effective sample size says.")


def column_title(figure: str, features: str) -> str:
    """The table title of ``figure``; FID's names the features."""
    title = TABLE_COLUMNS[figure]
    return f"{title} ({features})" if figure == "fid" else title


def _cell(row: dict[str, Any], key: str) -> str:
    if key not in row:
        return ""
    if key.startswith("kid_mean"):
        return f"{row[key]:.4g} ± {row[key.replace('mean', 'std')]:.2g}"
    if key == "ebm_bpd_is_log_z":
        mark = "" if row["ebm_bpd_is_reliable"] else UNRELIABLE
        return (f"{row[key]:.4f}{mark} (log Z {row['log_z_q']:.2f} ± "
                f"{row['log_z_q_stderr']:.2f}, {row['log_z_proposal']}, ESS "
                f"{row['log_z_q_ess']:.0f}/{row['log_z_q_samples']}, k-hat "
                f"{row['log_z_q_pareto_k']:.2f})")
    return f"{row[key]:.4f}"


def markdown_table(results: EvaluationResults) -> str:
    """``results.md``: one table, the real-versus-real row first."""
    f = results.features
    columns = [(figure_key(figure, f), column_title(figure, f)) for figure in TABLE_COLUMNS]
    lines = [f"Features: {f}; {results.num_samples} images per row against the "
             f"{results.reference} ({results.num_real} images); KID subsets of "
             f"{results.kid_subset_size}; "
             f"seed {results.seed}.", "",
             "| row | " + " | ".join(title for _, title in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for row in results.rows:
        figures = row.to_dict()
        lines.append(f"| {row.label} | " + " | ".join(_cell(figures, key) for key, _ in columns)
                     + " |")
    if any(row.ebm_bpd_learned_log_z is not None for row in results.rows):
        lines += [line for note in EBM_FOOTNOTES for line in ("", note)]
    return "\n".join(lines) + "\n"


def sample_sheet(rows: list[Row]) -> Image.Image:
    """The first images of every row as grids side by side, each under its label."""
    panels = []
    for row in rows:
        grid = make_grid(row.images[:GRID_IMAGES].float() / 255, nrow=6, padding=2,
                         pad_value=1.0)
        grid = grid.mul(255).round().byte().permute(1, 2, 0).numpy()
        image = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2),
                                             Image.Resampling.NEAREST)
        panels.append((row.label, image))
    font = ImageFont.load_default()
    width = max(image.width for _, image in panels)
    header = 4 * 14
    sheet = Image.new("RGB", (len(panels) * (width + 16) + 16, header + 16 + max(
        image.height for _, image in panels)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, image) in enumerate(panels):
        left = 16 + index * (width + 16)
        lines = textwrap.wrap(label, width=max(10, width // 7))[:4]
        draw.multiline_text((left, 6), "\n".join(lines), fill="black", font=font, spacing=2)
        sheet.paste(image, (left, header + 8))
    return sheet


def prepare_out(out: Path) -> None:
    """Create ``out``, or raise :class:`ConfigError` when it cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{flag('out')} '{out}' cannot be written ({err.strerror or err}): "
                          "pass a writable folder") from None


def write_report(results: EvaluationResults, out: str | Path) -> list[Path]:
    """Write results.json, results.md and samples.png to the folder ``out``; their paths."""
    out = Path(out)
    prepare_out(out)
    paths = [out / name for name in REPORT_FILES]
    paths[0].write_text(json.dumps(results.to_dict(), indent=2) + "\n")
    paths[1].write_text(markdown_table(results))
    sample_sheet(results.rows).save(paths[2])
    return paths
