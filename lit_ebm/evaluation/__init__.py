"""Evaluating checkpoints as a library (docs/evaluation.md).

Measuring (:mod:`~lit_ebm.evaluation.measure`) takes :class:`EvaluationSettings` and returns
typed :class:`EvaluationResults`; reporting (:mod:`~lit_ebm.evaluation.report`) writes them as
results.json, results.md and samples.png. ``python -m lit_ebm.evaluate`` is a thin command line
over both::

    from lit_ebm.evaluation import EvaluationSettings, evaluate

    results = evaluate(EvaluationSettings(checkpoints=["runs/a/version_0/checkpoints/last.ckpt"],
                                          num_samples=500, out="eval/a"))
    fid = {row.label: row.metrics.fid for row in results.rows}
"""

from lit_ebm.evaluation.ebm import EBMDraws, LogZEstimate, draw_ebm, estimate_log_z
from lit_ebm.evaluation.loading import LoadedCheckpoint, load_checkpoint, run_label
from lit_ebm.evaluation.measure import evaluate
from lit_ebm.evaluation.report import (
    TABLE_COLUMNS,
    column_title,
    markdown_table,
    sample_sheet,
    write_report,
)
from lit_ebm.evaluation.results import (
    SAMPLE_METRICS,
    EvaluationResults,
    Row,
    SampleMetrics,
    figure_key,
)
from lit_ebm.evaluation.settings import KID_SUBSET_SIZE, EvaluationSettings

__all__ = ["KID_SUBSET_SIZE", "SAMPLE_METRICS", "TABLE_COLUMNS", "EBMDraws", "EvaluationResults",
           "EvaluationSettings", "LoadedCheckpoint", "LogZEstimate", "Row", "SampleMetrics",
           "column_title", "estimate_log_z", "evaluate", "figure_key", "load_checkpoint",
           "markdown_table", "run_label", "draw_ebm", "sample_sheet", "write_report"]
