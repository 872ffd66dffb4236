"""What an evaluation returns: typed rows and results, and their results.json form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from torch import Tensor

SAMPLE_METRICS = ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage")
RowKind = Literal["real", "generator", "ebm_resampled", "ebm_chain"]


def figure_key(figure: str, features: str) -> str:
    """The results.json key of ``figure``: sample metrics are named by their features."""
    return f"{figure}_{features}" if figure in SAMPLE_METRICS else figure


@dataclass(frozen=True)
class SampleMetrics:
    """A set of images against the validation split, on fixed features: FID, KID (mean and
    standard deviation over subsets), precision, recall, density and coverage."""

    fid: float
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    density: float
    coverage: float


@dataclass(kw_only=True)
class Row:
    """One line of the results: a set of images and everything measured on it. Figures that do
    not apply to the row (the EBM's for a generator trained by maximum likelihood) are None."""

    label: str
    kind: RowKind
    path: str | None = None  # the checkpoint
    objective: str  # "real", "mle", "adversarial", "ebm (resampled)", "ebm (IMH)", "ebm (MALA)"
    generator: str | None = None  # its model.generator.name
    data: str
    bpd: float | None = None  # the generator's bits/dim on the validation split
    temperature: float | None = None  # a generator row at a temperature other than 1
    # the module's log Z: with log_z_tracking = 1 the last batch's L_D-optimal value (a
    # one-batch importance-sampling estimate), otherwise a learned offset
    log_z_learned: float | None = None
    log_z_tracking: float | None = None
    ebm_bpd_learned_log_z: float | None = None  # -E - log Z with the learned log Z
    candidates: int | None = None  # generator samples per resampled EBM sample
    # of log_z_q: "q", "base" (q0), "mixture" of both, or "annealed, K temperatures, ..."
    log_z_proposal: str | None = None
    log_z_q: float | None = None  # importance-sampling estimate of log Z
    log_z_q_stderr: float | None = None  # delta method; the interval is log_z_q +- 1.96 stderr
    log_z_q_ess: float | None = None  # its effective sample size
    log_z_q_pareto_k: float | None = None  # PSIS k-hat of its weights
    log_z_q_samples: int | None = None
    ebm_bpd_is_log_z: float | None = None  # -E - log Z with log_z_q
    ebm_bpd_is_reliable: bool | None = None  # log_z_q_pareto_k <= 0.7
    chain_steps: int | None = None  # an EBM chain row's transitions per sample (after burn-in)
    chain_burn_in: int | None = None  # MALA: adaptation steps before them
    acceptance_rate: float | None = None  # of the chain's proposals after burn-in
    step_size: float | None = None  # MALA: the adapted step size
    seconds_per_sample: float | None = None  # a chain row's wall-clock seconds per sample
    seconds_sampling: float | None = None
    features: str | None = None  # the feature extractor of ``metrics``
    num_samples: int | None = None
    metrics: SampleMetrics | None = None
    images: Tensor = field(repr=False, compare=False)  # uint8 (N, C, H, W)

    def to_dict(self) -> dict[str, Any]:
        """The row as in results.json: the figures that apply, sample metrics named by their
        features (``fid_mnist_cnn``)."""
        row = {item.name: getattr(self, item.name) for item in fields(self)
               if item.name not in ("metrics", "images") and getattr(self, item.name) is not None}
        if self.metrics is not None and self.features is not None:
            row.update({figure_key(name, self.features): value
                        for name, value in asdict(self.metrics).items()})
        return row


@dataclass(kw_only=True)
class EvaluationResults:
    """Every row (the real-versus-real row first) and how they were measured."""

    command: str
    data: str
    features: str  # the feature extractor of every row's sample metrics
    features_classifier: dict[str, Any] | None  # its accuracy report, for classifier features
    num_samples: int
    num_real: int  # images in the reference split, the reference of every sample metric
    reference: str = "validation split"  # or "test split" (lit_ebm.evaluate --split test)
    kid_subset_size: int
    nearest_neighbours: int  # k of precision, recall, density and coverage
    candidates: int
    seed: int
    device: str
    rows: list[Row]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The content of results.json."""
        results = {item.name: getattr(self, item.name) for item in fields(self)}
        return {**results, "rows": [row.to_dict() for row in self.rows]}
